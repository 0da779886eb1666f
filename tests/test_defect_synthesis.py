"""Defect synthesis on the real magnetic tiles at 64 px (smoke settings): paste's seamless blend and the learned defect
generator (`defect_diffusion`) — masks agree with labels and with what changed, sources are the scarce set, no seam,
defect-free samples are real tiles as they are, exact save/load round trips, and sampling per defect type."""
import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from scipy import ndimage

from synthnb.generators.defect_crops import DefectDiffusionSettings
from synthnb.generators.defect_diffusion import DefectDiffusionGenerator, memorisation, place_crop
from synthnb.generators.blending import blend_region, place_box, poisson_blend, seam_statistic
from synthnb.generators.paste import DefectPasteGenerator
from synthnb.core.dataset_cards import load_card
from synthnb.core.sources import load_source

TYPES = ('Blowhole', 'Break', 'Uneven')  # the scarce set's types; 'Crack' and 'Fray' have no scarce example


def sha1(a): return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.fixture(scope='module')
def tiles(data_dir):
    "A rare-class training set at 64 px: 60 defect-free tiles and 2 defects of each of 3 types, each from its own tile group."
    pool = load_source(load_card('magnetic-tiles'), 64, data_dir)['pool']
    rng = np.random.default_rng(0)
    ok = rng.choice(np.flatnonzero(pool['labels'] == 0), 60, replace=False)
    defects, groups = [], set()
    for t in TYPES:
        for i in rng.permutation(np.flatnonzero(pool['type'] == t)):
            if pool['masks'][i].any() and pool['group'][i] not in groups and sum(pool['type'][defects] == t) < 2:
                defects.append(i)
                groups.add(pool['group'][i])
    idx = np.r_[ok, defects]
    return {k: v[idx] for k, v in pool.items()}, pool


@pytest.fixture(scope='module')
def generators(tiles):
    train, _ = tiles
    fit = lambda g: g.fit(train['images'], train['labels'], train['masks'], None, train['type'])
    return {'paste': fit(DefectPasteGenerator()),
            'defect_diffusion': fit(DefectDiffusionGenerator(DefectDiffusionSettings(), device='cpu'))}


@pytest.fixture(scope='module')
def samples(generators):
    labels = np.r_[np.zeros(8, int), np.ones(16, int)]
    return {n: g.sample(labels, torch.Generator().manual_seed(0)) for n, g in generators.items()}


NAMES = ['paste', 'defect_diffusion']


@pytest.mark.parametrize('name', NAMES)
def test_masks_and_labels_agree(samples, name):
    "A defect image has a non-empty mask, a defect-free image an empty one."
    out = samples[name]
    has_mask = out['masks'].reshape(len(out['masks']), -1).any(1)
    assert (has_mask == (out['labels'] == 1)).all()
    assert out['images'].dtype == np.uint8 and out['masks'].shape == out['images'].shape == (24, 64, 64)


@pytest.mark.parametrize('name', NAMES)
def test_defect_free_samples_are_real_defect_free_tiles_as_they_are(tiles, samples, name):
    "Unrotated, unflipped, untouched: each defect-free sample is one of the training set's defect-free tiles, byte for byte."
    train, _ = tiles
    ok = train['images'][train['labels'] == 0]
    out = samples[name]
    for im in out['images'][out['labels'] == 0]:
        assert (ok == im).all((1, 2)).any()


@pytest.mark.parametrize('name', NAMES)
def test_the_mask_lies_where_the_image_changed(tiles, generators, samples, name):
    "Each defect image is a real defect-free tile changed only around its mask, and changed inside it."
    train, _ = tiles
    ok, margin = train['images'][train['labels'] == 0], generators[name].margin
    out, changes = samples[name], []
    for im, m in zip(out['images'][out['labels'] == 1], out['masks'][out['labels'] == 1]):
        near = ndimage.binary_dilation(m > 0, iterations=margin)
        bgs = ok[(ok[:, ~near] == im[~near]).all(1)]  # the tile it was made from: equal everywhere away from the mask
        assert len(bgs), 'pixels away from the mask changed'
        changes.append(np.abs(im.astype(int) - bgs[0])[m > 0].mean())
    assert min(changes) >= 1 and np.median(changes) >= 3, changes  # changed under every mask, visibly for most


@pytest.mark.parametrize('name', NAMES)
def test_sources_come_only_from_the_scarce_set(tiles, generators, name):
    "The recorded sources are exactly the scarce training defects with a mask, and no other image of the pool."
    train, pool = tiles
    gen = generators[name]
    scarce = {sha1(im) for im, lab, m in zip(train['images'], train['labels'], train['masks']) if lab == 1 and m.any()}
    others = {sha1(im) for im in pool['images']} - {sha1(im) for im in train['images']}
    assert set(gen.source_hashes) == scarce and not set(gen.source_hashes) & others
    assert sorted(set(gen.source_kinds)) == list(TYPES)


def test_the_paste_blend_leaves_no_seam(generators):
    """On the border of the blended region the gradient magnitude stays within the tile's own (99th percentiles: the ratio
    is at most 1 for the median placement, and at most 1.1 for 9 in 10); the same crops pasted hard in the same regions
    show a seam."""
    gen, rng, ratios = generators['paste'], np.random.default_rng(0), {'poisson': [], 'hard': []}
    for i in range(60):
        bg, src = gen.backgrounds[rng.integers(len(gen.backgrounds))], gen.sources[i % len(gen.sources)]
        (h, w), (y, x) = src['mask'].shape, place_box(bg.shape, src['mask'], rng)
        mask, box, crop = np.zeros(bg.shape, bool), np.zeros(bg.shape, bool), bg.astype(float)
        mask[y:y + h, x:x + w], box[y:y + h, x:x + w], crop[y:y + h, x:x + w] = src['mask'], True, src['image']
        region, weight = blend_region(mask, box, gen.margin)
        for how, im in (('poisson', poisson_blend(bg, crop, region, weight)), ('hard', np.where(region, crop, bg))):
            ratios[how].append(seam_statistic(np.clip(im, 0, 255).round(), bg, region)['ratio'])
    r = np.array(ratios['poisson'])
    assert np.median(r) <= 1 and np.quantile(r, 0.9) <= 1.1, r
    assert np.median(ratios['hard']) > 1.3, ratios['hard']  # the statistic tells a seam when there is one


def test_the_learned_blend_leaves_no_seam(generators):
    "The generated crops, blended in, leave a border within the tile's own gradients (median ratio at most 1)."
    gen, rng = generators['defect_diffusion'], np.random.default_rng(0)
    picks = [gen.pick_source(1, None, rng) for _ in range(40)]
    crops = gen.generate(np.array([gen.classes[k] for k in picks]), torch.Generator().manual_seed(0))
    r = []
    for k, crop in zip(picks, crops):
        bg = gen.backgrounds[rng.integers(len(gen.backgrounds))]
        im, m, region = place_crop(bg, crop, gen.sides[k], rng, gen.margin, gen.settings.blend, gen.settings.contrast)
        r.append(seam_statistic(im, bg, region)['ratio'])
    assert np.median(r) <= 1, r


@pytest.mark.parametrize('name', NAMES)
def test_state_round_trip_reproduces_samples(generators, samples, name, tmp_path):
    "Saved as safetensors and JSON, loaded back: the same generator draws the same images and masks."
    cls = type(generators[name])
    tensors, config = generators[name].state()
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp_path / 'model.safetensors')
    (tmp_path / 'config.json').write_text(json.dumps(config))
    again = cls.from_state(load_file(tmp_path / 'model.safetensors'), json.loads((tmp_path / 'config.json').read_text()))
    out = again.sample(samples[name]['labels'], torch.Generator().manual_seed(0))
    assert np.array_equal(out['images'], samples[name]['images']) and np.array_equal(out['masks'], samples[name]['masks'])


def test_each_defect_type_is_sampled_on_request_and_a_missing_type_is_refused(generators):
    "`kinds` picks the type per image (its crops come from that type's class); a type without a scarce example is an error."
    gen, rng = generators['defect_diffusion'], np.random.default_rng(0)
    for t in TYPES:
        assert {gen.source_kinds[gen.pick_source(1, t, rng)] for _ in range(10)} == {t}
        out = gen.sample(np.ones(2, int), torch.Generator().manual_seed(1), kinds=[t, t])
        assert out['masks'].reshape(2, -1).any(1).all()
    assert {gen.source_kinds[gen.pick_source(1, None, rng)] for _ in range(60)} == set(TYPES)  # uniformly, by default
    with pytest.raises(ValueError, match=r"learned no defect of type 'Crack' \(class 1\): the scarce training set has"):
        gen.sample(np.array([0, 1]), torch.Generator(), kinds=['', 'Crack'])
    with pytest.raises(ValueError, match='knows classes 0..1'):
        gen.sample(np.array([2]), torch.Generator())


def test_memorisation_tells_copies_from_new_crops(generators):
    "Copies of the training crops land at the augmented-copy distance; the check of the fitted model gives its figures."
    rng = np.random.default_rng(0)
    real = rng.normal(0, 0.3, (5, 16, 16))
    owner = np.arange(5).repeat(2)
    copies = real[owner][:, ::-1] + rng.normal(0, 0.03, (10, 16, 16))  # flipped, slightly noisy copies
    copied = memorisation(copies, real, copies, owner)
    new = memorisation(rng.normal(0, 0.3, (10, 16, 16)), real, copies, owner)
    assert copied['copy_share'] >= 0.4 and new['copy_share'] == 0
    assert copied['generated_to_training'] < 0.1 < new['generated_to_training']
    m = generators['defect_diffusion'].check_memorisation(n=4)
    assert m['n'] == 4 * len(set(generators['defect_diffusion'].classes)) and np.isfinite(m['generated_to_training'])
