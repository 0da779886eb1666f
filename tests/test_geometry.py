"""Geometry of loading: letterboxing keeps masks on their defects, `squash` stays the default and unchanged, and the
type-stratified group split of the magnetic tiles holds out every defect type and never splits a tile."""
import csv

import numpy as np
import pytest
from PIL import Image

from synthnb.core.dataset_cards import load_card, read_image
from synthnb.core.sources import group_split, load_source

MT = 'magnetic-tile-defects'


@pytest.fixture(scope='module')
def tiles(data_dir):
    "The rows of the magnetic-tile manifest and the folder they are relative to."
    root = data_dir / MT
    if not (root / 'manifest.csv').exists(): pytest.skip(f'magnetic-tile data not found in {root}')
    with open(root / 'manifest.csv', newline='') as f: return root, list(csv.DictReader(f))


def letterbox_frame(w, h, size):
    "Scale, and left, top, width, height of a w×h image letterboxed into size×size (computed here, not by synthnb)."
    scale = size / max(w, h)
    nw, nh = round(w * scale), round(h * scale)
    return scale, (size - nw) // 2, (size - nh) // 2, nw, nh


def check_on_defect(mask, letterboxed, size):
    "Every letterboxed mask pixel lies in the defect's mapped bounding box, and none in the padding."
    ys, xs = np.nonzero(mask)
    scale, left, top, nw, nh = letterbox_frame(mask.shape[1], mask.shape[0], size)
    rows = slice(top + int(np.floor(ys.min() * scale)), top + int(np.ceil((ys.max() + 1) * scale)))
    cols = slice(left + int(np.floor(xs.min() * scale)), left + int(np.ceil((xs.max() + 1) * scale)))
    inside = letterboxed[rows, cols].sum() / max(letterboxed.sum(), 1)
    frame = np.zeros_like(letterboxed, bool)
    frame[top : top + nh, left : left + nw] = True
    return inside, int(letterboxed[~frame].sum())


def test_letterboxing_keeps_a_synthetic_mask_on_its_defect(tmp_path):
    for h, w in ((40, 130), (130, 40)):  # wide and tall
        img = np.full((h, w), 90, np.uint8)
        mask = np.zeros((h, w), np.uint8)
        mask[h // 3 : h // 3 + 6, w // 4 : w // 4 + 9] = 255
        img[mask > 0] = 240
        Image.fromarray(img).save(tmp_path / 'i.png')
        Image.fromarray(mask).save(tmp_path / 'm.png')
        im = read_image(tmp_path / 'i.png', 32, fit='letterbox')[0]
        m = read_image(tmp_path / 'm.png', 32, mask=True, fit='letterbox')[0]
        inside, in_padding = check_on_defect(mask > 0, m, 32)
        assert m.any() and inside == 1 and in_padding == 0
        assert im[m > 0].min() >= 164  # under the mask the image is at least half defect (90 → 240): aligned
        assert im[0, 0] == 90  # padding (above a wide image, left of a tall one): the image's median grey


def test_letterboxing_keeps_every_real_mask_on_its_defect(tiles):
    root, rows = tiles
    rows = [r for r in rows if r['is_defect'] == '1' and int(r['mask_pixels_ge128']) > 0]
    assert len(rows) == 388
    lost, worst = [], 1.0
    for r in rows:
        m = read_image(root / r['mask'], 128, mask=True, fit='letterbox')[0]
        orig = np.asarray(Image.open(root / r['mask']).convert('L')) >= 128
        inside, in_padding = check_on_defect(orig, m, 128)
        assert in_padding == 0, f"{r['mask']}: {in_padding} mask pixels in the padding"
        if m.any(): worst = min(worst, inside)
        else: lost.append(r['mask'])
    assert worst >= 0.95, f'a letterboxed mask strays from its defect: only {worst:.0%} inside its bounding box'
    assert len(lost) <= 0.05 * len(rows), f'{len(lost)} masks vanish at 128 px: {lost[:5]}'


def test_squash_stays_the_default_and_is_byte_identical_to_a_plain_resize(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (23, 57), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / 'a.png')
    old = np.asarray(Image.fromarray(a).resize((16, 16), Image.BOX))
    assert read_image(tmp_path / 'a.png', 16)[0].tobytes() == old.tobytes()
    assert read_image(tmp_path / 'a.png', 16, fit='squash')[0].tobytes() == old.tobytes()
    assert 'resize' not in load_card('pneumoniamnist')['source']  # other cards keep squash


def old_group_split(groups, labels, test_fraction, seed):
    "group_split as it was before types: stratified by each group's highest label only."
    rng = np.random.default_rng(seed)
    uniq = np.unique(groups)
    strata = np.array([labels[groups == g].max() for g in uniq])
    test_groups = []
    for s in np.unique(strata):
        gs = rng.permutation(uniq[strata == s])
        test_groups += list(gs[:max(1, round(test_fraction * len(gs)))])
    return np.isin(groups, test_groups)


def test_type_stratified_split_holds_out_every_defect_type_and_keeps_tiles_whole(tiles):
    _, rows = tiles
    groups = np.array([int(r['seq_group']) for r in rows])
    labels = np.array([int(r['is_defect']) for r in rows])
    types = np.array([r['defect_type'] for r in rows])
    test = group_split(groups, labels, 0.3, 0, types)
    assert not set(groups[test]) & set(groups[~test])
    for t in np.unique(types):
        share = test[types == t].mean()
        assert 0.15 < share < 0.45, f'{t}: {share:.0%} of its images held out'
    for seed in range(3):  # without types: the split of before, to the image
        assert (group_split(groups, labels, 0.3, seed) == old_group_split(groups, labels, 0.3, seed)).all()


def test_load_source_reports_the_split_of_the_magnetic_tiles(tiles, data_dir):
    d = load_source(load_card('magnetic-tiles'), 32, data_dir)
    s = d['split']
    assert set(s['types']['pool']) == set(s['types']['test']) == {'Blowhole', 'Break', 'Crack', 'Fray', 'Free', 'Uneven'}
    assert s['images'] == {'pool': len(d['pool']['labels']), 'test': len(d['test']['labels'])}
    mixed = s['mixed_groups']
    assert len(mixed['pool']) + len(mixed['test']) == 19  # DATASET.md: 19 groups mix Free and defect images
    assert not set(mixed['test']) & set(d['pool']['group'].tolist()) and set(mixed['test']) <= set(d['test']['group'].tolist())
    assert f"19 groups mix labels (kept whole: {len(mixed['pool'])} in the pool, {len(mixed['test'])} in test)" in d['notes']
    assert any('squashed (aspect ratio not kept)' in n for n in d['notes'])  # the card's rule, chosen on validation
    card = load_card('magnetic-tiles')
    card['source']['resize'] = 'letterbox'
    assert any('letterboxed (aspect ratio kept' in n for n in load_source(card, 32, data_dir)['notes'])
