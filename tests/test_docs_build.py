"""The docs build's notebook executor (docs/build.py): notebooks run in the worker's own process, each in a fresh shell."""
import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def build(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location('docs_build', ROOT / 'docs' / 'build.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, 'NBS', tmp_path)
    monkeypatch.setattr(mod, 'EXEC_CACHE', tmp_path / '_executed')
    return mod


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nbformat.write(nb, path)
    return path


def test_each_notebook_runs_in_a_fresh_namespace_with_its_outputs_kept(build, tmp_path):
    first = _notebook(tmp_path / 'a.ipynb', 'leaked = 1', 'print("hello")\n6 * 7', '#| slow\nraise SystemExit("skipped")')
    out, _, err = build.execute(first)
    assert err is None
    cells = nbformat.read(out, as_version=4).cells
    assert [o['output_type'] for o in cells[1].outputs] == ['stream', 'execute_result']
    assert cells[1].outputs[1]['data']['text/plain'] == '42' and cells[2].source.startswith('#| slow')
    second = _notebook(tmp_path / 'b.ipynb', "assert 'leaked' not in globals()", 'import os; os.getcwd()')
    out, _, err = build.execute(second)
    assert err is None, err
    assert nbformat.read(out, as_version=4).cells[1].outputs[0]['data']['text/plain'] == repr(str(tmp_path))


def test_a_failing_notebook_is_reported_with_its_cell_and_error(build, tmp_path):
    bad = _notebook(tmp_path / 'bad.ipynb', 'x = 1', 'x / 0', 'never = True')
    out, _, err = build.execute(bad)
    assert out is None and 'cell 2' in err and 'ZeroDivisionError' in err, err
    assert not (tmp_path / '_executed').exists() or not list((tmp_path / '_executed').glob('bad-*'))
