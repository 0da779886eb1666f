"""Shared fixtures: the real data directory and one smoke run of each experiment, made through the CLI."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    for m in ('gpu: needs a CUDA GPU', 'slow: long-running (full profile)', 'notebooks: executes notebooks',
              'browser: needs Debian chromium'):
        config.addinivalue_line('markers', m)


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
