"""Shared fixtures: the real data directory, a stage cache shared by the whole session, and one smoke run of each
experiment made through the CLI.

Every CLI run in this session shares one stage cache (`SYNTHNB_STAGE_CACHE`), so tests that vary one experiment compute
the stages they share once. Tests that check what a stage computes (determinism, resume) switch it off with `NO_CACHE`.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from synthnb.core.config import STAGES, stage_folder

ROOT = Path(__file__).resolve().parent.parent
NO_CACHE = {'SYNTHNB_STAGE_CACHE': ''}

# Runner plumbing tests use the cheap generator and a tiny stage 6; the smoke tests run every generator and every arm.
LIGHT = ['-p', 'generation.generators=[simulation]', '-p', 'integration.strategies=[mix]', '-p', 'training.steps=15', '-p', 'training.seeds=[0]',
         '-p', 'training.robustness=false', '-p', 'training.detector_steps=0', '-p', 'training.arms=[real_only, synthetic]']


def pytest_configure(config):
    for m in ('gpu: needs a CUDA GPU', 'slow: long-running end-to-end runs (make test-all; not in CI)', 'notebooks: executes notebooks',
              'browser: needs Debian chromium'):
        config.addinivalue_line('markers', m)


@pytest.fixture(scope='session', autouse=True)
def stage_cache(tmp_path_factory):
    "One stage cache for every CLI run of the session (subprocesses inherit it through the environment)."
    d = tmp_path_factory.mktemp('stage_cache')
    old = os.environ.get('SYNTHNB_STAGE_CACHE')
    os.environ['SYNTHNB_STAGE_CACHE'] = str(d)
    yield d
    if old is None: os.environ.pop('SYNTHNB_STAGE_CACHE', None)
    else: os.environ['SYNTHNB_STAGE_CACHE'] = old


@pytest.fixture(scope='session')
def data_dir():
    d = Path(os.environ.get('SYNTHNB_DATA') or ROOT.parent / 'shared' / 'data')
    if not (d / 'pneumoniamnist' / 'pneumoniamnist.npz').exists():
        pytest.skip(f'real data not found in {d}: set SYNTHNB_DATA')
    return d


def synthnb(*args, env=None, cwd=ROOT, **kw):
    "Run the synthnb CLI as a user would (python -m synthnb), returning the CompletedProcess."
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, '-m', 'synthnb', *map(str, args)], cwd=cwd, env=e, capture_output=True, text=True, **kw)


@pytest.fixture(scope='session')
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('runs')


def _smoke(name, runs_dir, data_dir):
    proc = synthnb('run', f'experiments/{name}.yaml', '-p', 'profile=smoke', '--runs-dir', runs_dir, env={'SYNTHNB_DATA': str(data_dir)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return runs_dir / name, proc


@pytest.fixture(scope='session')
def healthcare_run(runs_dir, data_dir): return _smoke('healthcare', runs_dir, data_dir)


@pytest.fixture(scope='session')
def defect_run(runs_dir, data_dir): return _smoke('defect', runs_dir, data_dir)


@pytest.fixture(scope='session')
def light_run(runs_dir, data_dir):
    "The healthcare experiment with LIGHT settings (stored in the stage cache, for the tests that vary it)."
    proc = synthnb('run', 'experiments/healthcare.yaml', '-p', 'exp_id=light', *LIGHT, '--runs-dir', runs_dir,
                   env={'SYNTHNB_DATA': str(data_dir)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return runs_dir / 'light'


def check_complete_run(run_dir):
    "Assert that every stage of `run_dir` completed and stage 6 wrote its tables, metrics, report and recommendations; return its metrics."
    for s in STAGES:
        d = run_dir / stage_folder(s)
        m = json.loads((d / 'manifest.json').read_text())
        assert m['status'] == 'complete' and m['runner']['key']
        assert (d / 'report.ipynb').exists()
        for k in ('packages', 'git', 'device', 'python'): assert k in m['provenance']
    table = json.loads((run_dir / '06_training' / 'results_table.json').read_text())
    assert {'real_only', 'real_aug', 'synthetic:all', 'curriculum:all', 'pretrain_finetune:all', 'ceiling'} <= {r['arm'] for r in table}
    metrics = json.loads((run_dir / '06_training' / 'metrics.json').read_text())
    for arm in ('real_only', 'real_aug', 'synthetic:all', 'curriculum:all', 'pretrain_finetune:all', 'ceiling'):
        for summary in ('summary', 'val_summary'):  # test split, and the validation split that choices are made on
            s = metrics[arm][summary]
            for k in ('accuracy', 'f1', 'roc_auc'): assert 0 <= s[k]['mean'] <= 1
    assert metrics['curriculum:all']['strategy'] == 'curriculum' and metrics['pretrain_finetune:all']['strategy'] == 'pretrain_finetune'
    # every strategy trains its own models: same data as synthetic:all, different training, different predictions
    assert metrics['curriculum:all']['per_seed'] != metrics['synthetic:all']['per_seed']
    assert metrics['headline']['selected_on'] == 'val'
    # the executed stage-6 report shows every arm on validation and points to the evidence report for the test split,
    # which it does not summarise
    nb = nbformat.read(run_dir / '06_training' / 'report.ipynb', as_version=4)
    shown = lambda kind: ''.join(o.get('data', {}).get(kind, '') for c in nb.cells if c.cell_type == 'code' for o in c.outputs)
    tables, markdown = shown('text/html') + shown('text/markdown') + shown('text/plain'), shown('text/markdown')
    assert 'real_only' in tables and 'validation roc_auc' in markdown
    assert 'Δ best synthetic − real only' not in tables and 'test ROC-AUC' not in tables
    assert any('**evidence report**' in c.source for c in nb.cells if c.cell_type == 'markdown')
    assert json.loads((run_dir / '06_training' / 'recommendations.json').read_text()), 'stage 6 recommends at least one change'
    return metrics


def no_timings(d):
    "A stage's metrics without wall-clock and CPU timings, in mappings and lists alike (they differ between identical runs)."
    if isinstance(d, list): return [no_timings(v) for v in d]
    if not isinstance(d, dict): return d
    return {k: no_timings(v) for k, v in d.items() if 'second' not in k and k != 'timings'}
