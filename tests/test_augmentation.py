"Stage 4 augmentation: determinism, label preservation, validation, style transfer and the stage's artifacts (CPU, tiny sizes)."
import dataclasses

import numpy as np
import pytest
import torch

from synthnb.stages.augmentation import AugmentationConfig, DEFAULT_POLICY, run_augmentation
from synthnb.stages.policies import augment, build_policy, validate_policy
from synthnb.core.store import StageRun
from synthnb.stages.style import fourier_domain_adaptation, match_histograms, paste_region

GEOMETRIC = ['hflip', 'vflip', 'rotate', 'scale', 'translate', 'affine', 'elastic']
PHOTOMETRIC = ['brightness', 'contrast', 'gamma', 'noise', 'blur', 'sharpen', 'gradient', 'vignette', 'background', 'fda', 'histmatch']


def tiles(n=8, size=32, seed=0):
    "Smooth random surfaces with one bright rectangular 'defect' each, and its mask."
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    images = np.stack([60 + 60 * np.sin(6 * xx * rng.uniform(0.5, 2) + rng.uniform(0, 3)) + 40 * yy for _ in range(n)])
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        y, x = rng.integers(4, size - 12, 2)
        masks[i, y:y + rng.integers(4, 9), x:x + rng.integers(3, 9)] = 1
    images = np.where(masks, 230, images + rng.normal(0, 4, images.shape))
    return np.clip(images, 0, 255).astype(np.uint8), masks


IMAGES, MASKS = tiles()
REFS = {'targets': tiles(6, seed=1)[0][:, ::-1] // 2 + 100, 'backgrounds': tiles(6, seed=2)[0] // 3}
RICH = {'background': {'p': 0.5}, 'hflip': {}, 'rotate': {}, 'elastic': {'p': 0.3}, 'brightness': {}, 'cutout': {'p': 0.3},
        'randomize': {'n_ops': [1, 3], 'ops': {'gradient': {}, 'vignette': {}, 'blur': {}, 'noise': {}, 'sharpen': {}}},
        'fda': {'p': 0.3}, 'histmatch': {'p': 0.3}}


def run(policy, seed=0, images=IMAGES, masks=MASKS, **kw):
    return augment(images, masks, build_policy(policy, **REFS), seed=seed, **kw)


def test_deterministic_under_seed():
    a, am = run(RICH, seed=5)
    b, bm = run(RICH, seed=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(am, bm)
    assert (run(RICH, seed=6)[0] != a).any()


def test_output_dtype_shape_range():
    a, am = run(RICH, batch_size=3)  # several batches, the last one short
    assert a.dtype == am.dtype == np.uint8 and a.shape == am.shape == IMAGES.shape
    assert set(np.unique(am)) <= {0, 1}
    assert run(RICH, images=IMAGES[:0], masks=MASKS[:0])[0].shape == (0, 32, 32)


@pytest.mark.parametrize('op', GEOMETRIC)
def test_mask_follows_geometric_ops(op):
    "An image that *is* its mask must still equal its mask after the op: both moved together."
    img, m = augment(MASKS * 255, MASKS, build_policy({op: {'p': 1.0}}), seed=1)
    assert ((img > 127) == m).mean() > 0.97
    if op in ('hflip', 'vflip', 'rotate', 'elastic'): assert (m != MASKS).any()  # the op really moved something


@pytest.mark.parametrize('op', PHOTOMETRIC)
def test_photometric_ops_leave_masks(op):
    img, m = run({op: {'p': 1.0}})
    np.testing.assert_array_equal(m, MASKS)
    assert (img != IMAGES).any()


def test_randomize_applies_n_ops_per_image():
    one, _ = augment(IMAGES, None, build_policy({'randomize': {'n_ops': [1, 1], 'ops': {'hflip': {}, 'vflip': {}}}}), seed=2)
    flips = [(o == i[:, ::-1]).all() + 2 * (o == i[::-1]).all() for o, i in zip(one, IMAGES)]
    assert set(flips) == {1, 2}  # exactly one flip each, both kinds used
    none, _ = augment(IMAGES, None, build_policy({'randomize': {'n_ops': [0, 0], 'ops': {'hflip': {}}}}))
    np.testing.assert_array_equal(none, IMAGES)


@pytest.mark.parametrize('policy, message', [
    ({'rotat': {}}, "did you mean 'rotate'"),
    ({'blur': {'sigm': 1}}, "did you mean 'sigma'"),
    ({'noise': {'p': 1.5}}, 'noise.p = 1.5: expected a number ≥ 0 and ≤ 1'),
    ({'contrast': {'range': [1.2, 0.8]}}, 'low ≤ high'),
    ({'noise': {'std': [0.01, 0.02]}}, 'noise.std = [0.01, 0.02]: expected a number ≥ 0 and ≤ 1'),
    ({'gamma': {'range': 'big'}}, 'a number or [low, high]'),
    ({'fda': {'beta': [0.0, 0.9]}}, 'fda.beta = [0.0, 0.9]: expected a number or [low, high] with low ≤ high, each ≥ 0 and ≤ 0.5'),
    ({'randomize': {'n_ops': [1, 4], 'ops': {'blur': {}}}}, 'ops lists 1'),
    ({'randomize': {'ops': {'histmach': {}}}}, "did you mean 'histmatch'"),
])
def test_validation_errors(policy, message):
    with pytest.raises(ValueError, match=None) as e: validate_policy(policy)
    assert message in str(e.value)
    with pytest.raises(ValueError): AugmentationConfig(policy=policy)


def test_reference_ops_need_banks():
    with pytest.raises(ValueError, match='needs reference images'): build_policy({'histmatch': {}})
    with pytest.raises(ValueError, match='backgrounds='): build_policy({'background': {}}, targets=IMAGES)


def test_fda_beta_zero_is_identity_and_small_beta_moves_only_the_mean():
    g = torch.Generator().manual_seed(0)
    x, t = torch.rand(4, 1, 32, 32, generator=g) * 0.5, 0.5 + 0.3 * torch.rand(4, 1, 32, 32, generator=g)
    torch.testing.assert_close(fourier_domain_adaptation(x, t, 0.0), x, atol=1e-5, rtol=0)
    y = fourier_domain_adaptation(x, t, 0.01)
    torch.testing.assert_close(y.mean((1, 2, 3)), t.mean((1, 2, 3)), atol=1e-4, rtol=0)
    torch.testing.assert_close(y - y.mean((2, 3), keepdim=True), x - x.mean((2, 3), keepdim=True), atol=1e-4, rtol=0)
    a, _ = run({'fda': {'p': 1.0, 'beta': [0.0, 0.0]}})
    np.testing.assert_array_equal(a, IMAGES)


def test_histogram_matching_moves_the_histogram_to_the_target():
    x = torch.from_numpy(IMAGES[:1]).float().div(255)[:, None]
    t = torch.from_numpy(REFS['targets'][:1].copy()).float().div(255)[:, None]
    hist = lambda a: np.histogram((a.numpy() * 255).round(), bins=32, range=(0, 256))[0] / a.numel()
    before, after = np.abs(hist(x) - hist(t)).sum(), np.abs(hist(match_histograms(x, t)) - hist(t)).sum()
    assert after < 0.2 < 0.8 < before
    torch.testing.assert_close(match_histograms(x, t, 0.0), x)
    # the batched op moves the augmented set's mean towards the targets'
    a, _ = run({'histmatch': {'p': 1.0, 'strength': 1.0}})
    assert abs(a.mean() - REFS['targets'].mean()) < 0.2 * abs(IMAGES.mean() - REFS['targets'].mean())


def test_background_swap_keeps_the_defect_and_replaces_the_surface():
    x, m = torch.from_numpy(IMAGES).float().div(255)[:, None], torch.from_numpy(MASKS).float()[:, None]
    bg = torch.from_numpy(REFS['backgrounds'][:1]).float().div(255)[:, None].expand_as(x)
    out = paste_region(x, m, bg, feather=0)
    inside, outside = m.bool(), ~m.bool()
    torch.testing.assert_close(out[outside], bg[outside])
    assert (out[inside] > bg[inside] + 0.3).all()  # the bright defect is still there
    torch.testing.assert_close(paste_region(x, torch.zeros_like(m), bg), x)  # defect-free images untouched


@dataclasses.dataclass
class _Cfg:
    seed: int = 0
    device: str = 'cpu'


def test_run_augmentation_artifacts(tmp_path):
    with StageRun('domain', _Cfg(), None, tmp_path / '01_domain') as r:
        r.save_arrays('train', images=IMAGES, labels=np.array([0, 1] * 4), masks=MASKS * np.array([0, 1] * 4)[:, None, None])
        r.write_json('profile', {'classes': ['ok', 'defect'], 'roles': {'normal_class': 'ok', 'simulator': None}})  # stage 4 reads the declared normal class
    with StageRun('evaluation', _Cfg(), tmp_path / '01_domain', tmp_path / '03_evaluation') as r:  # the images stage 3 kept
        r.save_arrays('synthetic_kept', images=IMAGES[::-1], labels=np.array([1, 0] * 4), masks=MASKS[::-1], generator=np.full(8, 'simulation'))
    cfg = AugmentationConfig(policy={**DEFAULT_POLICY, **RICH}, real_copies=2, device='cpu')
    res = run_augmentation(cfg, tmp_path / '03_evaluation', tmp_path / '04_augmentation')
    assert res.manifest['inputs']['synthetic_kept']['stage'] == 'evaluation' and 'synthetic' not in res.manifest['inputs']
    s, r = np.load(res.path('synthetic_aug')), np.load(res.path('real_aug'))
    assert set(s.files) == {'images', 'labels', 'masks', 'generator'}
    assert set(r.files) == {'images', 'labels', 'masks'}
    assert s['images'].dtype == r['images'].dtype == np.uint8 and s['images'].shape == (8, 32, 32) and r['images'].shape == (16, 32, 32)
    np.testing.assert_array_equal(r['labels'], np.tile([0, 1] * 4, 2))
    assert res.metrics['intensity_w1_to_real']['after'] >= 0 and res.path('preview').exists()


def test_translation_changes_only_the_named_generators_images(tmp_path):
    with StageRun('domain', _Cfg(), None, tmp_path / '01_domain') as r:
        r.save_arrays('train', images=IMAGES // 3, labels=np.array([0, 1] * 4), masks=MASKS)
        r.write_json('profile', {'classes': ['ok', 'defect'], 'roles': {'normal_class': 'ok', 'simulator': None}})
    with StageRun('evaluation', _Cfg(), tmp_path / '01_domain', tmp_path / '03_evaluation') as r:
        r.save_arrays('synthetic_kept', images=IMAGES[::-1], labels=np.array([1, 0] * 4), masks=MASKS[::-1], generator=np.repeat(['simulation', 'gan'], 4))
    plain = AugmentationConfig(policy=DEFAULT_POLICY, real_copies=1, device='cpu')
    translated = dataclasses.replace(plain, translation={'generators': ['simulation'], 'train_steps': 10, 'width': 4, 'res_blocks': 1})
    a = run_augmentation(plain, tmp_path / '03_evaluation', tmp_path / 'plain')
    b = run_augmentation(translated, tmp_path / '03_evaluation', tmp_path / 'translated')
    sa, sb = np.load(a.path('synthetic_aug')), np.load(b.path('synthetic_aug'))
    np.testing.assert_array_equal(sa['images'][4:], sb['images'][4:])  # the GAN's images: the same policy draws, untouched by translation
    assert (sa['images'][:4] != sb['images'][:4]).any()  # the simulated ones were translated first
    np.testing.assert_array_equal(np.load(a.path('real_aug'))['images'], np.load(b.path('real_aug'))['images'])  # real copies never are
    assert 'translation' not in a.metrics and b.metrics['translation']['n_translated'] == 4
    assert b.path('translation').exists() and (tmp_path / 'translated' / 'models' / 'translator' / 'model.safetensors').exists()
