"""The runner never mistakes a dead kernel or an unfinished stage for a finished one."""

import io
import json
import sys

import nbformat
import pytest

from synthnb.core.store import StageRun
from synthnb.orchestration.execution import StageFailed, execute_notebook
from synthnb.core.stage_registry import is_up_to_date, mark_complete


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'python3', 'language': 'python'}
    nbformat.write(nb, path)
    return path


def test_killed_kernel_is_a_failure(tmp_path):
    nb = _notebook(tmp_path / 'dies.ipynb', 'x = 1', 'import os, signal; os.kill(os.getpid(), signal.SIGKILL)', 'y = 2')
    with pytest.raises(StageFailed) as e: execute_notebook(nb, tmp_path / 'out', {}, progress_bar=False)
    assert (tmp_path / 'out' / 'report.ipynb').exists() and 'the kernel died' in str(e.value), str(e.value)
    # the report keeps what ran before the kernel died, and the cell after it never ran
    nb = nbformat.read(tmp_path / 'out' / 'report.ipynb', as_version=4)
    assert nb.cells[2].get('execution_count') is None


def test_kernel_exit_138_is_a_failure(tmp_path):
    nb = _notebook(tmp_path / 'exit138.ipynb', 'import os; os._exit(138)')
    with pytest.raises(StageFailed) as e: execute_notebook(nb, tmp_path / 'out', {}, progress_bar=False)
    assert 'the kernel died' in str(e.value), str(e.value)


def test_clean_exit_without_manifest_is_a_failure(tmp_path):
    "papermill exits 0 and every cell looks completed, but the stage never wrote its manifest."
    nb = _notebook(tmp_path / 'nomanifest.ipynb', 'x = 1')
    with pytest.raises(StageFailed) as e: execute_notebook(nb, tmp_path / 'out', {}, progress_bar=False)
    assert 'did not complete' in str(e.value)


def test_error_output_is_a_failure_with_the_message(tmp_path):
    nb = _notebook(tmp_path / 'raises.ipynb', 'raise ValueError("boom 42")')
    with pytest.raises(StageFailed) as e: execute_notebook(nb, tmp_path / 'out', {}, progress_bar=False)
    assert 'boom 42' in str(e.value)


def test_up_to_date_needs_key_and_intact_artifacts(tmp_path):
    import dataclasses, numpy as np
    @dataclasses.dataclass
    class C:
        seed: int = 0
        device: str = 'cpu'
    d = tmp_path / '01_domain'
    with StageRun('domain', C(), None, d) as r: r.save_arrays('train', x=np.arange(3))
    assert not is_up_to_date(d, 'k1')           # never marked by the runner
    mark_complete(d, 'k1')
    assert is_up_to_date(d, 'k1') and not is_up_to_date(d, 'k2')
    (d / 'train.npz').write_bytes(b'tampered')
    assert not is_up_to_date(d, 'k1')           # an altered artifact forces a re-run


def test_a_report_layout_failure_never_fails_the_stage(tmp_path, monkeypatch):
    import json
    from pathlib import Path
    import synthnb.orchestration.runner as runner
    from synthnb.core.config import load_experiment
    def broken(report): raise ValueError('layout broke')
    monkeypatch.setattr(runner, 'finish_report', broken)
    exp = load_experiment(Path(__file__).parents[1] / 'experiments' / 'healthcare.yaml', ['profile=smoke', 'exp_id=layout'])
    records = runner.run_experiment(exp, tmp_path / 'runs', until='domain', force=True)
    assert records[0]['status'] == 'ran'
    stage_dir = Path(records[0]['dir'])
    assert is_up_to_date(stage_dir, json.loads((stage_dir / 'manifest.json').read_text())['runner']['key'])
    # papermill's report is kept as it ran, and the manifest says why it was not laid out
    assert json.loads((stage_dir / 'manifest.json').read_text())['warnings'] == [
        {'category': 'ReportLayout', 'message': 'ValueError: layout broke', 'count': 1}]


def _kernel(share, name, failures):
    "A kernel spec `name` whose first `failures` starts die before the kernel replies (as on a busy fresh machine)."
    d = share / 'kernels' / name
    d.mkdir(parents=True)
    starter = d / 'start.py'
    starter.write_text(
        "import os, runpy, sys\n"
        f"count = os.path.join({str(d)!r}, 'starts')\n"
        "n = int(open(count).read()) if os.path.exists(count) else 0\n"
        "open(count, 'w').write(str(n + 1))\n"
        f"if n < {failures}: sys.exit(1)\n"
        "sys.argv = ['ipykernel_launcher', '-f', sys.argv[1]]\n"
        "runpy.run_module('ipykernel_launcher', run_name='__main__')\n")
    (d / 'kernel.json').write_text(json.dumps({'argv': [sys.executable, str(starter), '{connection_file}'],
                                               'display_name': name, 'language': 'python'}))
    return d / 'starts'


def test_a_kernel_that_dies_while_starting_is_started_again(tmp_path):
    share, log = tmp_path / 'share', io.StringIO()
    starts = _kernel(share, 'flaky', failures=1)
    nb = _notebook(tmp_path / 'ok.ipynb', 'x = 1')
    execute_notebook(nb, tmp_path / 'out', {}, kernel='flaky', env={'JUPYTER_PATH': str(share)}, manifest=False,
                     out=log)
    assert starts.read_text() == '2' and 'starting it again' in log.getvalue()
    # a kernel that never starts fails the stage after a few tries, as a dead kernel
    starts = _kernel(share, 'dead', failures=99)
    with pytest.raises(StageFailed) as e:
        execute_notebook(nb, tmp_path / 'out2', {}, kernel='dead', env={'JUPYTER_PATH': str(share)}, out=io.StringIO())
    assert 'the kernel died' in str(e.value) and starts.read_text() == '3', (str(e.value), starts.read_text())
