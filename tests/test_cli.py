"""Validation before anything runs: parameter names, values and experiment ids."""
import pytest
import yaml

from conftest import synthnb


def test_typo_in_override_suggests_the_name(tmp_path):
    proc = synthnb('run', 'experiments/healthcare.yaml', '-p', 'generation.n_per_clas=3', '--runs-dir', tmp_path)
    assert proc.returncode == 2
    assert "generation.n_per_clas: not a parameter of 02_generation.ipynb (did you mean 'n_per_class'?)" in proc.stderr
    assert not any(tmp_path.iterdir()), 'nothing may run before validation passes'


def test_typo_in_yaml_file(tmp_path):
    spec = yaml.safe_load(open('experiments/defect.yaml'))
    spec['training']['step'] = 5
    (tmp_path / 'bad.yaml').write_text(yaml.safe_dump(spec))
    proc = synthnb('run', tmp_path / 'bad.yaml', '--runs-dir', tmp_path / 'runs')
    assert proc.returncode == 2 and "did you mean 'steps'" in proc.stderr


def test_bare_override_goes_to_the_one_stage_that_accepts_it(tmp_path):
    proc = synthnb('run', 'experiments/healthcare.yaml', '-p', 'ratio=-1', '--runs-dir', tmp_path)
    assert proc.returncode == 2 and 'ratio must be ≥ 0' in proc.stderr  # placed in integration, then its value rejected
    proc = synthnb('run', 'experiments/healthcare.yaml', '-p', 'steps_x=1', '--runs-dir', tmp_path)
    assert proc.returncode == 2 and 'no stage accepts it' in proc.stderr


@pytest.mark.parametrize('bad', ['../evil', 'a/b', '..', '/abs'])
def test_exp_id_cannot_escape_runs_dir(tmp_path, bad):
    proc = synthnb('run', 'experiments/healthcare.yaml', '-p', f'exp_id={bad}', '--runs-dir', tmp_path / 'runs')
    assert proc.returncode == 2 and 'Invalid exp_id' in proc.stderr
    assert not (tmp_path / 'evil').exists()


def test_unknown_profile(tmp_path):
    proc = synthnb('run', 'experiments/healthcare.yaml', '-p', 'profile=ful', '--runs-dir', tmp_path)
    assert proc.returncode == 2 and "did you mean 'full'" in proc.stderr


def test_params_command_lists_stage_parameters():
    proc = synthnb('params', 'integration')
    assert proc.returncode == 0 and 'ratio = 1.0' in proc.stdout


def test_help():
    proc = synthnb('run', '--help')
    assert proc.returncode == 0 and '-p KEY=VALUE' in proc.stdout
