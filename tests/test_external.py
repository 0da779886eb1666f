"""Generators (and stage 4's unpaired translation) through the CLI on one stage-1 run: an external synthetic set (checked against stage 1, its files hashed, judged by
stage 3 like any generator's output), the conditional VAE with and without DP-SGD (ε reported by stages 2 and 3), and a diffusers
pipeline on disk (a tiny random one: nothing is downloaded)."""
import hashlib
import json

import numpy as np
import pytest

from conftest import synthnb
from synthnb.testing import tiny_pipeline

pytestmark = pytest.mark.notebooks
LIGHT_EVAL = ['-p', 'evaluation.domain_steps=15', '-p', 'evaluation.proxy_steps=15', '-p', 'evaluation.kid_subsets=4']


@pytest.fixture(scope='module')
def stage1(tmp_path_factory, data_dir):
    "A healthcare run folder holding only stage 1, and the command that continues it."
    runs = tmp_path_factory.mktemp('generators') / 'runs'
    base = ['run', 'experiments/healthcare.yaml', '-p', 'exp_id=generators', '--runs-dir', runs]
    proc = synthnb(*base, '--until', 'domain', env={'SYNTHNB_DATA': str(data_dir)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return runs / 'generators', base


@pytest.fixture(scope='module')
def judged(stage1, tmp_path_factory, data_dir):
    """Stages 2-4 with four generators (the scarce training images themselves imported as an external set, the VAE, the DP-SGD VAE and a pipeline
    on disk), the VAE's images translated towards the real ones by stage 4's CycleGAN. The filter only flags here
    (`evaluation.apply_filter=false`), so every image of the VAE reaches stage 4."""
    run_dir, base = stage1
    pipeline = tiny_pipeline(tmp_path_factory.mktemp('pretrained') / 'tiny-ddpm')
    train, copies = np.load(run_dir / '01_domain' / 'train.npz'), tmp_path_factory.mktemp('external') / 'copies.npz'
    np.savez(copies, images=train['images'], labels=train['labels'], classes=np.array(['normal', 'pneumonia']))
    proc = synthnb(*base, '-p', 'generation.generators=[external, vae, dp_vae, pretrained]', '-p', f'generation.external={{path: {copies}}}',
                   '-p', f'generation.pretrained={{path: {pipeline}, steps: 4, strength: 0.3}}',
                   '-p', 'generation.n_synthetic_per_class=20', '-p', 'generation.vae={train_steps: 30, batch_size: 8, epsilon: 6.0}', *LIGHT_EVAL,
                   '-p', 'augmentation.translation={generators: [vae], train_steps: 20, width: 4, res_blocks: 1}',
                   '-p', 'evaluation.apply_filter=false', '--until', 'augmentation', env={'SYNTHNB_DATA': str(data_dir)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return (copies, pipeline, json.loads((run_dir / '02_generation' / 'provenance.json').read_text()),
            {g: m['overall']['memorisation'] for g, m in json.loads((run_dir / '03_evaluation' / 'metrics.json').read_text())['generators'].items()})


def test_a_bad_external_set_fails_clearly(stage1, tmp_path, data_dir):
    _, base = stage1
    env, base = {'SYNTHNB_DATA': str(data_dir)}, base + ['-p', 'generation.generators=[external]']
    proc = synthnb(*base, '-p', 'generation.external={}', '--until', 'generation', env=env)
    assert proc.returncode == 2 and 'needs generation.external.path' in proc.stderr, proc.stderr[-3000:]  # before anything runs
    np.savez(tmp_path / 'big.npz', images=np.zeros((4, 64, 64), np.uint8), labels=np.array([0, 1, 0, 1]))
    proc = synthnb(*base, '-p', f'generation.external={{path: {tmp_path / "big.npz"}}}', '--until', 'generation', env=env)
    assert proc.returncode == 1 and 'big.npz: images have shape (4, 64, 64)' in proc.stderr and 'Resize the set to 28×28' in proc.stderr, proc.stderr[-3000:]


def test_external_set_is_hashed_and_its_copies_are_caught(judged):
    copies, _, prov, mem = judged
    assert prov['external']['files'] == {'copies.npz': hashlib.sha256(copies.read_bytes()).hexdigest()} and prov['external']['repeats'] == 0
    assert mem['external']['flagged_fraction'] == 1.0  # every image is a training image: stage 3's memorisation audit flags them all


def test_vae_and_dp_vae_report_their_privacy_beside_the_memorisation_audit(judged):
    _, _, prov, mem = judged
    eps = prov['dp_vae']['privacy']['epsilon']
    assert 0 < eps <= 6.0 + 1e-6 and prov['dp_vae']['privacy']['noise_multiplier'] > 0 and prov['vae']['privacy']['epsilon'] is None
    assert mem['dp_vae']['dp_epsilon'] == eps and mem['vae']['dp_epsilon'] is None
    assert mem['vae']['flagged_fraction'] < 1.0  # a fitted model, not a copier


def test_pretrained_pipeline_from_disk_is_hashed_and_judged(judged):
    _, pipeline, prov, mem = judged
    weights = 'unet/diffusion_pytorch_model.safetensors'
    assert prov['pretrained']['files'][weights] == hashlib.sha256((pipeline / weights).read_bytes()).hexdigest()
    assert 'pretrained' in mem  # stage 3 audited it like the others


def test_translation_runs_in_the_smoke_profile_and_saves_its_translator(judged, stage1):
    run_dir, _ = stage1
    m = json.loads((run_dir / '04_augmentation' / 'metrics.json').read_text())['translation']
    assert m['generators'] == ['vae'] and m['n_translated'] == 40 and m['cycle_error'] >= 0  # 20 per class, of the VAE only
    from synthnb.stages.translation import CycleGANTranslator
    from synthnb.core.files import load_json
    from safetensors.torch import load_file
    folder = run_dir / '04_augmentation' / 'models' / 'translator'
    tr = CycleGANTranslator.from_state(load_file(folder / 'model.safetensors'), load_json(folder / 'config.json'))
    assert tr.settings.train_steps == 20 and tr.translate(np.zeros((2, 28, 28), np.uint8)).shape == (2, 28, 28)
