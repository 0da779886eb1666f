"""End-to-end: both experiments through the CLI, skipping, resuming, overrides and failures."""
import json
import os
import signal
import subprocess
import sys
import time

from pathlib import Path

import nbformat
import numpy as np
import pytest

from conftest import LIGHT, NO_CACHE, ROOT, check_complete_run, no_timings, synthnb
from synthnb.core.config import STAGES, stage_folder

pytestmark = pytest.mark.notebooks


def test_healthcare_smoke(healthcare_run, data_dir):
    run_dir, proc = healthcare_run
    metrics = check_complete_run(run_dir)
    r = json.loads((run_dir / '06_training' / 'manifest.json').read_text())['runner']
    assert r['cpu_seconds'] >= 0.5 * r['wall_seconds'], r  # the kernel's CPU time is counted (papermill's own is a few %)
    last = proc.stdout.strip().splitlines()[-12:]  # the run ends with its answer: the evidence step's headline (one chain)
    assert any(line.startswith('| real_only |') for line in last) and any('(chosen on validation)' in line for line in last), proc.stdout[-2000:]
    assert (run_dir / 'evidence' / 'report.ipynb').exists() and json.loads((run_dir / 'evidence' / 'summary.json').read_text())['chains'] == 1
    # 20 real X-rays per class already separate the classes well above chance (about 0.8 in our runs)
    assert metrics['real_only']['summary']['roc_auc']['mean'] > 0.65, metrics['real_only']['summary']
    m = json.loads((run_dir / '01_domain' / 'manifest.json').read_text())
    # the run records the sha256 of the file it read: the official release or the documented rebuild, whichever is installed
    import hashlib
    from synthnb.core.data import PNEUMONIA_VERSIONS
    sha = hashlib.sha256((data_dir / 'pneumoniamnist' / 'pneumoniamnist.npz').read_bytes()).hexdigest()
    assert m['data']['checksums']['pneumoniamnist.npz'] == sha and sha in {v.sha256 for v in PNEUMONIA_VERSIONS}


def test_second_run_skips_everything(healthcare_run, runs_dir, data_dir):
    proc = synthnb('run', 'experiments/healthcare.yaml', '--runs-dir', runs_dir, env={'SYNTHNB_DATA': str(data_dir)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count('up to date, skipped') == 6, proc.stderr


def test_test_split_never_reaches_stages_2_to_5(healthcare_run):
    run_dir, _ = healthcare_run
    test_hashes = set(np.load(run_dir / '01_domain' / 'test.npz')['hashes'])
    train = np.load(run_dir / '01_domain' / 'train.npz')
    assert not test_hashes & set(train['hashes'])
    from synthnb.stages.domain import image_hashes
    for stage, art in [('02_generation', 'synthetic'), ('04_augmentation', 'synthetic_aug'), ('04_augmentation', 'real_aug'), ('05_integration', 'train_mix')]:
        assert not test_hashes & set(image_hashes(np.load(run_dir / stage / f'{art}.npz')['images'])), f'{art} holds a test image'
    for s in STAGES[1:5]:
        inputs = json.loads((run_dir / stage_folder(s) / 'manifest.json').read_text())['inputs']
        assert not {'test', 'pool'} & set(inputs), f'{s} read held-out data: {inputs}'
    assert 'test' in json.loads((run_dir / '06_training' / 'manifest.json').read_text())['inputs']


def test_override_reruns_only_downstream(healthcare_run, runs_dir, data_dir):
    "A copy of the healthcare smoke run (restored from the stage cache), then one stage-6 parameter changed: only stage 6 runs."
    base = synthnb('run', 'experiments/healthcare.yaml', '--runs-dir', runs_dir, '-p', 'exp_id=override', env={'SYNTHNB_DATA': str(data_dir)})
    assert base.returncode == 0 and base.stderr.count('restored from the stage cache') == 6, base.stderr[-3000:]
    m = json.loads((runs_dir / 'override' / '06_training' / 'manifest.json').read_text())
    assert m['runner']['restored_from'] and (runs_dir / 'override' / '06_training' / 'report.ipynb').exists()
    proc = synthnb('run', 'experiments/healthcare.yaml', '--runs-dir', runs_dir, '-p', 'training.steps=30', '-p', 'exp_id=override',
                   '-p', 'training.seeds=[0]', '-p', 'training.robustness=false', env={'SYNTHNB_DATA': str(data_dir)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count('up to date, skipped') == 5 and '06_training: done' in proc.stderr
    m = json.loads((runs_dir / 'override' / '06_training' / 'manifest.json').read_text())
    assert m['parameters']['steps'] == 30
    h = json.loads((runs_dir / 'healthcare' / '06_training' / 'manifest.json').read_text())
    assert h['parameters']['steps'] == 40, 'the shared healthcare run is never modified'


def _artifact_hashes(run_dir):
    "stage folder -> {artifact: sha256} of the artifacts each stage wrote itself."
    out = {}
    for s in STAGES:
        m = json.loads((run_dir / stage_folder(s) / 'manifest.json').read_text())
        out[stage_folder(s)] = {k: a['sha256'] for k, a in m['artifacts'].items() if a['stage'] == s and k != 'metrics'}
    return out


def _metrics(run_dir, stage):
    "A stage's metrics without wall-clock timings."
    return no_timings(json.loads((run_dir / stage_folder(stage) / 'metrics.json').read_text()))


def test_run_killed_mid_stage_resumes(light_run, runs_dir, data_dir):
    """Killed in stage 4, run again: stages 1-3 are kept, the rest runs, and the result equals the uninterrupted run's.
    Both runs compute every stage from scratch (no cache), so this is also the reproducibility test: the same configuration
    gives every array, model and figure with the same sha256, and the same metrics."""
    args = [sys.executable, '-m', 'synthnb', 'run', 'experiments/healthcare.yaml', '-p', 'exp_id=killed', *LIGHT, '--runs-dir', str(runs_dir)]
    env = {**os.environ, 'SYNTHNB_DATA': str(data_dir), **NO_CACHE}
    p = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    target = runs_dir / 'killed' / '04_augmentation' / 'report.ipynb'
    deadline = time.time() + 300
    while not target.exists() and time.time() < deadline and p.poll() is None: time.sleep(0.2)
    assert target.exists(), 'the run never reached stage 4'
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert not (runs_dir / 'killed' / '06_training' / 'manifest.json').exists()
    proc = synthnb('run', 'experiments/healthcare.yaml', '-p', 'exp_id=killed', *LIGHT, '--runs-dir', runs_dir,
                   env={'SYNTHNB_DATA': str(data_dir), **NO_CACHE})
    assert proc.returncode == 0, proc.stderr
    assert all(f'{s}: up to date, skipped' in proc.stderr for s in ('01_domain', '02_generation', '03_evaluation'))
    assert '04_augmentation: running' in proc.stderr and '06_training: done' in proc.stderr
    assert 'restored' not in proc.stderr
    a, b = _artifact_hashes(light_run), _artifact_hashes(runs_dir / 'killed')
    assert sum(len(v) for v in a.values()) >= 15
    assert a == b, {s: sorted(k for k in a[s] if a[s][k] != b[s].get(k)) for s in a}  # a resumed run equals an uninterrupted one
    for s in ('evaluation', 'training'): assert _metrics(runs_dir / 'killed', s) == _metrics(light_run, s)


def test_failing_stage_keeps_report_and_exits_nonzero(runs_dir, data_dir):
    proc = synthnb('run', 'experiments/healthcare.yaml', '-p', 'exp_id=fails', '-p', 'domain.n_per_class=100000', '-v', '--runs-dir', runs_dir,
                   env={'SYNTHNB_DATA': str(data_dir)})
    assert proc.returncode == 1
    assert 'stage 01_domain failed' in proc.stderr and 'Too few pool images' in proc.stderr
    assert 'Traceback' in proc.stderr  # -v shows it (test_missing_data_is_a_clear_error: without -v it does not)
    nb = nbformat.read(runs_dir / 'fails' / '01_domain' / 'report.ipynb', as_version=4)
    assert any(o.output_type == 'error' for c in nb.cells if c.cell_type == 'code' for o in c.outputs)
    assert not (runs_dir / 'fails' / '02_generation').exists()


def test_missing_data_is_a_clear_error(runs_dir, tmp_path):
    "One short error without -v (the message, the stage, the report path); the traceback with -v."
    proc = synthnb('run', 'experiments/healthcare.yaml', '-p', 'exp_id=nodata', '--runs-dir', runs_dir, env={'SYNTHNB_DATA': str(tmp_path)})
    assert proc.returncode == 1
    assert 'Missing data file' in proc.stderr and 'SYNTHNB_DATA' in proc.stderr and 'stage 01_domain failed' in proc.stderr
    shown = [l for l in proc.stderr.splitlines() if l.strip() and not l.startswith('Executing:')]  # the bar redraws one terminal line
    assert 'Traceback' not in proc.stderr and len(shown) <= 10, proc.stderr
    assert 'report: ' in proc.stderr and '-v' in proc.stderr


def test_progress_reaches_the_terminal_while_the_stage_runs(runs_dir, data_dir):
    """papermill's cell bar arrives while stage 1 is still running (before its manifest says complete), not replayed at the end;
    the same run has tracking on, and its kernel mirrors the stage into TensorBoard."""
    env = {**os.environ, 'SYNTHNB_DATA': str(data_dir)}
    env.pop('SYNTHNB_STAGE_CACHE', None)
    manifest = runs_dir / 'live' / '01_domain' / 'manifest.json'
    proc = subprocess.Popen([sys.executable, '-m', 'synthnb', 'run', 'experiments/healthcare.yaml', '-p', 'exp_id=live', '-p', 'tracking=tensorboard', '--until', 'domain',
                             '--force', '--runs-dir', str(runs_dir)], cwd=ROOT, env=env, stderr=subprocess.PIPE)
    seen = b''
    try:
        while b'Executing' not in seen:
            chunk = os.read(proc.stderr.fileno(), 4096)
            assert chunk, f"the command ended before any progress: {seen.decode(errors='replace')}"
            seen += chunk
        assert proc.poll() is None, 'the command had already ended when its first progress arrived'
        assert not manifest.exists() or json.loads(manifest.read_text())['status'] != 'complete'
    finally: seen += proc.communicate()[1]
    assert proc.returncode == 0 and b'01_domain: done' in seen, seen.decode(errors='replace')[-2000:]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(
        str(runs_dir / 'live' / 'tracking' / 'live' / '01_domain'),
        size_guidance={'scalars': 0, 'images': 0},
    )
    events.Reload()
    assert events.Tags()['scalars'] and events.Tags()['images']  # the profile's numbers and figures



def test_run_writes_one_html_report(light_run):
    "A finished run writes runs/<exp_id>/report.html: header and headline, contents, a section per stage, outputs only."
    page = (light_run / 'report.html').read_text()
    for s in STAGES: assert f'id="{stage_folder(s)}"' in page and f'href="#{stage_folder(s)}"' in page, s
    assert 'class="jp-InputArea' not in page and 'class="input_area' not in page  # no code inputs (nor prompts)
    assert 'result = run_evaluation(' not in page  # a stage report's code stays out
    assert '<strong>profile</strong> <code>smoke</code>' in page and 'light' in page
    assert 'Δ vs real-only' in page and '(chosen on validation)' in page  # the evidence headline (one chain here)
    assert 'validation roc_auc' in page and 'Δ best synthetic − real only' not in page  # stage 6: validation only
    assert 'data:image/png;base64,' in page and '<img src="figures' not in page  # figures inlined


@pytest.mark.browser
def test_report_html_opens_on_the_headline_in_a_browser(light_run, tmp_path):
    """In headless Chromium at 1280×900, report.html's first screen shows the evidence headline and a figure, and no source
    code or warning text. The screenshot is kept: in $SYNTHNB_SCREENSHOTS, else the test's folder."""
    pytest.importorskip('playwright.sync_api')
    from playwright.sync_api import sync_playwright
    from test_docs_site import CHROMIUM, FIRST_SCREEN, launch_chromium
    if not Path(CHROMIUM).exists(): pytest.skip('needs Debian chromium (apt-get install chromium)')
    shots = Path(os.environ.get('SYNTHNB_SCREENSHOTS') or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={'width': 1280, 'height': 900})
        page.goto((light_run / 'report.html').as_uri(), wait_until='load')
        first = page.evaluate(FIRST_SCREEN)
        page.screenshot(path=str(shots / 'report_html_first_screen.png'))
        browser.close()
    assert 'Δ vs real-only' in first['text'] and '(chosen on validation)' in first['text'], first['text'][:2000]
    assert first['images'] >= 1, 'no figure on the first screen'
    assert first['code'] == 0 and 'Warning' not in first['text'] and 'import ' not in first['text'], first['text'][:2000]


def test_reports_open_with_their_results(light_run):
    """Every stage report imports the package instead of re-defining it, hides its code and keeps Python warnings in its
    manifest, not its outputs; stage 6's opens (after the header) with its results: every arm on validation."""
    for s in STAGES:
        nb = nbformat.read(light_run / stage_folder(s) / 'report.ipynb', as_version=4)
        code = [c for c in nb.cells if c.cell_type == 'code']
        assert not any('#| export' in c.source or '#| default_exp' in c.source for c in nb.cells), s
        assert any(c.source.startswith("# this stage's definitions are the package's") for c in code), s
        assert all('source_hidden' in c.metadata.get('jupyter', {}) for c in code), s
        stderr = [o.text for c in code for o in c.outputs if o.output_type == 'stream' and o.name == 'stderr']
        assert not any('Warning' in t for t in stderr), (s, stderr)
        warnings = json.loads((light_run / stage_folder(s) / 'manifest.json').read_text())['warnings']
        assert isinstance(warnings, list) and all(set(w) == {'category', 'message', 'count'} for w in warnings), warnings
    nb = nbformat.read(light_run / '06_training' / 'report.ipynb', as_version=4)
    header = next(i for i, c in enumerate(nb.cells) if c.source.startswith('**Experiment**'))
    first = next(c for c in nb.cells[header + 1:] if c.cell_type == 'code' and c.outputs)
    assert 'results-summary' in first.metadata.tags and 'validation roc_auc' in first.outputs[0].data['text/markdown']
    params = next(i for i, c in enumerate(nb.cells) if 'parameters' in c.metadata.get('tags', []))
    assert nb.cells.index(first) < params and 'injected-parameters' in nb.cells[params + 1].metadata.tags


def test_a_failed_generator_is_not_mixed_and_the_run_finishes(runs_dir, data_dir):
    """With the gate enforced, the `noise` control fails stage 3's gate: it reaches no later stage, stage 6 has no
    synthetic arm, and the terminal names the failed generator and its reasons. (The calibrated simulator passes the
    gate now, so it can no longer play the failed generator here.)"""
    proc = synthnb('run', 'experiments/healthcare.yaml', '-p', 'exp_id=gated', *LIGHT, '-p', 'evaluation.gate=enforce',
                   '-p', 'generation.generators=[noise]', '--runs-dir', runs_dir, env={'SYNTHNB_DATA': str(data_dir), **NO_CACHE})
    assert proc.returncode == 0, proc.stderr[-3000:]
    gate = json.loads((runs_dir / 'gated' / '03_evaluation' / 'metrics.json').read_text())['gate']
    assert gate['failed'] == ['noise'], gate
    m = json.loads((runs_dir / 'gated' / '06_training' / 'metrics.json').read_text())
    assert not any(a.startswith('synthetic:') for a in m) and m['headline'] == {}  # no synthetic image, no synthetic arm
    assert 'generator `noise` **failed** the quality gate (not mixed, not ranked)' in proc.stdout


def test_ratio_zero_reproduces_real_only(light_run, runs_dir, data_dir):
    proc = synthnb('run', 'experiments/healthcare.yaml', '-p', 'exp_id=ratio0', '-p', 'integration.ratio=0', *LIGHT,
                   '--runs-dir', runs_dir, env={'SYNTHNB_DATA': str(data_dir)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((runs_dir / 'ratio0' / '06_training' / 'metrics.json').read_text())
    assert m['synthetic:all']['n_train'] == m['real_only']['n_train']
    assert m['synthetic:all']['per_seed'] == m['real_only']['per_seed']  # same data, same seed: the same model, exactly


def test_feedback_loop_changes_next_iteration(light_run, runs_dir, data_dir):
    """Two iterations: the `noise` control fails the quality gate and is dropped (it cannot learn more), stage 6's
    class-count change is applied, stage 1 is shared, and the loop compares validation (never test) between them."""
    proc = synthnb('run', 'experiments/healthcare.yaml', '-p', 'exp_id=loop', '--iterations', '2', *LIGHT,
                   '-p', 'generation.generators=[simulation, noise]', '--runs-dir', runs_dir, env={'SYNTHNB_DATA': str(data_dir)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    hist = json.loads((runs_dir / 'loop' / 'feedback.json').read_text())
    assert [h['iteration'] for h in hist] == [1, 2] and hist[0]['applied'] == []
    assert hist[0]['gate']['noise']['verdict'] == 'failed' and hist[0]['metric'] == 'roc_auc'
    drop = next(a for a in hist[1]['applied'] if a['key'] == 'generation.generators')
    assert 'noise' not in drop['new'] and '`noise`' in drop['reason']
    m2 = json.loads((runs_dir / 'loop-iter2' / '06_training' / 'metrics.json').read_text())
    assert hist[1]['arms']['real_only'] == m2['real_only']['val_summary']['roc_auc']['mean']  # validation, not test
    assert 'validation roc_auc of the best arm' in (runs_dir / 'loop' / 'feedback.md').read_text()
    change = next(a for a in hist[1]['applied'] if a['key'].startswith('generation.class_counts.'))
    cls = change['key'].rsplit('.', 1)[1]
    gen1 = json.loads((runs_dir / 'loop' / '02_generation' / 'manifest.json').read_text())['parameters']
    gen2 = json.loads((runs_dir / 'loop-iter2' / '02_generation' / 'manifest.json').read_text())['parameters']
    assert gen1['class_counts'].get(cls, gen1['n_synthetic_per_class']) * 2 == gen2['class_counts'][cls]
    # stage 1 (the scarce set and the test split) is shared, not re-drawn
    assert proc.stderr.count('01_domain: up to date, skipped') == 1
    d1, d2 = (json.loads((runs_dir / e / '01_domain' / 'manifest.json').read_text()) for e in ('loop', 'loop-iter2'))
    assert d1['artifacts']['test']['sha256'] == d2['artifacts']['test']['sha256']
    assert (runs_dir / 'loop' / 'feedback.md').read_text().count('\n') >= 4


def test_protocol_chains_redraw_the_scarce_set_and_the_evidence_reads_them(light_run, runs_dir, data_dir):
    """Two replicate chains and a learning-curve point (and one the pool cannot give), on a 2-worker LocalCluster: each
    chain draws its own scarce set and refits its generator, the test split never moves, the evidence step pairs the
    arms over chains and the terminal ends with its headline; run again, nothing is re-run."""
    args = ('run', 'experiments/healthcare.yaml', '-p', 'exp_id=chains', *LIGHT, '-p', 'training.arms=[real_only, synthetic, ceiling]',
            '-p', 'protocol.chains=2', '-p', 'protocol.curve=[2, 5000]', '-p', 'protocol.curve_chains=5', '--workers', '2',
            '--runs-dir', runs_dir)
    proc = synthnb(*args, env={'SYNTHNB_DATA': str(data_dir)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs_dir / 'chains'
    rec = json.loads((run / 'protocol.json').read_text())
    assert len(rec['chains']) == 2 + 5 and all(c['status'] == 'complete' for c in rec['chains'].values()), rec['chains']
    assert list(rec['curve_skipped']) == ['5000'] and 'Too few pool images' in rec['curve_skipped']['5000']  # dropped before any run
    h5 = lambda d, a: set(np.load(d / '01_domain' / f'{a}.npz')['hashes'])
    r1 = run / 'chains' / 'r01'
    assert h5(run, 'train') != h5(r1, 'train'), 'each chain draws its own scarce set'
    for d in (run, r1):
        assert not h5(d, 'train') & (h5(d, 'val') | h5(d, 'test')), f'{d}: the scarce set touches validation or test images'
    assert h5(r1, 'test') == h5(run, 'test'), 'the test split never moves'
    syn = lambda d: json.loads((d / '02_generation' / 'manifest.json').read_text())['artifacts']['synthetic']['sha256']
    assert syn(run) != syn(r1), 'each chain refits its generators on its own draw'
    s = json.loads((run / 'evidence' / 'summary.json').read_text())
    assert s['chains'] == 2 and s['selected'] == 'synthetic:all' and set(s['arms']) == {'real_only', 'synthetic:all', 'ceiling'}
    rows = {r['arm']: r for r in s['comparison']}
    assert set(rows) == {'synthetic:all', 'ceiling'} and all(-1 <= r['ci_low'] <= r['delta'] <= r['ci_high'] <= 1 for r in rows.values())
    assert s['worth'].get('note') or s['worth'].get('text')  # 2/class (5 draws) and 20/class (the chains): a curve of two points
    report = nbformat.read(run / 'evidence' / 'report.ipynb', as_version=4)  # the package imported, not re-defined; no code shown
    code = [c for c in report.cells if c.cell_type == 'code']
    assert not any(c.source.lstrip().startswith(('def ', '#| export')) for c in code), 'the evidence report re-defines the package'
    assert all(c.metadata['jupyter']['source_hidden'] for c in code if 'parameters' not in str(c.metadata.get('tags')))
    last = proc.stdout.strip().splitlines()
    assert any(line.startswith('| synthetic:all (chosen on validation) |') for line in last[-12:]), proc.stdout[-2000:]
    again = synthnb(*args, env={'SYNTHNB_DATA': str(data_dir)})
    assert again.returncode == 0 and '7 already complete, 0 to run' in again.stderr, again.stderr[-2000:]
