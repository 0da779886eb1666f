"""Calibration of `synthnb.stages.inference` on simulated experiments with known truth.

Each experiment draws a fresh grouped test set and R = 10 chains of three candidate arms (one with a true Δ AUC of
0.03, two with none) and a ceiling (true Δ 0.08), so the intervals must cover both draw-to-draw variation and
test-set sampling. Coverage is pooled over arms, and each arm must reach the target less 0.01 (the Monte Carlo error
of 600 experiments); the gap's coverage is over the experiments where it is identified. The old method (a
percentile bootstrap over five units of the per-unit Δs, blind to test sampling) is reimplemented here as the
control that must fail the same target. Pure numpy; seeds fixed.
"""
import numpy as np
import pytest

from synthnb.stages.inference import compare_arms, gap_closed
from synthnb.stages.simulated_experiment import simulate_experiment
from synthnb.stages.worth import data_equivalence

N_EXPERIMENTS, CHAINS, N_BOOT, TARGET = 600, 10, 200, 0.93
TRUE_DELTAS = {'synthetic': 0.03, 'null_a': 0.0, 'null_b': 0.0}
NULLS, CANDIDATES = ('null_a', 'null_b'), tuple(TRUE_DELTAS)


def in_fieller_set(gap: dict, theta: float) -> bool:
    "Whether `gap_closed`'s confidence set holds `theta`; a gap that is not identified covers nothing."
    if gap['kind'] == 'interval': return gap['low'] <= theta <= gap['high']
    if gap['kind'] == 'outside': return not gap['excluded'][0] < theta < gap['excluded'][1]
    return gap['kind'] == 'unbounded'


def old_method(arm_units, ceiling_units, rng, n_boot=1000, level=0.95):
    "The former stage-6 statistics on five units: percentile bootstrap of the mean Δ and of the gap ratio."
    idx = rng.integers(0, len(arm_units), (n_boot, len(arm_units)))
    num, den = arm_units[idx].mean(1), ceiling_units[idx].mean(1)
    qs = [0.5 - level / 2, 0.5 + level / 2]
    delta_ci = np.quantile(num, qs)
    ratios = num[den > 0] / den[den > 0]
    gap_ci = np.quantile(ratios, qs) if len(ratios) else (np.nan, np.nan)
    return delta_ci, gap_ci


def run_calibration(n_experiments: int = N_EXPERIMENTS) -> dict:
    "Per experiment and arm: coverage of Δ and θ, helps claims, and the same for the old method."
    keys = ('delta', 'gap', 'identified', 'null_claim', 'zero_agrees', 'old_delta', 'old_gap', 'old_claim')
    out = {k: [] for k in keys}
    for i in range(n_experiments):
        rng = np.random.default_rng(10_000 + i)
        sim = simulate_experiment(rng, R=CHAINS, n_test=150, delta=TRUE_DELTAS, ceiling_delta=0.08)
        truth = sim['truth']
        comparison = compare_arms(sim['y'], sim['groups'], sim['scores'], n_boot=N_BOOT, seed=i)
        rows = {r['arm']: r for r in comparison.rows}
        out['delta'].append([rows[a]['ci_low'] <= truth['delta'][a] <= rows[a]['ci_high'] for a in rows])
        gaps = {a: gap_closed(comparison, a) for a in CANDIDATES}
        out['gap'].append([in_fieller_set(gaps[a], truth['gap_closed'][a]) for a in CANDIDATES])
        out['identified'].append([gaps[a]['value'] is not None for a in CANDIDATES])
        out['null_claim'].append(any(rows[a]['helps'] for a in NULLS))
        out['zero_agrees'] += [g['contains_zero'] == (rows[a]['ci_low'] <= 0 <= rows[a]['ci_high'])
                               for a, g in gaps.items() if g['value'] is not None]
        units = {a: v[:5] for a, v in comparison.deltas.per_chain.items()}
        old = {a: old_method(units[a], units['ceiling'], rng) for a in CANDIDATES}
        out['old_delta'].append([old[a][0][0] <= truth['delta'][a] <= old[a][0][1] for a in CANDIDATES])
        out['old_gap'].append([old[a][1][0] <= truth['gap_closed'][a] <= old[a][1][1] for a in CANDIDATES])
        out['old_claim'].append(any(old[a][0][0] > 0 for a in NULLS))
    return {k: np.array(v) for k, v in out.items()}


@pytest.fixture(scope='module')
def calibration():
    return run_calibration()


def test_the_delta_interval_covers_the_truth_in_simulation(calibration):
    per_arm = calibration['delta'].mean(0)  # synthetic, null_a, null_b, ceiling: 600 intervals each
    assert len(calibration['delta']) >= 400
    assert calibration['delta'].mean() >= TARGET and (per_arm >= TARGET - 0.01).all(), per_arm


def test_the_gap_closed_interval_covers_the_truth_in_simulation(calibration):
    identified = calibration['identified']  # the ceiling's Δ interval lies above 0: θ is reported
    covered = calibration['gap'][identified]
    assert identified.mean() >= 0.85, identified.mean()
    assert covered.mean() >= TARGET, covered.mean()


def test_holm_adjusted_helps_claims_are_rare_when_nothing_helps(calibration):
    assert calibration['null_claim'].mean() <= 0.07, calibration['null_claim'].mean()


def test_the_gap_interval_contains_zero_exactly_when_the_delta_interval_does(calibration):
    assert len(calibration['zero_agrees']) > 0.9 * N_EXPERIMENTS * len(CANDIDATES)
    assert calibration['zero_agrees'].all()


def test_the_old_percentile_bootstrap_over_five_units_misses_the_coverage_target(calibration):
    coverage = calibration['old_delta'].mean(0)
    assert (coverage < TARGET).all(), coverage


def test_one_chain_gives_no_interval():
    sim = simulate_experiment(np.random.default_rng(0), R=1, n_test=60)
    comparison = compare_arms(sim['y'], sim['groups'], sim['scores'], n_boot=50)
    row = comparison.rows[0]
    assert row['ci_low'] is None and row['p_helps'] is None and not row['helps'] and 'one chain' in row['note']
    assert gap_closed(comparison, 'synthetic')['value'] is None


def test_data_equivalence_refuses_fewer_than_five_draws():
    with pytest.raises(ValueError, match='at least 5 draws'):
        data_equivalence({2: [0.6, 0.61, 0.62, 0.6], 8: [0.7] * 5}, [0.65] * 5)
