"""Baselines worth beating: the rare-class regime (`domain.n_per_class` as a mapping) and the ceiling's group hygiene, on
the real magnetic tiles; a bad per-class count fails before stage 1. (The baseline arms' training options are tested in
nbs/00e_models.ipynb and nbs/06_training.ipynb, the families of the arms in tests/test_defect.py.)"""

import numpy as np
import pytest

from conftest import synthnb
from synthnb.stages.domain import DomainConfig, run_domain
from synthnb.stages.arms import ceiling_set


@pytest.fixture(scope='module')
def rare_regime(tmp_path_factory, data_dir):
    "Stage 1 of the magnetic tiles at 32 px in the regime a plant has: every defect-free tile and 5 defects."
    out = tmp_path_factory.mktemp('rare') / '01_domain'
    cfg = DomainConfig(dataset='magnetic-tiles', data_dir=str(data_dir), image_size=32,
                       n_per_class={'ok': 'all', 'defect': 5}, n_val_per_class=20)
    run_domain(cfg, None, out)
    return {a: np.load(out / f'{a}.npz') for a in ('train', 'val', 'pool')}


def test_n_per_class_as_a_mapping_draws_exactly_what_it_says(rare_regime):
    train, val, pool = rare_regime['train'], rare_regime['val'], rare_regime['pool']
    assert (train['labels'] == 1).sum() == 5  # defect: 5
    # ok: all, i.e. every defect-free pool image outside the validation set and its groups
    outside = ~np.isin(pool['group'], pool['group'][val['pool_index']])
    assert set(train['pool_index'][train['labels'] == 0]) == set(np.flatnonzero(outside & (pool['labels'] == 0)))
    assert (train['labels'] == 0).sum() > 400
    assert not set(train['group']) & set(val['group']), 'no group on both sides of train and val'
    assert np.bincount(val['labels']).tolist() == [20, 20]


def test_no_validation_group_reaches_the_ceiling(rare_regime):
    pool, val = rare_regime['pool'], rare_regime['val']
    ceiling = ceiling_set(dict(pool), dict(val))
    kept = ~np.isin(pool['group'], pool['group'][val['pool_index']])
    assert len(ceiling['labels']) == kept.sum() <= len(pool['labels']) - len(val['labels'])  # other lightings leave too
    # the images the ceiling trains on are exactly the pool images of groups without a validation image
    assert np.array_equal(ceiling['images'], pool['images'][kept])


def test_a_wrong_class_name_in_n_per_class_fails_before_stage_1(tmp_path, data_dir):
    proc = synthnb('run', 'experiments/defect.yaml', '-p', 'domain.n_per_class={ok: all, defects: 5}',
                   '--runs-dir', tmp_path, env={'SYNTHNB_DATA': str(data_dir)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "names class 'defects' (did you mean 'defect'?)" in proc.stderr
    assert not any(tmp_path.iterdir()), 'nothing may run before validation passes'


@pytest.mark.parametrize('value', ["{ok: most, defect: 5}", "{ok: 0, defect: 5}", "[5, 5]"])
def test_a_bad_count_in_n_per_class_fails_before_stage_1(tmp_path, data_dir, value):
    proc = synthnb('run', 'experiments/defect.yaml', '-p', f'domain.n_per_class={value}', '--runs-dir', tmp_path,
                   env={'SYNTHNB_DATA': str(data_dir)})
    assert proc.returncode == 2 and 'n_per_class' in proc.stderr, proc.stderr[-2000:]
    assert not any(tmp_path.iterdir())
