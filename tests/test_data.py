"""Real data: verification errors, offline downloads through file:// URLs, group-aware splits, stage 1's train/val carving."""
import os
import shutil
import zipfile

import numpy as np
import pytest

from synthnb.core.data import DataError, download_dataset, mt_manifest, pneumonia_path, verify_magnetic_tiles
from synthnb.stages.domain import DomainConfig, carve_scarce, carve_validation, run_domain
from synthnb.core.dataset_cards import load_card
from synthnb.core.sources import group_split, load_source


def load_pneumoniamnist(data_dir):
    "The shipped healthcare card's pool and test split, read from `data_dir` by the generic .npz loader."
    return load_source(load_card('pneumoniamnist'), 28, data_dir)


def load_magnetic_tiles(data_dir, image_size):
    "Every tile of the shipped industrial card, read from `data_dir` by the generic folder loader (pool and test joined)."
    d = load_source(load_card('magnetic-tiles'), image_size, data_dir)
    return {k: np.concatenate([d['pool'][k], d['test'][k]]) for k in d['pool']}


def _pneumonia_copy(data_dir, dest, mutate=None):
    target = dest / 'pneumoniamnist' / 'pneumoniamnist.npz'
    target.parent.mkdir(parents=True)
    data = (data_dir / 'pneumoniamnist' / 'pneumoniamnist.npz').read_bytes()
    target.write_bytes(mutate(data) if mutate else data)
    return target


def test_loads_real_pneumoniamnist(data_dir):
    d = load_pneumoniamnist(data_dir)
    assert d['pool']['images'].shape == (4708, 28, 28) and np.bincount(d['test']['labels']).tolist() == [234, 390]
    assert d['classes'] == ['normal', 'pneumonia'] and any('official val split (524 images) is not used' in n for n in d['notes'])


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r'Missing data file .*pneumoniamnist.npz.*Expected .*4,171,018 bytes.*SYNTHNB_DATA'):
        load_pneumoniamnist(tmp_path)


def test_truncated_file(data_dir, tmp_path):
    _pneumonia_copy(data_dir, tmp_path, lambda b: b[:1000])
    with pytest.raises(DataError, match=r'1,000 bytes, truncated .*Delete it and download it again'):
        load_pneumoniamnist(tmp_path)


def test_wrong_checksum(data_dir, tmp_path):
    _pneumonia_copy(data_dir, tmp_path, lambda b: b[:-1] + bytes([b[-1] ^ 1]))
    with pytest.raises(DataError, match='none of the known versions'):
        load_pneumoniamnist(tmp_path)


def test_another_dataset_under_the_pneumonia_name_is_not_called_truncated(tmp_path):
    target = tmp_path / 'pneumoniamnist' / 'pneumoniamnist.npz'
    target.parent.mkdir()
    np.savez(target, train_images=np.zeros((4, 28, 28), np.uint8), train_labels=np.zeros(4, int))
    with pytest.raises(DataError, match=r'complete .npz \(arrays train_images, train_labels\) but not pneumoniamnist: a different dataset'):
        load_pneumoniamnist(tmp_path)


def test_download_pneumoniamnist_offline(data_dir, tmp_path):
    src = (data_dir / 'pneumoniamnist' / 'pneumoniamnist.npz').resolve().as_uri()
    download_dataset('pneumoniamnist', tmp_path, url=src)
    assert load_pneumoniamnist(tmp_path)['test']['images'].shape == (624, 28, 28)


def test_download_rejects_bad_file_and_leaves_nothing(tmp_path):
    bad = tmp_path / 'bad.npz'
    bad.write_bytes(b'\0' * 4171018)
    with pytest.raises(DataError, match='none of the known versions'):
        download_dataset('pneumoniamnist', tmp_path / 'd', url=bad.as_uri())
    assert not pneumonia_path(tmp_path / 'd').exists()


def test_download_unreachable_url_is_clear(tmp_path):
    with pytest.raises(DataError, match='Could not download'):
        download_dataset('pneumoniamnist', tmp_path, url=(tmp_path / 'nowhere.npz').as_uri())


@pytest.fixture(scope='module')
def mt_zip(data_dir, tmp_path_factory):
    "A GitHub-style archive of the magnetic-tile repository (top folder + class folders), built from the local copy."
    root = data_dir / 'magnetic-tile-defects'
    path = tmp_path_factory.mktemp('mtzip') / 'mt.zip'
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as z:
        for r in mt_manifest(data_dir):
            for col in ('image', 'mask'): z.write(root / r[col], f'Magnetic-tile-defect-datasets.-cc4eb53/{r[col]}')
    return path


def test_download_magnetic_tiles_offline(mt_zip, tmp_path):
    folder = download_dataset('magnetic-tiles', tmp_path, url=mt_zip.as_uri())
    assert len(list(folder.glob('MT_*/Imgs/*.jpg'))) == 1344
    verify_magnetic_tiles(tmp_path)


def test_altered_tile_is_named(data_dir, tmp_path):
    src = data_dir / 'magnetic-tile-defects'
    dst = tmp_path / 'magnetic-tile-defects'
    shutil.copytree(src, dst, symlinks=False)
    victim = dst / 'MT_Crack' / 'Imgs' / sorted(os.listdir(dst / 'MT_Crack' / 'Imgs'))[0]
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(DataError, match=rf'manifest.csv row \d+: .*{victim.name} has sha256 .*the manifest expects'):
        load_magnetic_tiles(tmp_path, 32)


def test_group_split_on_real_tiles(data_dir):
    mt = load_magnetic_tiles(data_dir, 32)
    test = group_split(mt['group'], mt['labels'], 0.3, seed=0)
    assert not set(mt['group'][test]) & set(mt['group'][~test])
    assert 0.2 < test.mean() < 0.4 and mt['labels'][test].sum() > 50


def test_validation_split_on_real_tiles(data_dir):
    mt = load_magnetic_tiles(data_dir, 32)
    pool = ~group_split(mt['group'], mt['labels'], 0.3, seed=0)
    labels, groups = mt['labels'][pool], mt['group'][pool]
    train = carve_scarce(labels, 20, 0, groups)
    val = carve_validation(labels, 20, 0, train, groups)
    assert np.bincount(labels[val]).tolist() == [20, 20] and not set(train) & set(val)
    assert not set(groups[val]) & set(groups[train])  # no tile under another lighting
    assert not set(groups[val]) & set(mt['group'][~pool])  # nor a test tile
    with pytest.raises(ValueError, match='fewer than n_val_per_class=1000'): carve_validation(labels, 1000, 0, train, groups)


def test_stage1_writes_val(data_dir, tmp_path):
    cfg = DomainConfig(data_dir=str(data_dir), n_per_class=10, n_val_per_class=15, seed=3)
    res = run_domain(cfg, None, tmp_path / '01_domain')
    train, val, test = (np.load(res.path(a)) for a in ('train', 'val', 'test'))
    assert set(val.files) == set(train.files) == {'images', 'labels', 'pool_index', 'hashes'}
    assert np.bincount(val['labels']).tolist() == [15, 15] and res.metrics['n_val'] == 30
    assert not set(val['pool_index']) & set(train['pool_index'])
    assert not set(val['hashes']) & (set(train['hashes']) | set(test['hashes']))  # not even a duplicate of a training image
    assert not res.manifest['artifacts']['val']['held_out'] and res.manifest['artifacts']['test']['held_out']
    again = run_domain(cfg, None, tmp_path / 'again' / '01_domain')
    assert np.load(again.path('val'))['pool_index'].tolist() == val['pool_index'].tolist()  # seeded
    with pytest.raises(ValueError, match='n_val_per_class = 0: expected an integer ≥ 1'): DomainConfig(n_val_per_class=0)
    with pytest.raises(DataError, match=r"Too few pool images for class\(es\) \{'normal': 1214, 'pneumonia': 3494\}"):
        run_domain(DomainConfig(data_dir=str(data_dir), n_val_per_class=100000), None, tmp_path / 'big' / '01_domain')
