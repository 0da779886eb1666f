"""End-to-end: the industrial-defect experiment through the CLI (its own file, so that pytest-xdist runs it beside the healthcare runs)."""
import json

import numpy as np
import pytest

from conftest import check_complete_run

pytestmark = pytest.mark.notebooks


def test_defect_smoke(defect_run):
    run_dir, _ = defect_run
    check_complete_run(run_dir)
    syn = np.load(run_dir / '02_generation' / 'synthetic.npz')
    assert {'paste', 'simulation', 'diffusion', 'gan', 'hybrid', 'paste_hybrid'} <= set(syn['generator'])
    sim = (syn['labels'] == 1) & (syn['generator'] == 'simulation')
    assert syn['masks'][sim].reshape(sim.sum(), -1).any(1).all(), 'every simulated defect has a mask'
    # the gate's kept share counts the images a generator made: paste's defect-free samples are the real tiles
    ev, keep = (json.loads((run_dir / '03_evaluation' / 'metrics.json').read_text()),
                np.load(run_dir / '03_evaluation' / 'synthetic_keep.npz'))
    for g in ('paste', 'paste_hybrid', 'defect_diffusion'):
        made = (syn['generator'] == g) & (syn['labels'] == 1)
        assert ev['gate']['generators'][g]['kept_share'] == pytest.approx(keep['keep'][made].mean()), g
    # every arm trained on the data it names: the scarce set, the scarce set plus its augmentations, the 1:1 mix, the pool
    m = json.loads((run_dir / '06_training' / 'metrics.json').read_text())
    n_train = len(np.load(run_dir / '01_domain' / 'train.npz')['labels'])
    pool, val = (np.load(run_dir / '01_domain' / f'{a}.npz') for a in ('pool', 'val'))
    n_ceiling = int((~np.isin(pool['group'], pool['group'][val['pool_index']])).sum())
    n_aug = len(np.load(run_dir / '04_augmentation' / 'real_aug.npz')['labels'])
    assert (m['real_only']['n_train'], m['real_aug']['n_train'], m['synthetic:all']['n_train'], m['ceiling']['n_train']) == \
        (n_train, n_train + n_aug, 2 * n_train, n_ceiling)  # the ceiling never trains on a validation group (other lightings)
    assert n_ceiling <= len(pool['labels']) - len(val['labels'])
    # every arm carries its family in the metrics and the tables
    assert {a: m[a]['family'] for a in ('real_only', 'real_aug', 'ceiling')} == {'real_only': 'real', 'real_aug': 'augmentation', 'ceiling': 'ceiling'}
    assert m['synthetic:all']['family'] == 'copy-paste+generative+simulation'  # paste, simulation, the learned ones, hybrids
    table = json.loads((run_dir / '06_training' / 'results_table.json').read_text())
    assert all(r['family'] for r in table)
    assert all((run_dir / '06_training' / 'models' / f'classifier_{a.replace(":", "_")}' / 'model.safetensors').exists() for a in m if 'summary' in m[a])


def test_paste_defects_come_from_the_scarce_set_with_their_masks(defect_run):
    "Every pasted defect image has a non-empty mask, every defect-free one none, and every source image is a scarce training image."
    run_dir, _ = defect_run
    syn = np.load(run_dir / '02_generation' / 'synthetic.npz')
    for g in ('paste', 'paste_hybrid'):
        k = syn['generator'] == g
        has_mask = syn['masks'][k].reshape(k.sum(), -1).any(1)
        assert (has_mask == (syn['labels'][k] == 1)).all(), f'{g}: masks and labels disagree'
    cfg = json.loads((run_dir / '02_generation' / 'models' / 'paste' / 'config.json').read_text())
    hashes = {a: set(np.load(run_dir / '01_domain' / f'{a}.npz')['hashes']) for a in ('train', 'val', 'test')}
    assert cfg['source_hashes'] and set(cfg['source_hashes']) <= hashes['train']
    assert not set(cfg['source_hashes']) & (hashes['val'] | hashes['test'])
