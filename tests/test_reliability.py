"""Nothing dropped silently, nothing stale: every bad input gets one short error naming its key or file, nested overrides
merge, a changed input outside the source folder re-runs stage 1, a damaged manifest is recomputed with its reason, the
run's children die with it, and diffusion and hybrid generators write identical bytes run after run."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import LIGHT, NO_CACHE, ROOT, no_timings, synthnb
from synthnb.core.config import load_experiment
from synthnb.orchestration.execution import _descendants
from synthnb.orchestration.stage_notebooks import accepted_parameters
from synthnb.testing import demo_folder

HC = 'experiments/healthcare.yaml'


def _bad_yaml(tmp_path):
    p = tmp_path / 'bad.yaml'
    p.write_text('exp_id: bad\ndomain: {n_per_class: 5\ntraining: {steps: 3}\n')
    return p


def _stage_as_list(tmp_path):
    p = tmp_path / 'list.yaml'
    p.write_text('exp_id: listed\ntraining: [1, 2]\n')
    return p


def _a_file(tmp_path):
    p = tmp_path / 'not-a-folder'
    p.write_text('x')
    return p


# (id, arguments (callables get tmp_path), exit code, what the error must name)
BAD = [
    ('unknown-dataset', [HC, '-p', 'domain.dataset=mnist'], 2, ['-p domain.dataset=mnist', "Unknown dataset 'mnist'"]),
    ('source-format', [HC, '-p', 'domain.source={format: zip, path: x}'], 2, ['-p domain.source=', "source format must be 'npz' or 'folder'"]),
    ('source-key', [HC, '-p', 'domain.source={format: folder, path: x, pth: y}'], 2, ['-p domain.source=', "Unknown source key(s) ['pth']"]),
    ('yaml-file', [_bad_yaml], 2, ['bad.yaml, line 3', 'invalid YAML']),
    ('yaml-override', [HC, '-p', 'training.arms=[real_only,'], 2, ['-p training.arms=[real_only,', 'invalid YAML']),
    ('device-name', [HC, '-p', 'device=gpu0'], 2, ["device = 'gpu0'"]),
    ('seed-list', [HC, '-p', 'seed=[1]'], 2, ['seed = [1]']),
    ('seed-float', [HC, '-p', 'seed=1.7'], 2, ['seed = 1.7']),
    ('seed-text', [HC, '-p', 'seed=abc'], 2, ["seed = 'abc'"]),
    ('seed-negative', [HC, '-p', 'seed=-1'], 2, ['seed = -1']),
    ('seed-huge', [HC, '-p', f'seed={10**23}'], 2, [f'seed = {10**23}']),
    ('stage-as-list', [_stage_as_list], 2, ['list.yaml', 'training must be a mapping']),
    ('runs-dir-file', [HC, '--runs-dir', _a_file], 2, ['not-a-folder is a file']),
    ('runs-dir-under-file', [HC, '--runs-dir', lambda t: _a_file(t) / 'runs'], 2, ['not-a-folder/runs: cannot create it']),
    ('config-folder', ['experiments'], 2, ['experiments is a folder', 'healthcare.yaml']),
    ('exp-id-newline', [HC, '-p', 'exp_id="y31\\n"'], 2, ["Invalid exp_id 'y31\\n'"]),
    ('steps-unbounded', [HC, '-p', f'training.steps={10**12}'], 2, ['-p training.steps=', '≤ 10_000_000']),
    ('nested-typo', [HC, '-p', 'generation.diffusion.trian_steps=10'], 2, ["'trian_steps'", "did you mean 'train_steps'"]),
    ('until-iterations', [HC, '--until', 'domain', '--iterations', '2'], 2, ['--until cannot be combined with --iterations']),
]


@pytest.mark.parametrize('name,args,code,named', BAD, ids=[b[0] for b in BAD])
def test_each_bad_input_is_one_short_error_before_anything_runs(name, args, code, named, tmp_path):
    runs = tmp_path / 'runs'
    args = [a(tmp_path) if callable(a) else a for a in args]
    if '--runs-dir' not in args: args += ['--runs-dir', runs]
    proc = synthnb('run', *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stderr
    assert 1 <= len(lines) <= 6 and 'Traceback' not in proc.stderr, proc.stderr
    for n in named: assert n in proc.stderr, (n, proc.stderr)
    assert not runs.exists() or not any(runs.rglob('manifest.json')), 'nothing may be written before the error'
    if code == 2 and name == 'seed-text':  # -v adds the traceback
        assert 'Traceback' in synthnb('run', *args, '-v').stderr


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_read_only_runs_dir_is_one_short_error(tmp_path):
    ro = tmp_path / 'ro'
    ro.mkdir()
    ro.chmod(0o555)
    proc = synthnb('run', HC, '--runs-dir', ro)
    assert proc.returncode == 2 and 'is not writable' in proc.stderr and len(proc.stderr.strip().splitlines()) <= 6


def test_cuda_without_a_gpu_fails_before_stage_1(tmp_path):
    import torch
    if torch.cuda.is_available(): pytest.skip('a GPU is present')
    proc = synthnb('run', HC, '-p', 'device=cuda', '--runs-dir', tmp_path)
    assert proc.returncode == 2 and 'torch sees no CUDA GPU' in proc.stderr and len(proc.stderr.strip().splitlines()) <= 6


def test_nested_override_sets_one_field_and_keeps_the_profiles_others():
    "-p generation.diffusion.train_steps=10 under profile=full: the full profile's other diffusion settings stay."
    acc = accepted_parameters()
    full = load_experiment(ROOT / 'experiments/defect.yaml', ['profile=full'], acc).stages['generation']['diffusion']
    got = load_experiment(ROOT / 'experiments/defect.yaml', ['profile=full', 'generation.diffusion.train_steps=10'], acc)
    assert got.stages['generation']['diffusion'] == {**full, 'train_steps': 10} and len(full) > 2
    merged = load_experiment(ROOT / 'experiments/defect.yaml', ['profile=full', 'generation.diffusion={lr: 0.01}'], acc)
    assert merged.stages['generation']['diffusion'] == {**full, 'lr': 0.01}  # a mapping merges too
    only = load_experiment(ROOT / 'experiments/defect.yaml', ['profile=full', 'generation.diffusion=!replace {lr: 0.01}'], acc)
    assert only.stages['generation']['diffusion'] == {'lr': 0.01}


def _own(tmp_path, name, source, n=12):
    exp = {'exp_id': name, 'device': 'cpu', 'domain': {'dataset': 'parts', 'image_size': 16, 'n_per_class': 3, 'n_val_per_class': 2,
                                                      'source': source}}
    p = tmp_path / f'{name}.yaml'
    p.write_text(yaml.safe_dump(exp))
    return p


def test_a_label_typo_and_a_file_outside_the_folder_are_named(tmp_path):
    root = demo_folder(tmp_path / 'parts', n=12)
    rows = [f'{p.relative_to(root)},{p.parent.name}' for p in sorted(root.rglob('*.png')) if not p.stem.endswith('_mask')]
    rows[5] = rows[5].rsplit(',', 1)[0] + ',scrach'
    (root / 'typo.csv').write_text('image,label\n' + '\n'.join(rows) + '\n')
    proc = synthnb('run', _own(tmp_path, 'typo', {'format': 'folder', 'path': 'parts', 'manifest': 'typo.csv'}), '--until', 'domain',
                   '--runs-dir', tmp_path / 'runs', env={'SYNTHNB_DATA': str(tmp_path)})
    assert proc.returncode == 1 and "typo.csv row 7: label 'scrach' appears in only 1 of 36 rows (did you mean 'scratch'?)" in proc.stderr
    assert len(proc.stderr[proc.stderr.index('error:'):].strip().splitlines()) <= 6, proc.stderr  # after the stage's progress
    assert not (tmp_path / 'runs' / 'typo' / '01_domain' / 'manifest.json').exists() or 'failed' in (
        tmp_path / 'runs' / 'typo' / '01_domain' / 'manifest.json').read_text()


def test_a_changed_file_outside_the_source_folder_reruns_stage_1(tmp_path):
    "A manifest row naming ../outside.png is refused, unless the card allows it; then a change to that file re-runs stage 1."
    root = demo_folder(tmp_path / 'parts', n=12)
    imgs = [p for p in sorted(root.rglob('*.png')) if not p.stem.endswith('_mask')]
    outside = tmp_path / 'outside.png'
    outside.write_bytes(imgs[0].read_bytes())
    rows = ['../outside.png,' + imgs[0].parent.name] + [f'{p.relative_to(root)},{p.parent.name}' for p in imgs[1:]]
    (root / 'm.csv').write_text('image,label\n' + '\n'.join(rows) + '\n')
    env, runs = {'SYNTHNB_DATA': str(tmp_path), **NO_CACHE}, tmp_path / 'runs'
    src = {'format': 'folder', 'path': 'parts', 'manifest': 'm.csv'}
    refused = synthnb('run', _own(tmp_path, 'out', src), '--until', 'domain', '--runs-dir', runs, env=env)
    assert refused.returncode == 1 and '../outside.png lies outside the source folder' in refused.stderr, refused.stderr
    assert len(refused.stderr[refused.stderr.index('error:'):].strip().splitlines()) <= 6, refused.stderr
    cfg = _own(tmp_path, 'out', {**src, 'outside_files': True})
    first = synthnb('run', cfg, '--until', 'domain', '--runs-dir', runs, env=env)
    assert first.returncode == 0, first.stderr
    files = json.loads((runs / 'out' / '01_domain' / 'files.json').read_text())
    assert files['../outside.png'] == hashlib.sha256(outside.read_bytes()).hexdigest()
    assert 'up to date, skipped' in synthnb('run', cfg, '--until', 'domain', '--runs-dir', runs, env=env).stderr
    outside.write_bytes(imgs[1].read_bytes())  # another image, in place
    again = synthnb('run', cfg, '--until', 'domain', '--runs-dir', runs, env=env)
    assert again.returncode == 0 and '01_domain: running (its input data changed)' in again.stderr, again.stderr
    files = json.loads((runs / 'out' / '01_domain' / 'files.json').read_text())
    assert files['../outside.png'] == hashlib.sha256(imgs[1].read_bytes()).hexdigest()


def test_a_damaged_manifest_or_a_changed_parameter_reruns_the_stage_saying_why(tmp_path, data_dir):
    env, runs = {'SYNTHNB_DATA': str(data_dir), **NO_CACHE}, tmp_path / 'runs'
    run = lambda *p: synthnb('run', HC, '-p', 'exp_id=why', *p, '--until', 'domain', '--runs-dir', runs, env=env)
    assert '01_domain: running (first run)' in (first := run()).stderr, first.stderr
    m = runs / 'why' / '01_domain' / 'manifest.json'
    m.write_text(m.read_text()[:100])  # truncated
    proc = run()
    assert proc.returncode == 0 and f'01_domain: running ({m} is damaged)' in proc.stderr, proc.stderr
    assert json.loads(m.read_text())['status'] == 'complete'
    proc = run('-p', 'domain.n_per_class=7')
    assert 'running (parameters changed: n_per_class 20 → 7)' in proc.stderr, proc.stderr
    (runs / 'why' / '01_domain' / 'train.npz').write_bytes(b'flipped')
    assert 'running (artifact 01_domain/train.npz changed on disk)' in run('-p', 'domain.n_per_class=7').stderr


def test_killing_only_the_main_process_takes_papermill_and_the_kernel_with_it(tmp_path, data_dir):
    "SIGKILL to the `synthnb run` process alone: its papermill child and kernel are gone at once, and an immediate re-run completes."
    env = {**os.environ, 'SYNTHNB_DATA': str(data_dir), **NO_CACHE}
    args = [sys.executable, '-m', 'synthnb', 'run', HC, '-p', 'exp_id=orphans', *LIGHT, '--runs-dir', str(tmp_path)]
    p = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, kids = time.time() + 120, []
    cmd = lambda pid: Path(f'/proc/{pid}/cmdline').read_bytes().replace(b'\0', b' ').decode(errors='replace')
    while time.time() < deadline and p.poll() is None:
        kids = _descendants(p.pid)
        try:
            if any('ipykernel' in cmd(k) for k in kids): break
        except OSError: pass
        time.sleep(0.2)
    assert kids and p.poll() is None, 'no kernel was started'
    time.sleep(1)
    kids = _descendants(p.pid)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    deadline = time.time() + 1  # before the guard: 2-13 s, an immediate re-run overlapping them
    while time.time() < deadline and any(_alive(k) for k in kids): time.sleep(0.02)
    alive = [cmd(k)[:80] for k in kids if _alive(k)]
    assert not alive, f'still running 1 s after the main process died: {alive}'
    again = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and 'waiting for the lock' not in again.stderr, again.stderr[-2000:]


def _alive(pid: int) -> bool:
    "Running, not a zombie waiting to be reaped."
    try: return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError: return False


def test_diffusion_and_hybrid_write_identical_bytes_run_after_run(tmp_path, data_dir):
    """Two runs of stages 1-2 with the diffusion and hybrid generators: every artifact (models and their configs too) has the same
    sha256, and the metrics are the same but for wall-clock timings."""
    env = {'SYNTHNB_DATA': str(data_dir), **NO_CACHE}
    tiny = ['-p', 'generation.generators=[diffusion, hybrid]', '-p', 'generation.n_synthetic_per_class=8', '-p', 'generation.diffusion.train_steps=6',
            '-p', 'generation.diffusion.ddim_steps=3', '--until', 'generation']
    digests, metrics = [], []
    for name in ('same-a', 'same-b'):
        proc = synthnb('run', HC, '-p', f'exp_id={name}', *tiny, '--runs-dir', tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        m = json.loads((tmp_path / name / '02_generation' / 'manifest.json').read_text())
        digests.append({k: a['sha256'] for k, a in m['artifacts'].items() if a['stage'] == 'generation' and k != 'metrics'})
        metrics.append(no_timings(json.loads((tmp_path / name / '02_generation' / 'metrics.json').read_text())))
    assert any('diffusion/config' in k for k in digests[0]) and any('hybrid/config' in k for k in digests[0])
    assert digests[0] == digests[1], sorted(k for k in digests[0] if digests[0][k] != digests[1].get(k))
    assert metrics[0] == metrics[1]  # the same numbers; only wall-clock timings differ


def test_a_changed_external_set_reruns_stage_2(tmp_path, data_dir):
    "Stage 2 reads an external set from disk: a change to that file re-runs stage 2 (its key fingerprints it)."
    import numpy as np
    env, runs = {'SYNTHNB_DATA': str(data_dir), **NO_CACHE}, tmp_path / 'runs'
    base = ['run', HC, '-p', 'exp_id=ext', '--runs-dir', runs]
    assert synthnb(*base, '--until', 'domain', env=env).returncode == 0
    train, ext = np.load(runs / 'ext' / '01_domain' / 'train.npz'), tmp_path / 'made-elsewhere.npz'
    np.savez(ext, images=train['images'], labels=train['labels'])
    run = lambda: synthnb(*base, '-p', 'generation.generators=[external]', '-p', f'generation.external={{path: {ext}}}',
                          '--until', 'generation', env=env)
    assert run().returncode == 0 and '02_generation: up to date, skipped' in run().stderr
    np.savez(ext, images=255 - train['images'], labels=train['labels'])
    proc = run()
    assert proc.returncode == 0 and '02_generation: running (its input data changed)' in proc.stderr, proc.stderr
