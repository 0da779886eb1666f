"""Stage-2 generators at tiny sizes: the generator contract, exact save/load round trips, and clear errors for bad requests."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from synthnb.core.store import StageRun
from synthnb.generators.ddpm import unet_config
from synthnb.generators.diffusion import DiffusionGenerator, DiffusionSettings
from synthnb.generators.gan import GANGenerator, GANSettings
from synthnb.testing import tiny_pipeline
from synthnb.generators.registry import GENERATORS, load_generator, save_generator
from synthnb.stages.generation import GenerationConfig, check_samples, sample_counts

NAMES = ['simulation', 'diffusion', 'gan', 'hybrid', 'vae', 'dp_vae', 'external', 'pretrained']
PROFILE = {'classes': ['normal', 'pneumonia'], 'roles': {'normal_class': 'normal', 'simulator': 'chest_opacity'}}  # what stage 1 declares for the healthcare card
TINY = dict(diffusion={'train_steps': 3, 'channels': [8, 16, 16], 'ddim_steps': 2, 'batch_size': 8}, gan={'train_steps': 3, 'width': 8, 'batch_size': 8}, device='cpu',
            vae={'train_steps': 8, 'batch_size': 8, 'latent': 4, 'width': 8})


def toy_data(n=16, size=28, seed=0):
    "Dark noisy images for class 0, a bright square added for class 1."
    rng = np.random.default_rng(seed)
    images = rng.integers(60, 100, (n, size, size)).astype(np.uint8)
    images[n // 2:, size // 4:size // 2, size // 4:size // 2] = 220
    return images, np.repeat([0, 1], n // 2).astype(np.int64)


@pytest.fixture(scope='module')
def fitted(tmp_path_factory):
    torch.manual_seed(0)
    images, labels = toy_data()
    external = tmp_path_factory.mktemp('external') / 'set.npz'  # an external synthetic set: other toy images, named classes
    ext_images, ext_labels = toy_data(seed=1)
    np.savez(external, images=ext_images, labels=ext_labels, classes=np.array(PROFILE['classes']))
    pipeline = tiny_pipeline(tmp_path_factory.mktemp('pretrained') / 'tiny-ddpm')  # a randomly initialised diffusers pipeline on disk
    cfg = GenerationConfig(**TINY, external={'path': str(external)}, pretrained={'path': str(pipeline), 'steps': 3, 'finetune_steps': 2})
    out = {}
    for name in NAMES:  # hybrid last: it reuses the fitted diffusion model, as run_generation does
        out[name] = GENERATORS[name].make(PROFILE, cfg, out).fit(images, labels, np.zeros_like(images), PROFILE)
    return out


@pytest.mark.parametrize('name', NAMES)
def test_samples_follow_the_request(fitted, name):
    labels = np.array([0, 1, 1, 0, 1], dtype=np.int64)
    out = check_samples(fitted[name].sample(labels, torch.Generator().manual_seed(0)), labels, (28, 28), name)
    assert out['images'].dtype == np.uint8 and out['images'].shape == (5, 28, 28)
    assert out['masks'].dtype == np.uint8 and set(np.unique(out['masks'])) <= {0, 1}
    assert out['images'].std() > 0  # not a constant image
    np.testing.assert_array_equal(out['labels'], labels)
    empty = fitted[name].sample(np.zeros(0, np.int64), torch.Generator().manual_seed(0))
    assert empty['images'].shape == (0, 28, 28)


@pytest.mark.parametrize('name', NAMES)
def test_save_load_round_trip_gives_identical_samples(fitted, name, tmp_path):
    run = StageRun('domain', GenerationConfig(**TINY), None, tmp_path / '01_domain')
    loaded = load_generator(save_generator(run, fitted[name]))
    assert type(loaded) is type(fitted[name])
    labels = np.array([0, 1, 1])
    a = fitted[name].sample(labels, torch.Generator().manual_seed(3))
    b = loaded.sample(labels, torch.Generator().manual_seed(3))
    for k in ('images', 'masks', 'labels'): np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize('name', NAMES)
def test_unknown_class_is_an_error(fitted, name):
    with pytest.raises(ValueError, match=r'knows classes 0\.\.1; requested \[2\]'):
        fitted[name].sample(np.array([0, 2]), torch.Generator())
    with pytest.raises(ValueError, match='1-D integer label array'):
        fitted[name].sample(np.array([0.5]), torch.Generator())


def test_bad_counts_and_class_names():
    with pytest.raises(ValueError, match='n_synthetic_per_class = -1: expected an integer ≥ 0'): GenerationConfig(n_synthetic_per_class=-1)
    with pytest.raises(ValueError, match=r"class_counts = \{'pneumonia': -5\}: expected a mapping of strings to integers ≥ 0"): GenerationConfig(class_counts={'pneumonia': -5})
    with pytest.raises(ValueError, match="unknown class 'pneumonai'"):
        sample_counts(GenerationConfig(class_counts={'pneumonai': 3}), PROFILE['classes'])
    with pytest.raises(ValueError, match="did you mean 'diffusion'"): GenerationConfig(generators=['difusion'])
    with pytest.raises(ValueError, match=r'hybrid.strength = 1.5: expected a number > 0 and ≤ 1'): GenerationConfig(hybrid={'strength': 1.5})


def test_wrong_image_size_is_an_error():
    images, labels = toy_data(size=30)
    with pytest.raises(ValueError, match='image size 30 does not fit'):
        DiffusionGenerator(DiffusionSettings(train_steps=1, channels=[8, 16, 16]), device='cpu').fit(images, labels, None, PROFILE)
    with pytest.raises(ValueError, match='must be a power-of-two multiple'):
        GANGenerator(GANSettings(train_steps=1, width=8), device='cpu').fit(images, labels, None, PROFILE)
    ok = {'images': np.zeros((2, 28, 28), np.uint8), 'masks': np.zeros((2, 28, 28), np.uint8), 'labels': np.array([0, 1])}
    with pytest.raises(ValueError, match=r'returned shape \(2, 28, 28\); expected \(2, 64, 64\)'):
        check_samples(ok, np.array([0, 1]), (64, 64), 'gan')


def test_64px_models_fold_pixels_and_sample_the_right_size():
    assert unet_config(64, 2, (8, 16, 16))['in_channels'] == 4  # 64×64 → 4 channels of 32×32
    images, labels = toy_data(8, size=64)
    for gen in (DiffusionGenerator(DiffusionSettings(train_steps=2, batch_size=4, ddim_steps=2, channels=[8, 16, 16]), device='cpu'),
                GANGenerator(GANSettings(train_steps=2, batch_size=4, width=8), device='cpu')):
        out = gen.fit(images, labels, None, PROFILE).sample(np.array([1, 0]), torch.Generator().manual_seed(0))
        assert out['images'].shape == (2, 64, 64) and out['images'].dtype == np.uint8


def test_accelerate_multi_process_training(tmp_path):
    """The diffusion training loop in accelerate's multi-process mode: 2 CPU processes (gloo) started by torchrun, which is what
    `accelerate launch --multi_gpu` runs on GPUs; the model trained across both processes is saved once and loads."""
    images, labels = toy_data(16)
    domain = tmp_path / '01_domain'
    with StageRun('domain', {'seed': 0, 'device': 'cpu'}, None, domain) as run:  # a stage-1 folder, read back through its manifest
        run.save_arrays('train', images=images, labels=labels)
        run.write_json('profile', PROFILE)
    out = tmp_path / 'model'
    proc = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
                           '-m', 'synthnb.generators.diffusion', str(domain), str(out), '--train_steps', '3', '--batch_size', '4', '--channels', '8,16', '--device', 'cpu'],
                          capture_output=True, text=True, timeout=600, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'trained on 2 process(es)' in proc.stdout and proc.stdout.count('saved ') == 1, proc.stdout[-2000:]
    gen = DiffusionGenerator.from_state(load_file(str(out / 'model.safetensors')), json.loads((out / 'config.json').read_text()))
    s = gen.sample(np.array([0, 1]), torch.Generator().manual_seed(0))
    assert s['images'].shape == (2, 28, 28) and s['images'].dtype == np.uint8


def test_stage_2_chooses_the_diffusion_sampler_on_kid_against_val(tmp_path, data_dir):
    """With `diffusion.tune_ddim_steps`, stage 2 scores every (steps, guidance) pair on KID against the real validation
    images (held out from the generator), applies the stated rule, samples (and saves, and lets the hybrid refine) with the choice, and plots the grid;
    it reads val, never the test split."""
    from synthnb.stages.generation import run_generation
    from synthnb.orchestration.runner import smoke_upstream
    from synthnb.stages.sampler import choose_sampler
    cfg = GenerationConfig(generators=['diffusion', 'hybrid'], n_synthetic_per_class=8, device='cpu',
                           diffusion={**TINY['diffusion'], 'tune_ddim_steps': [2, 4], 'tune_guidance': [1.0, 2.5],
                                      'tune_images': 24})
    res = run_generation(cfg, smoke_upstream('generation'), tmp_path / 'gen')
    tuned = res.metrics['diffusion']['sampler']
    assert [(r['ddim_steps'], r['guidance_scale']) for r in tuned['grid']] == [(2, 1.0), (2, 2.5), (4, 1.0), (4, 2.5)]
    assert all(np.isfinite(r['kid']) and r['kid_sd'] >= 0 for r in tuned['grid'])
    assert tuned['choice'] == {k: choose_sampler(tuned['grid'])[k] for k in ('ddim_steps', 'guidance_scale')}
    assert tuned['profile_setting'] == {'ddim_steps': 2, 'guidance_scale': 1.5}
    load = lambda a: np.load(res.out_dir.parent / res.manifest['inputs'][a]['path'])
    assert tuned['reference_images'] == len(load('val')['labels'])
    saved = json.loads((res.out_dir / 'models' / 'diffusion' / 'config.json').read_text())
    assert {k: saved['settings'][k] for k in tuned['choice']} == tuned['choice'], saved.keys()
    assert res.path('sampler_diffusion').exists() and not {'test', 'pool'} & set(res.manifest['inputs'])
