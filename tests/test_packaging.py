"""The built wheel works outside a checkout: it carries the stage notebooks and the experiment templates.

The wheel is built from this checkout and installed, without its dependencies, into a fresh virtual environment; the
dependencies come from the test environment through PYTHONPATH (no download), so `synthnb` itself is imported from the
wheel. The commands run from an empty folder, where no settings.ini or nbs/ can be found.
"""
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from conftest import ROOT


def test_wheel_runs_outside_the_checkout(tmp_path, data_dir):
    wheels, venv, elsewhere = tmp_path / 'wheels', tmp_path / 'venv', tmp_path / 'elsewhere'
    elsewhere.mkdir()
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '-w', str(wheels), str(ROOT)],
                   check=True, capture_output=True, cwd=ROOT)
    wheel = next(wheels.glob('synthnb-*.whl'))
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
    bin_dir = venv / ('Scripts' if os.name == 'nt' else 'bin')
    subprocess.run([str(bin_dir / 'python'), '-m', 'pip', 'install', '-q', '--no-deps', '--no-index', str(wheel)], check=True)
    env = {**os.environ, 'PYTHONPATH': sysconfig.get_paths()['purelib'], 'SYNTHNB_DATA': str(data_dir), 'SYNTHNB_STAGE_CACHE': ''}
    run = lambda *a: subprocess.run([str(bin_dir / 'synthnb'), *map(str, a)], cwd=elsewhere, env=env, capture_output=True, text=True)

    where = subprocess.run([str(bin_dir / 'python'), '-c', 'import synthnb; print(synthnb.__file__)'], cwd=elsewhere, env=env,
                           capture_output=True, text=True).stdout
    assert Path(where.strip()).is_relative_to(venv), where  # the wheel's package, not the checkout's

    proc = run('params', 'generation')
    assert proc.returncode == 0 and 'n_synthetic_per_class' in proc.stdout, proc.stderr[-2000:]

    proc = run('run', 'healthcare', '-p', 'generation.generators=[simulation]', '--until', 'generation', '--runs-dir', elsewhere / 'runs')
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((elsewhere / 'runs' / 'healthcare' / '02_generation' / 'manifest.json').read_text())
    assert manifest['status'] == 'complete' and manifest['metrics']
