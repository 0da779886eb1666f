"""The tiers CI leaves out: `slow` (the full profile's heavy stages, end to end through the CLI; `make test-all`) and
`gpu` (the training loops on CUDA with bf16; run where torch sees a GPU). CI runs `-m "not gpu and not slow"`."""
import json

import numpy as np
import pytest
import torch

from conftest import synthnb

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


@pytest.mark.slow
@pytest.mark.notebooks
def test_full_profile_generation_runs(runs_dir, data_dir):
    """The healthcare full profile through stage 2 (every generator it names, at its full budget): it runs, each generator
    made its images, the GAN trained every step and the VAE's loss fell."""
    from synthnb.core.config import load_experiment
    from synthnb.generators.gan import GANSettings
    exp = load_experiment('experiments/healthcare.yaml', ['profile=full'])
    gen = exp.stage_params('generation')
    proc = synthnb('run', 'experiments/healthcare.yaml', '-p', 'profile=full', '-p', 'exp_id=full-gen', '--until', 'generation',
                   '--runs-dir', runs_dir, env={'SYNTHNB_DATA': str(data_dir)}, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((runs_dir / 'full-gen' / '02_generation' / 'metrics.json').read_text())
    syn = np.load(runs_dir / 'full-gen' / '02_generation' / 'synthetic.npz')
    assert set(syn['generator']) == set(gen['generators']) and set(m) == set(gen['generators'])
    assert all(m[g]['n'] == 2 * gen['n_synthetic_per_class'] for g in gen['generators'])
    assert len(m['gan']['loss']['d']) == GANSettings(**gen['gan']).train_steps
    vae = m['vae']['loss']['loss']
    assert np.mean(vae[-100:]) < 0.98 * np.mean(vae[:100]), 'the VAE loss fell'


@pytest.mark.gpu
@needs_gpu
def test_classifier_trains_on_gpu_in_bf16():
    from synthnb.core.models import autocast_dtype, fit_classifier, predict_proba
    assert autocast_dtype('cuda', 'auto') == torch.bfloat16
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 256)
    x = rng.normal(90 + 80 * y[:, None, None], 20, (256, 28, 28)).clip(0, 255).astype(np.uint8)
    m = fit_classifier(x, y, 2, 60, 64, width=16, device='cuda')
    assert (predict_proba(m, x, device='cuda').argmax(1) == y).mean() > 0.95


@pytest.mark.gpu
@needs_gpu
def test_diffusion_trains_on_gpu():
    from diffusers import UNet2DModel
    from synthnb.generators.ddpm import ddim_sample, train_ddpm, unet_config
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (64, 28, 28)).astype(np.uint8), np.arange(64) % 2
    unet, losses = train_ddpm(UNet2DModel.from_config(unet_config(28, 2, [16, 32, 32])), x, y, steps=20, batch_size=16, lr=1e-3, label_dropout=0.1,
                             ema_decay=0.999, device='cuda')
    assert len(losses) == 20 and np.isfinite(losses).all()
    out = ddim_sample(unet, np.arange(4) % 2, torch.Generator().manual_seed(0), 4, 1.5)
    assert out.shape == (4, 1, 28, 28) and torch.isfinite(out).all()
