"""Validation before anything runs: parameter names, values and experiment ids.

These call the command's entry point in this process (`synthnb.orchestration.cli.main`), as `python -m synthnb` does; one test
starts the real command in a fresh process to check it starts fast without loading torch.
"""
import sys
import time

import pytest
import yaml

from conftest import synthnb
from synthnb.orchestration.cli import main


def cli(capsys, *args):
    "Run `synthnb ARGS` in-process; return (exit code, stdout, stderr)."
    try: code = main([str(a) for a in args])
    except SystemExit as e: code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_typo_in_override_suggests_the_name(tmp_path, capsys):
    code, _, err = cli(capsys, 'run', 'experiments/healthcare.yaml', '-p', 'domain.n_per_clas=3', '--runs-dir', tmp_path)
    assert code == 2
    assert "-p domain.n_per_clas=3: not a parameter of 01_domain.ipynb (did you mean 'n_per_class'?)" in err  # names the override
    assert not any(tmp_path.iterdir()), 'nothing may run before validation passes'


def test_a_renamed_parameter_is_refused_with_its_new_name(tmp_path, capsys):
    "generation.n_per_class (synthetic images) became n_synthetic_per_class: the old name names the new one, before stage 1."
    code, _, err = cli(capsys, 'run', 'experiments/healthcare.yaml', '-p', 'generation.n_per_class=3', '--runs-dir', tmp_path)
    assert code == 2 and '-p generation.n_per_class=3: renamed: write generation.n_synthetic_per_class' in err, err
    assert not any(tmp_path.iterdir()), 'nothing may run before validation passes'


def test_typo_in_yaml_file(tmp_path, capsys):
    spec = yaml.safe_load(open('experiments/defect.yaml'))
    spec['training']['step'] = 5
    (tmp_path / 'bad.yaml').write_text(yaml.safe_dump(spec))
    code, _, err = cli(capsys, 'run', tmp_path / 'bad.yaml', '--runs-dir', tmp_path / 'runs')
    assert code == 2 and "did you mean 'steps'" in err


def test_bare_override_goes_to_the_one_stage_that_accepts_it(tmp_path, capsys):
    code, _, err = cli(capsys, 'run', 'experiments/healthcare.yaml', '-p', 'ratio=-1', '--runs-dir', tmp_path)
    assert code == 2 and 'integration.ratio = -1: expected a number ≥ 0' in err  # placed in integration, then its value rejected
    code, _, err = cli(capsys, 'run', 'experiments/healthcare.yaml', '-p', 'steps_x=1', '--runs-dir', tmp_path)
    assert code == 2 and 'no stage accepts it' in err


@pytest.mark.parametrize('bad', ['../evil', 'a/b', '..', '/abs'])
def test_exp_id_cannot_escape_runs_dir(tmp_path, capsys, bad):
    code, _, err = cli(capsys, 'run', 'experiments/healthcare.yaml', '-p', f'exp_id={bad}', '--runs-dir', tmp_path / 'runs')
    assert code == 2 and 'Invalid exp_id' in err
    assert not (tmp_path / 'evil').exists()


def test_unknown_profile(tmp_path, capsys):
    code, _, err = cli(capsys, 'run', 'experiments/healthcare.yaml', '-p', 'profile=ful', '--runs-dir', tmp_path)
    assert code == 2 and "did you mean 'full'" in err


def test_params_command_lists_stage_parameters(capsys):
    code, out, _ = cli(capsys, 'params', 'integration')
    assert code == 0 and 'ratio = 1.0' in out


def test_help(capsys):
    code, out, _ = cli(capsys, 'run', '--help')
    assert code == 0 and '-p KEY=VALUE' in out and '--stage-cache' in out


def test_command_starts_fast_without_torch():
    "The installed command, in a fresh process: --version and --help answer quickly, and the CLI imports no torch to do it."
    t0 = time.time()
    proc = synthnb('--version')
    assert proc.returncode == 0 and proc.stdout.strip().startswith('synthnb ')
    proc = synthnb('--help')
    assert proc.returncode == 0 and 'run' in proc.stdout and 'sweep' in proc.stdout
    assert time.time() - t0 < 10, 'two starts of the CLI took over 10 s (loose bound: a busy machine)'
    import subprocess
    probe = subprocess.run([sys.executable, '-c', 'import sys; from synthnb.orchestration.cli import parser; parser(); print("torch" in sys.modules)'],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == 'False', probe.stderr


def test_unknown_tracker(tmp_path, capsys):
    code, _, err = cli(capsys, 'run', 'experiments/healthcare.yaml', '-p', 'tracking=wandb', '--runs-dir', tmp_path)
    assert code == 2 and "tracking must be one of ['tensorboard', 'mlflow']" in err
