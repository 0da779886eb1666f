"""Stage 3 correctness: our metrics against torchmetrics and the `prdc` package, known cases, the review round trip, the filter, and one stage run."""
import csv

import numpy as np
import pytest
import torch

from synthnb.stages.evaluation import EvaluationConfig, run_evaluation
from synthnb.stages.features import FeatureSpaceUnavailable, inception_network
from synthnb.stages.filtering import filter_reasons
from synthnb.stages.metrics import frechet_distance, kernel_distance, memorisation, nearest, poly_mmd2, prdc, projected_wasserstein
from synthnb.stages.review import REVIEW_COLUMNS, export_review_pack, import_review, review_widget


class Identity(torch.nn.Module):
    "A torchmetrics 'feature extractor' that passes precomputed features through."
    def __init__(self, d):
        super().__init__()
        self.num_features = d
    def forward(self, x): return x


def features(n=300, d=16, shift=0.0, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * scale + shift


def rel(a, b): return abs(a - b) / max(abs(b), 1e-12)


def test_frechet_matches_torchmetrics():
    from torchmetrics.image.fid import FrechetInceptionDistance
    a, b = features(seed=0), features(seed=1, shift=0.3, scale=np.linspace(0.5, 1.5, 16))
    fid = FrechetInceptionDistance(feature=Identity(16))
    fid.update(torch.from_numpy(a), real=True)
    fid.update(torch.from_numpy(b), real=False)
    assert rel(frechet_distance(a, b), fid.compute().item()) < 1e-3


def test_kid_matches_torchmetrics():
    from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd
    a, b = features(200, seed=0), features(200, seed=1, shift=0.5)
    kid = KernelInceptionDistance(feature=Identity(16), subsets=1, subset_size=200)
    kid.update(torch.from_numpy(a), real=True)
    kid.update(torch.from_numpy(b), real=False)
    ours = kernel_distance(a, b, n_subsets=1, subset_size=200)
    assert rel(ours['mean'], kid.compute()[0].item()) < 1e-3
    assert rel(poly_mmd2(a, b), poly_mmd(torch.from_numpy(a), torch.from_numpy(b)).item()) < 1e-3


def test_prdc_matches_package():
    prdc_pkg = pytest.importorskip('prdc')
    real, fake = features(200, 8, seed=0), features(150, 8, seed=1, shift=0.4, scale=0.8)
    theirs, ours = prdc_pkg.compute_prdc(real, fake, nearest_k=5), prdc(real, fake, k=5)
    for k in ('precision', 'recall', 'density', 'coverage'): assert rel(ours[k], theirs[k]) < 1e-3, k


def test_known_cases():
    x = features(4000, 3, seed=0)
    assert abs(frechet_distance(x, x)) < 1e-6
    y = features(4000, 3, seed=1, shift=np.array([1, 2, 0]), scale=np.array([1, 2, 1]))
    assert abs(frechet_distance(x, y) - 6.0) < 0.25  # ‖μ‖² + Σ(σ1-σ2)² = 5 + 1
    same, moved = (kernel_distance(x[:1000], z, n_subsets=5)['mean'] for z in (x[1000:2000], y[1000:2000]))
    assert abs(same) < 0.01 * moved  # unbiased: ≈ 0 for two samples of one distribution
    assert prdc(x[:200], x[:200]) == {'precision': 1.0, 'recall': 1.0, 'density': 1.0, 'coverage': 1.0}
    assert abs(projected_wasserstein(x[:, :1], x[:, :1] + 3.0) - 3.0) < 1e-9
    with pytest.raises(ValueError, match='at least 2'): frechet_distance(x[:1], y)


def test_inception_skips_cleanly_without_weights(tmp_path):
    with pytest.raises(FeatureSpaceUnavailable, match='skipped'): inception_network(str(tmp_path / 'missing.pth'))


def test_review_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    real, syn = rng.integers(0, 255, (10, 8, 8), dtype=np.uint8), rng.integers(0, 255, (30, 8, 8), dtype=np.uint8)
    gens = np.repeat(['diffusion', 'gan', 'simulation'], 10)
    key = export_review_pack(tmp_path / 'review_pack', real, syn, gens, n_real=6, n_per_generator=4)
    assert len(key) == 18 and not any('key' in p.name for p in (tmp_path / 'review_pack').rglob('*'))
    assert len(list((tmp_path / 'review_pack' / 'images').glob('*.png'))) == 18 and (tmp_path / 'review_pack' / 'index.html').exists()
    # a reviewer who calls everything real, rates real images 5 and synthetic ones 3, and skips one row
    with open(tmp_path / 'filled.csv', 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(REVIEW_COLUMNS)
        for n, (rid, k) in enumerate(key.items()): w.writerow([rid, 'real', 5 if k['source'] == 'real' else 3, 'ok'] if n else [rid, '', '', ''])
    out = import_review(tmp_path / 'filled.csv', key)
    n_real = sum(k['source'] == 'real' for rid, k in list(key.items())[1:])
    assert out['n_rated'] == 17 and abs(out['accuracy'] - n_real / 17) < 1e-9
    assert out['per_source']['gan']['guessed_real'] == 1.0 and out['per_source']['gan']['accuracy'] == 0.0
    assert out['per_source']['real']['plausibility'] == 5.0 and out['per_source']['simulation']['plausibility'] == 3.0


def test_review_widget_writes_csv(tmp_path):
    pytest.importorskip('ipywidgets')
    rng = np.random.default_rng(0)
    key = export_review_pack(tmp_path / 'pack', rng.integers(0, 255, (4, 8, 8), dtype=np.uint8), rng.integers(0, 255, (4, 8, 8), dtype=np.uint8), np.array(['gan'] * 4), 2, 2)
    box = review_widget(tmp_path / 'pack')
    box.children[-1].children[1].click()  # 'synthetic' for the first image
    out = import_review(tmp_path / 'pack' / 'review.csv', key)
    assert out['n_rated'] == 1


def test_memorisation_uses_held_out_reference():
    rng = np.random.default_rng(0)
    draw = lambda n: rng.integers(0, 255, (n, 8, 8)).astype(np.uint8)  # one 'real' distribution
    train, held_out = draw(300), draw(1000)
    copies = memorisation(train.copy(), train, held_out, quantile=0.05)
    assert copies['flagged_fraction'] == 1.0 and copies['syn_nn_median'] == 0 and copies['closer_than_real']
    fresh = memorisation(draw(1000), train, held_out, quantile=0.05)
    assert abs(fresh['flagged_fraction'] - 0.05) < 0.025 and abs(fresh['ratio'] - 1) < 0.05
    d, _ = nearest(held_out, train)  # the threshold and the real median are held-out → train distances
    assert fresh['threshold'] == pytest.approx(np.quantile(d, 0.05)) and fresh['real_nn_median'] == pytest.approx(np.median(d))


def test_filter_reasons_priority():
    r = filter_reasons(np.array([0, 0, 1, 1]), np.array([[.95, .05], [.05, .95], [.02, .98], [.01, .99]]),
                       np.array([9, 9, 9, 0.1]), 1.0, np.array([1, 1, 7, 7]), 5.0, confidence=0.9)
    assert list(r) == ['', 'label contradicted', 'off-manifold', 'near-duplicate']


@pytest.fixture(scope='module')
def stage(tmp_path_factory, data_dir):
    import os
    from synthnb.orchestration.runner import smoke_upstream
    os.environ.setdefault('SYNTHNB_DATA', str(data_dir))
    return run_evaluation(EvaluationConfig(), smoke_upstream('evaluation'), tmp_path_factory.mktemp('eval') / '03_evaluation')


def test_stage_outputs(stage):
    m, keep = stage.metrics, np.load(stage.path('synthetic_keep'))
    syn = np.load(stage.path('synthetic'))
    assert keep['keep'].shape == syn['labels'].shape and keep['keep'].dtype == bool
    assert set(np.unique(keep['reason'])) <= {'', 'near-duplicate', 'label contradicted', 'off-manifold'}
    assert (keep['reason'] == '').tolist() == keep['keep'].tolist()
    # what stages 4 and 5 use: exactly the rows that passed the filter, of generators that passed the gate, in order
    passed = keep['keep'] & ~np.isin(syn['generator'], m['gate']['failed'])
    kept = np.load(stage.path('synthetic_kept'))
    np.testing.assert_array_equal(kept['images'], syn['images'][passed])
    np.testing.assert_array_equal(kept['generator'], syn['generator'][passed])
    assert m['filtering']['applied'] and m['filtering']['n_passed_on'] == passed.sum()
    assert m['gate']['mode'] == 'enforce' and set(m['gate']['generators']) == set(np.unique(syn['generator']))
    for g, v in m['gate']['generators'].items():  # a verdict for every generator; a failure always says why
        assert (v['verdict'] == 'failed') == bool(v['reasons']) == (g in m['gate']['failed']), (g, v)
        assert 0.0 <= v['detector']['ci_low'] <= v['detector']['roc_auc'] <= v['detector']['ci_high'] <= 1.0
    assert stage.path('gate').exists()
    assert set(stage.manifest['inputs']) <= {'train', 'val', 'profile', 'synthetic', 'provenance'}  # nothing from a later stage
    assert {'domain', 'random', 'pixel'} <= set(m['feature_spaces']) and 'inception' in m['feature_spaces']
    for g, gm in m['generators'].items():
        for space in ('domain', 'random'):
            b = gm['overall'][space]
            assert {'fd', 'kid', 'kid_std', 'w1_projected', 'precision', 'recall', 'density', 'coverage'} <= set(b)
            # against the real reference (train + val), with intervals, and each distance says if it is informative at n
            assert b['n_real'] == m['reference']['images'] == m['reference']['train'] + m['reference']['val']
            assert b['fd_covariance'] in ('sample', 'ledoit-wolf') and not (b['informative']['fd'] and b['fd_covariance'] != 'sample')
            assert set(b['informative']) == {'fd', 'kid', 'prdc'} and b['fd_ratio'] > 0
            for k in ('fd', 'kid', 'precision', 'recall', 'density', 'coverage'):
                lo, hi = b['intervals'][k]
                assert lo <= hi, (k, b['intervals'][k])
        assert 0 <= gm['proxy_on_real_val']['accuracy'] <= 1 and gm['per_class']
    assert not set(stage.manifest['inputs']) & {'test', 'pool'}  # the held-out splits are never read
    assert {'train', 'val'} <= set(stage.manifest['inputs'])
    load = lambda a: np.load(stage.out_dir.parent / stage.manifest['inputs'][a]['path'])
    train, val = load('train'), load('val')
    d, _ = nearest(val['images'], train['images'])  # the memorisation and near-duplicate thresholds come from val → train
    for gm in m['generators'].values(): assert gm['overall']['memorisation']['threshold'] == pytest.approx(np.quantile(d, 0.05))
    from synthnb.stages.filtering import class_nearest  # the filter looks for copies within a class
    d_class = class_nearest(val['images'], val['labels'], train['images'], train['labels'])
    assert m['filtering']['copy_threshold'] == pytest.approx(0.5 * np.quantile(d_class, 0.05))
    assert (stage.out_dir / 'review_key.json').exists() and not (stage.out_dir / 'review_pack' / 'review_key.json').exists()


def test_gate_fails_the_controls(tmp_path, data_dir):
    """The quality gate catches both controls, each for its own reason: `copy` (real training images) is dropped by the
    filter as near-duplicates, `noise` is told from real images by the detector; neither reaches stage 4."""
    import os
    from synthnb.stages.generation import GenerationConfig, run_generation
    from synthnb.orchestration.runner import smoke_upstream
    os.environ.setdefault('SYNTHNB_DATA', str(data_dir))
    run_generation(GenerationConfig(generators=['copy', 'noise']), smoke_upstream('generation'), tmp_path / '02_generation')
    ev = run_evaluation(EvaluationConfig(), tmp_path / '02_generation', tmp_path / '03_evaluation')
    gate = ev.metrics['gate']
    assert sorted(gate['failed']) == ['copy', 'noise'], gate
    assert any(r.startswith('the filter dropped most of its images') for r in gate['generators']['copy']['reasons'])
    assert gate['generators']['noise']['detector']['roc_auc'] >= 0.95
    assert any(r.startswith('the detector tells its images from real ones') for r in gate['generators']['noise']['reasons'])
    assert len(np.load(ev.path('synthetic_kept'))['labels']) == 0  # nothing goes on


def test_a_hybrid_fails_with_the_model_it_refines_with(tmp_path, data_dir):
    """`hybrid` refines with the run's `diffusion` model (its provenance says so); the smoke settings' diffusion model,
    trained for seconds, fails the gate, and the hybrid fails with it, whatever its own figures."""
    import json, os
    from synthnb.stages.generation import GenerationConfig, run_generation
    from synthnb.orchestration.runner import smoke_upstream
    os.environ.setdefault('SYNTHNB_DATA', str(data_dir))
    run_generation(GenerationConfig(generators=['diffusion', 'hybrid']), smoke_upstream('generation'), tmp_path / '02_generation')
    assert json.loads((tmp_path / '02_generation' / 'provenance.json').read_text())['hybrid'] == {'refiner': 'diffusion'}
    gate = run_evaluation(EvaluationConfig(), tmp_path / '02_generation', tmp_path / '03_evaluation').metrics['gate']
    assert gate['generators']['diffusion']['verdict'] == 'failed', gate['generators']['diffusion']
    assert 'it refines its images with `diffusion`, which failed the gate' in gate['generators']['hybrid']['reasons']
    assert sorted(gate['failed']) == ['diffusion', 'hybrid']


def test_kid_bootstrap_interval_covers_the_truth_at_its_nominal_rate():
    """On a simulation with known truth (two Gaussians 0.5 apart in one of 8 dimensions; the true MMD² from 6,000
    samples each), the 95 % KID interval of 150 vs 150 samples holds the truth in at least 85 % of 60 draws and is as
    wide as the estimator's spread across draws (neither a fake-narrow nor a useless interval)."""
    from synthnb.stages.metrics import kid_interval, poly_mmd2
    d, shift = 8, np.r_[0.5, np.zeros(7)]
    big = np.random.default_rng(0)
    truth = poly_mmd2(big.normal(size=(6000, d)), big.normal(size=(6000, d)) + shift)
    hits, est, width = [], [], []
    for s in range(60):
        r = np.random.default_rng(s + 1)
        a, b = r.normal(size=(150, d)), r.normal(size=(150, d)) + shift
        lo, hi = kid_interval(a, b, seed=s)
        hits.append(lo <= truth <= hi)
        est.append(poly_mmd2(a, b))
        width.append(hi - lo)
    assert np.mean(hits) >= 0.85, np.mean(hits)
    assert 0.7 < np.mean(width) / (2 * 1.96 * np.std(est)) < 1.5, (np.mean(width), np.std(est))
