"""Sweeps on Dask: a grid of experiments as tasks on a LocalCluster or an existing scheduler, failures recorded, re-runs only of what is missing."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from conftest import ROOT, synthnb

pytestmark = pytest.mark.notebooks


def _sweep(*args, data_dir, timeout=1500):
    t0 = time.time()
    proc = synthnb('sweep', *args, env={'SYNTHNB_DATA': str(data_dir)}, timeout=timeout)
    return proc, time.time() - t0


def _record(sweep_dir): return json.loads((sweep_dir / 'sweep.json').read_text())


def _errors(report):
    nb = nbformat.read(report, as_version=4)
    return [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []) if o.get('output_type') == 'error']


@pytest.fixture(scope='module')
def smoke_sweep(tmp_path_factory, data_dir):
    "sweeps/smoke.yaml (4 experiments) on a 2-worker LocalCluster."
    runs = tmp_path_factory.mktemp('sweep_runs')
    proc, secs = _sweep('sweeps/smoke.yaml', '--workers', '2', '--runs-dir', runs, data_dir=data_dir)
    print(f'smoke sweep, 2 workers: {secs:.1f}s')
    return runs / 'smoke', proc


def test_smoke_sweep_on_local_cluster(smoke_sweep):
    sweep_dir, proc = smoke_sweep
    assert proc.returncode == 0, proc.stderr[-4000:]
    rec = _record(sweep_dir)
    assert sorted(rec['experiments']) == [f'smoke-healthcare-r{r}-s{s}' for r in (0, 1) for s in (0, 1)]
    assert {e['status'] for e in rec['experiments'].values()} == {'complete'}
    for exp_id in rec['experiments']:  # one folder per grid point, each with its own configuration
        exp = json.loads((sweep_dir / exp_id / 'experiment.json').read_text())
        assert exp['exp_id'] == exp_id and exp['stages']['integration']['ratio'] == float(exp_id.split('-r')[1][0])
        assert (sweep_dir / exp_id / '06_training' / 'metrics.json').exists()
    assert rec['report']['status'] == 'complete' and not _errors(sweep_dir / 'report.ipynb')
    summary = pd.read_csv(sweep_dir / 'summary.csv')
    assert 'real_only' in set(summary.arm) and set(summary.n) == {2} and set(summary.ratio) == {0.0, 1.0}  # 2 seeds per configuration and arm
    assert summary['mean'].between(0, 1).all() and summary.ci.notna().all()
    assert (sweep_dir / 'ratio.png').exists()


def test_rerun_skips_finished_experiments(smoke_sweep, data_dir):
    sweep_dir, proc = smoke_sweep
    assert proc.returncode == 0
    before = (sweep_dir / 'smoke-healthcare-r0-s0' / '06_training' / 'manifest.json').stat().st_mtime
    proc, secs = _sweep('sweeps/smoke.yaml', '--runs-dir', sweep_dir.parent, '--no-report', data_dir=data_dir)
    assert proc.returncode == 0 and '4 already complete, 0 to run' in proc.stderr, proc.stderr[-3000:]
    assert (sweep_dir / 'smoke-healthcare-r0-s0' / '06_training' / 'manifest.json').stat().st_mtime == before
    assert {e['attempts'] for e in _record(sweep_dir)['experiments'].values()} == {1}


def test_changed_config_never_reuses_a_folder(smoke_sweep, data_dir):
    sweep_dir, _ = smoke_sweep
    proc, _ = _sweep('sweeps/smoke.yaml', '-p', 'training.steps=21', '--runs-dir', sweep_dir.parent, data_dir=data_dir)
    assert proc.returncode == 2 and 'refusing to reuse run folders' in proc.stderr and '20 → 21' in proc.stderr, proc.stderr[-3000:]


def test_invalid_grid_runs_nothing(tmp_path, data_dir):
    proc, _ = _sweep('sweeps/smoke.yaml', '-g', 'integration.ratoi=[0.5]', '--runs-dir', tmp_path, data_dir=data_dir)
    assert proc.returncode == 2 and "did you mean 'ratio'" in proc.stderr
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope='module')
def dask_scheduler(tmp_path_factory, data_dir):
    "A `dask scheduler` and one `dask worker` as separate processes on 127.0.0.1, random ports."
    tmp = tmp_path_factory.mktemp('dask')
    dask, env = str(Path(sys.executable).parent / 'dask'), {**os.environ, 'SYNTHNB_DATA': str(data_dir)}
    common = ['--scheduler-file', str(tmp / 'scheduler.json'), '--no-dashboard']
    procs = [subprocess.Popen([dask, 'scheduler', '--host', '127.0.0.1', '--port', '0', *common], cwd=ROOT, env=env,
                              stdout=open(tmp / 'scheduler.log', 'w'), stderr=subprocess.STDOUT)]
    try:
        for _ in range(120):
            if (tmp / 'scheduler.json').exists(): break
            time.sleep(0.5)
        address = json.loads((tmp / 'scheduler.json').read_text())['address']
        procs.append(subprocess.Popen([dask, 'worker', '--host', '127.0.0.1', '--nthreads', '1', '--nworkers', '1', *common], cwd=ROOT, env=env,
                                      stdout=open(tmp / 'worker.log', 'w'), stderr=subprocess.STDOUT))
        from distributed import Client
        with Client(address, timeout='60s') as client:
            client.wait_for_workers(1, timeout=120)
            workers = set(client.scheduler_info()['workers'])
        assert address.startswith('tcp://127.0.0.1:') and all(w.startswith('tcp://127.0.0.1:') for w in workers)
        yield address, workers
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture(scope='module')
def scheduler_sweep(dask_scheduler, tmp_path_factory, data_dir):
    "A 2-experiment sweep against --scheduler: one good experiment and one whose domain stage raises (100 000 real images per class)."
    address, _ = dask_scheduler
    tmp = tmp_path_factory.mktemp('ext')
    (tmp / 'ext.yaml').write_text(yaml.safe_dump({'cases': [str(ROOT / 'experiments' / 'healthcare.yaml')],
                                                  'overrides': {'generation.generators': ['simulation'], 'training.steps': 20, 'training.seeds': [0],
                                                                'training.arms': ['real_only', 'synthetic'], 'training.robustness': False,
                                                                'training.detector_steps': 0},
                                                  'grid': {'domain.n_per_class': [20, 100000]}}))
    proc, secs = _sweep(tmp / 'ext.yaml', '--scheduler', address, '--runs-dir', tmp / 'runs', data_dir=data_dir)
    print(f'2-experiment sweep on an external scheduler: {secs:.1f}s')
    return tmp, tmp / 'runs' / 'ext', proc


def test_sweep_on_external_scheduler(scheduler_sweep, dask_scheduler):
    _, sweep_dir, proc = scheduler_sweep
    _, workers = dask_scheduler
    good = _record(sweep_dir)['experiments']['ext-healthcare-n20']
    assert good['status'] == 'complete', proc.stderr[-4000:]
    assert good['worker'] in workers  # ran on the separately started worker
    assert (sweep_dir / 'ext-healthcare-n20' / '06_training' / 'metrics.json').exists()
    assert (sweep_dir / 'report.ipynb').exists() and not _errors(sweep_dir / 'report.ipynb')


def test_failure_is_recorded_and_only_it_is_retried(scheduler_sweep, dask_scheduler, data_dir):
    tmp, sweep_dir, proc = scheduler_sweep
    assert proc.returncode == 1  # some experiment failed; the others finished
    bad = _record(sweep_dir)['experiments']['ext-healthcare-n100000']
    assert bad['status'] == 'failed' and bad['stage'] == 'domain' and 'Too few pool images' in bad['message']
    assert Path(bad['report']).exists() and _errors(bad['report'])  # the partial report holds the traceback
    assert 'ext-healthcare-n100000: failed at domain' in proc.stderr
    good_manifest = sweep_dir / 'ext-healthcare-n20' / '06_training' / 'manifest.json'
    before = good_manifest.stat().st_mtime
    proc, _ = _sweep(tmp / 'ext.yaml', '--scheduler', dask_scheduler[0], '--runs-dir', tmp / 'runs', '--no-report', data_dir=data_dir)
    assert proc.returncode == 1 and '1 already complete, 1 to run' in proc.stderr, proc.stderr[-3000:]
    rec = _record(sweep_dir)['experiments']
    assert rec['ext-healthcare-n100000']['attempts'] == 2 and rec['ext-healthcare-n20']['attempts'] == 1
    assert good_manifest.stat().st_mtime == before


def test_protocol_chains_run_on_an_external_scheduler(scheduler_sweep, dask_scheduler, tmp_path, data_dir):
    """A protocol's chains go to a separately started scheduler like a sweep's experiments: chain 0 (the sweep's good
    experiment, restored from the stage cache) and five learning-curve chains, each on the external worker."""
    address, workers = dask_scheduler
    proc = synthnb('run', 'experiments/healthcare.yaml', '-p', 'exp_id=ext-protocol', '-p', 'generation.generators=[simulation]',
                   '-p', 'training.steps=20', '-p', 'training.seeds=[0]', '-p', 'training.arms=[real_only, synthetic]',
                   '-p', 'training.robustness=false', '-p', 'training.detector_steps=0',
                   '-p', 'protocol.curve=[5]', '-p', 'protocol.curve_chains=5', '--scheduler', address, '--runs-dir', tmp_path,
                   env={'SYNTHNB_DATA': str(data_dir)}, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    chains = json.loads((tmp_path / 'ext-protocol' / 'protocol.json').read_text())['chains']
    assert len(chains) == 6 and all(c['status'] == 'complete' and c['worker'] in workers for c in chains.values()), chains
    assert (tmp_path / 'ext-protocol' / 'evidence' / 'report.ipynb').exists()
