"""A stage notebook run in JupyterLab, through the browser UI: headless JupyterLab on 127.0.0.1 with a token and a free
port, Debian's chromium driven by Playwright, "Run All Cells" on nbs/05_integration.ipynb with its committed (smoke)
parameters, then save: the saved file equals the committed one (synthnb.core.hygiene's pre-save hook drops the outputs).

The notebook is copied into a temporary root (with autosave off) so the run can never write outputs into nbs/.
"""
import json, os, secrets, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import pytest

from test_docs_site import CHROMIUM, launch_chromium

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = 'nbs/05_integration.ipynb'

pytestmark = [pytest.mark.browser, pytest.mark.notebooks,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason='needs Debian chromium (apt-get install chromium)')]


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def lab(tmp_path_factory, data_dir):
    root, home = tmp_path_factory.mktemp('lab_root'), tmp_path_factory.mktemp('lab_home')
    (root / 'nbs').mkdir()
    shutil.copy2(ROOT / NOTEBOOK, root / NOTEBOOK)
    shutil.copy2(ROOT / 'settings.ini', root / 'settings.ini')
    settings = home / 'settings' / '@jupyterlab' / 'docmanager-extension'
    settings.mkdir(parents=True)
    (settings / 'plugin.jupyterlab-settings').write_text(json.dumps({'autosave': False}))
    token = secrets.token_hex(16)
    env = {**os.environ, 'SYNTHNB_DATA': str(data_dir), 'JUPYTERLAB_SETTINGS_DIR': str(home / 'settings'),
           'JUPYTERLAB_WORKSPACES_DIR': str(home / 'workspaces'), 'JUPYTER_RUNTIME_DIR': str(home / 'runtime')}
    log = open(home / 'lab.log', 'w')
    proc = None
    try:
        # a free port can be taken by another process before the server binds it: then start again on another one
        for attempt in range(3):
            port = free_port()
            proc = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', '--ip=127.0.0.1', f'--port={port}',
                                     f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={root}',
                                     '--LabApp.expose_app_in_browser=True', '--ServerApp.port_retries=0']
                                    + (['--allow-root'] if os.geteuid() == 0 else []),
                                    cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            url = f'http://127.0.0.1:{port}'
            for _ in range(120):
                try:
                    urllib.request.urlopen(f'{url}/api/status?token={token}', timeout=2).close()
                    break
                except OSError:
                    if proc.poll() is not None: break
                    time.sleep(0.5)
            if proc.poll() is None: break
            if 'already in use' not in (home / 'lab.log').read_text(): pytest.fail('JupyterLab exited: ' + (home / 'lab.log').read_text()[-3000:])
        else: pytest.fail('JupyterLab found no free port in 3 attempts: ' + (home / 'lab.log').read_text()[-3000:])
        if proc.poll() is not None: pytest.fail('JupyterLab did not start: ' + (home / 'lab.log').read_text()[-3000:])
        yield dict(url=url, token=token, root=root, log=home / 'lab.log')
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and the kernels it started (its own process group)
            try: proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def test_stage_notebook_runs_in_jupyterlab(lab):
    sync_api = pytest.importorskip('playwright.sync_api')
    before = (ROOT / NOTEBOOK).read_bytes()
    with sync_api.sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={'width': 1400, 'height': 1000})
        errors = []
        page.on('pageerror', lambda e: errors.append(str(e)))
        page.goto(f"{lab['url']}/lab/tree/{NOTEBOOK}?token={lab['token']}", wait_until='load')
        page.wait_for_selector('.jp-Notebook .jp-Cell', timeout=90_000)
        page.wait_for_function("() => window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'",
                               timeout=90_000)
        n_code = page.evaluate("() => { const m = window.jupyterapp.shell.currentWidget.content.model;"
                               " return Array.from(m.cells).filter(c => c.type === 'code').length; }")
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        # every code cell has an execution count and the kernel is idle again
        page.wait_for_function("""() => { const w = window.jupyterapp.shell.currentWidget;
            const cells = Array.from(w.content.model.cells).filter(c => c.type === 'code');
            return w.sessionContext.session.kernel.status === 'idle' && cells.every(c => c.executionCount !== null); }""",
                               timeout=420_000, polling=1000)
        summary = page.evaluate("""() => Array.from(window.jupyterapp.shell.currentWidget.content.model.cells)
            .filter(c => c.type === 'code').map(c => { const o = c.outputs.toJSON();
              return {types: o.map(x => x.output_type), mimes: o.flatMap(x => Object.keys(x.data || {})),
                      error: o.filter(x => x.output_type === 'error').map(x => x.ename + ': ' + x.evalue)}; })""")
        # save it as a researcher would: the pre-save hook (make install) writes it without outputs, as committed
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=60_000)
        page.locator('.jp-Notebook .jp-Cell').last.scroll_into_view_if_needed()
        shots = Path(os.environ.get('SYNTHNB_SCREENSHOTS') or lab['root'])
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / 'jupyterlab_05_integration.png'))
        rendered_imgs = page.eval_on_selector_all('.jp-OutputArea-output img', 'els => els.filter(i => i.naturalWidth > 0).length')
        browser.close()
    assert len(summary) == n_code > 0
    assert not [s['error'] for s in summary if s['error']], summary
    assert sum(bool(s['types']) for s in summary) >= 3, summary  # the examples, the run and the results show outputs
    assert any('image/png' in s['mimes'] for s in summary) and rendered_imgs > 0, summary
    assert not errors, errors
    assert (ROOT / NOTEBOOK).read_bytes() == before, 'the committed notebook must not be modified'
    cells = lambda nb: [(c['cell_type'], ''.join(c['source']), c.get('metadata', {}), c.get('outputs', []), c.get('execution_count'))
                        for c in nb['cells']]
    saved = json.loads((lab['root'] / NOTEBOOK).read_text())
    assert cells(saved) == cells(json.loads(before)), 'a notebook saved from JupyterLab must equal the committed one (no outputs, tags kept)'
