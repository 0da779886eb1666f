"""The notebook ↔ package contract: parameter cells equal config dataclasses; experiments validate; README in sync."""
import ast
import dataclasses
import subprocess
import sys

import nbformat
import pytest

from conftest import ROOT
from synthnb.core.config import RESERVED_PARAMS, STAGES, load_experiment
from synthnb.core.stage_registry import CONFIGS
from synthnb.orchestration.stage_notebooks import accepted_parameters, notebook_parameters, stage_notebook, validate_experiment


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


def test_front_page_quotes_the_published_defect_evidence():
    "The front page's worked example (nbs/index.ipynb, and so README) is the published defect headline, row for row."
    nb = nbformat.read(ROOT / 'nbs' / 'index.ipynb', as_version=4)
    example = next(c.source for c in nb.cells if c.source.startswith('## What synthnb tells you'))
    published = (ROOT / 'reports' / 'defect' / 'headline.md').read_text().splitlines()
    rows = [line for line in published if line.startswith(('|', '- '))]
    assert len(rows) >= 6 and not [r for r in rows if r not in example], 'copy reports/defect/headline.md into nbs/index.ipynb'


def test_settings_keep_papermill_tags():
    text = (ROOT / 'settings.ini').read_text()
    assert 'allowed_cell_metadata_keys = tags' in text and 'tst_flags = slow gpu' in text


def _wrong_values(hint):
    "Values that `hint` must reject: one of the wrong type, and for a bounded number (or list of them) one out of range."
    from typing import Annotated, get_args, get_origin
    from synthnb.core.parameters import Bounds
    base, bounds = hint, None
    if get_origin(hint) is Annotated: base, bounds = get_args(hint)[0], next(m for m in get_args(hint)[1:] if isinstance(m, Bounds))
    out = [5] if base is str else ['lots']
    if get_origin(base) is list:
        out.append([5] if get_args(base)[0] is str else ['x'])  # a list holding a wrong item
        item = get_args(base)[0]
        if get_origin(item) is Annotated: base, bounds = get_args(item)[0], get_args(item)[1]
    if bounds is not None:
        v = bounds.ge - 1 if bounds.ge is not None else bounds.gt if bounds.gt is not None else bounds.le + 1 if bounds.le is not None else bounds.lt
        out.append([v] if get_origin(hint) is list else v)
    return out


@pytest.mark.parametrize('stage', STAGES)
def test_every_wrong_type_or_range_fails_before_stage_1_naming_the_key(stage):
    import typing
    from synthnb.orchestration.stage_notebooks import ParameterError
    accepted, hints = accepted_parameters(), typing.get_type_hints(CONFIGS[stage], include_extras=True)
    checked = 0
    for f in dataclasses.fields(CONFIGS[stage]):
        for bad in _wrong_values(hints[f.name]):
            exp = load_experiment({'exp_id': 'typed', stage: {f.name: bad}})
            with pytest.raises(ParameterError) as e: validate_experiment(exp, accepted)
            assert f'{stage}.{f.name} = ' in str(e.value) and 'expected' in str(e.value), (f.name, bad, str(e.value))
            checked += 1
    assert checked > len(dataclasses.fields(CONFIGS[stage]))  # every field, and the bounded ones twice



def _nested_settings():
    "(stage, key, class) of every nested settings mapping: generation's per-generator ones and stage 4's translation."
    from synthnb.generators.registry import SETTINGS
    from synthnb.stages.translation import TranslationSettings
    return [('generation', k, cls) for k, cls in SETTINGS.items()] + [('augmentation', 'translation', TranslationSettings)]


@pytest.mark.parametrize('stage,key,cls', _nested_settings(), ids=lambda v: getattr(v, '__name__', v))
def test_every_wrong_nested_setting_fails_before_stage_1_naming_the_key(stage, key, cls):
    import typing
    from synthnb.orchestration.stage_notebooks import ParameterError
    accepted, hints = accepted_parameters(), typing.get_type_hints(cls, include_extras=True)
    checked = 0
    for f in dataclasses.fields(cls):
        for bad in _wrong_values(hints[f.name]):
            exp = load_experiment({'exp_id': 'typed', stage: {key: {f.name: bad}}})
            with pytest.raises(ParameterError) as e: validate_experiment(exp, accepted)
            assert f'{stage}.{key}.{f.name} = ' in str(e.value) and 'expected' in str(e.value), (f.name, bad, str(e.value))
            checked += 1
    exp = load_experiment({'exp_id': 'typed', stage: {key: {'no_such_setting': 1}}})
    with pytest.raises(ParameterError, match=f"{key}: unknown setting 'no_such_setting'"): validate_experiment(exp, accepted)
    assert checked >= len(dataclasses.fields(cls))

def test_cli_rejects_a_bad_value_before_anything_runs(tmp_path, capsys):
    from synthnb.orchestration.cli import main
    code = main(['run', str(ROOT / 'experiments' / 'healthcare.yaml'), '--runs-dir', str(tmp_path), '-p', 'training.steps=1.5'])
    err = capsys.readouterr().err
    assert code == 2 and '-p training.steps=1.5' in err and 'expected an integer ≥ 1' in err, err
    assert not any(tmp_path.iterdir())  # no run folder: stage 1 never started


@pytest.mark.parametrize('stage', STAGES)
def test_parameters_cell_is_written_from_the_config_class(stage):
    from synthnb.core.parameters import parameters_cell
    nb = nbformat.read(stage_notebook(stage), as_version=4)
    cell = next(c for c in nb.cells if 'parameters' in c.metadata.get('tags', []))
    assert cell.source == parameters_cell(CONFIGS[stage], stage), f'run `python tools/parameters_cells.py`: {stage} notebook differs from its config class'
