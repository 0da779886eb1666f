"""The notebook ↔ package contract: parameter cells equal config dataclasses; experiments validate; README in sync."""
import ast
import dataclasses
import subprocess
import sys

import nbformat
import pytest

from conftest import ROOT
from synthnb.core import RESERVED_PARAMS, STAGES, load_experiment
from synthnb.runner import CONFIGS, accepted_parameters, notebook_parameters, stage_notebook, validate_experiment


@pytest.mark.parametrize('stage', STAGES)
def test_parameters_cell_matches_config(stage):
    params = notebook_parameters(stage)
    fields = {f.name: f for f in dataclasses.fields(CONFIGS[stage])}
    assert set(params) == set(fields) | set(RESERVED_PARAMS)
    defaults = dataclasses.asdict(CONFIGS[stage]())
    for name in fields:
        assert ast.literal_eval(params[name]['default']) == defaults[name], f'{stage}.{name}: notebook default differs from {CONFIGS[stage].__name__}'
        assert params[name]['help'], f'{stage}.{name} has no comment explaining it'


@pytest.mark.parametrize('stage', STAGES)
def test_exactly_one_parameters_cell_of_literals(stage):
    nb = nbformat.read(stage_notebook(stage), as_version=4)
    cells = [c for c in nb.cells if 'parameters' in c.metadata.get('tags', [])]
    assert len(cells) == 1
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.AnnAssign), f'{stage}: parameters cell may only hold `name: type = literal` lines'
        ast.literal_eval(node.value)


@pytest.mark.parametrize('name', ['healthcare', 'defect'])
@pytest.mark.parametrize('profile', ['smoke', 'full'])
def test_experiments_validate(name, profile):
    accepted = accepted_parameters()
    exp = validate_experiment(load_experiment(ROOT / 'experiments' / f'{name}.yaml', [f'profile={profile}'], accepted), accepted)
    assert exp.exp_id == name and exp.profile == profile


def test_readme_is_generated_from_index():
    proc = subprocess.run([sys.executable, 'tools/readme.py', '--check'], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_settings_keep_papermill_tags():
    text = (ROOT / 'settings.ini').read_text()
    assert 'allowed_cell_metadata_keys = tags' in text and 'tst_flags = slow gpu' in text
