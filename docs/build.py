"""Build the docs site into `_site/` offline, without Quarto: `python docs/build.py`.

1. `nbdev.serve.proc_nbs` processes `nbs/` into `_proc/` (what `nbdev_proc_nbs` does, minus its Quarto install
   check): hidden and exported cells go, `show_doc` cells are inserted and rendered.
2. The notebooks in `nbs/` are executed as committed (smoke defaults, cwd `nbs/`, cells flagged `#| slow`/`#| gpu`
   or `#| eval: false` skipped, progress bars off) the way `nbdev_test` runs them: each in a fresh IPython shell inside
   a worker process (execnb), so torch and the other heavy imports load once per worker, not once per notebook. Their
   outputs are copied into the processed notebooks by cell id.
   The processed notebooks cannot run on their own: nbdev drops the `#| hide` dev-import cells.
   This execution is the notebooks' test: `make test` runs it instead of `nbdev_test`, so each notebook runs once per
   CI run. A notebook that fails is reported (notebook, cell, error) and its page built without outputs; the rest of
   the site still builds, and the script exits non-zero. Executed notebooks are cached in `_proc/_executed/` by notebook
   and package content, so a second build re-executes nothing that did not change.
3. The pages are staged in `_proc/_sphinx/` (Quarto ignores `_` folders): one page per notebook, named like Quarto's
   `output-file` (`config.html`, `generation.html`, ...) so nbdev's doc links resolve; `docs/*.md`; and a Reports section
   with the executed notebooks under `reports/` rendered with their outputs as run (results first, definitions left out).
4. Sphinx + myst-nb (execution off) renders them with `docs/conf.py`.
"""
import argparse, hashlib, json, os, re, shutil, subprocess, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS, NBS, PROC = ROOT / 'docs', ROOT / 'nbs', ROOT / '_proc'
STAGE, EXEC_CACHE = PROC / '_sphinx', PROC / '_executed'
SKIP_FLAGS = {'slow', 'gpu'}  # settings.ini tst_flags: the docs run what nbdev_test runs
DOC_HOST = 'https://synthnb.github.io/synthnb/'  # settings.ini doc_host + doc_baseurl, used by nbdev's doc links


def log(*a): print('[docs]', *a, flush=True)


def notebooks(): return sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith(('_', '.')))


def directives(src):
    "The `#| ...` lines at the top of a cell, as a dict."
    d = {}
    for line in src.splitlines():
        if not line.startswith('#|'): break
        k, *v = line[2:].strip().split(None, 1)
        d[k.rstrip(':')] = v[0].strip() if v else ''
    return d


def skip_cell(cell):
    d = directives(cell.source)
    return cell.cell_type == 'code' and (bool(SKIP_FLAGS & set(d)) or d.get('eval', '').lower() == 'false')


def _lib_hash():
    h = hashlib.sha256()
    for p in sorted((ROOT / 'synthnb').rglob('*.py')): h.update(p.read_bytes())
    return h.hexdigest()


def execute(path, timeout=1800):
    """Execute one notebook from nbs/ (cwd nbs/) as nbdev_test does; return (executed path or None, seconds, error or None).

    It runs in this worker process, in a fresh IPython shell (execnb's `CaptureShell`, what `nbdev_test` uses), not in
    a Jupyter kernel of its own: the heavy imports (torch, diffusers, kornia) are paid once per worker instead of once
    per notebook. Figures are PNG at the kernel's default resolution; each notebook's figures are closed after it."""
    from execnb.nbio import nb2dict, read_nb
    from execnb.shell import CaptureShell
    key = hashlib.sha256(path.read_bytes() + _lib_hash().encode() + os.environ.get('SYNTHNB_DATA', '').encode()).hexdigest()[:16]
    out = EXEC_CACHE / f'{path.stem}-{key}.ipynb'
    if out.exists(): return out, 0.0, None
    nb = read_nb(path)
    skipped = {}
    for c in nb.cells:
        if skip_cell(c): skipped[c.id], c.source = c.source, 'pass'
    t, here, main = time.time(), os.getcwd(), sys.modules['__main__']
    shell = CaptureShell(path, mpl_format='png', timeout=timeout)  # it makes its namespace __main__, as a kernel does
    try:
        os.chdir(NBS)
        shell.run_all(nb, exc_stop=True)
    except BaseException as e:  # the cell's own error (or TimeoutError): reported with the cell it came from
        cell = nb.cells[shell._cell_idx - 1] if getattr(shell, '_cell_idx', 0) else None
        where = f"cell {shell._cell_idx} ({cell.source.splitlines()[0][:60]!r}): " if cell is not None else ''
        lines = [line for line in str(e).splitlines() if line.strip()]
        return None, time.time() - t, f"{where}{type(e).__name__}: " + ' | '.join(lines[-3:])
    finally:
        os.chdir(here)
        sys.modules['__main__'] = main  # this worker's own, where the next task's function is found
        import matplotlib.pyplot as plt
        plt.close('all')
    for c in nb.cells:
        if c.id in skipped: c.source, c.outputs = skipped[c.id], []
    EXEC_CACHE.mkdir(parents=True, exist_ok=True)
    for old in EXEC_CACHE.glob(f'{path.stem}-*.ipynb'): old.unlink()
    nbformat.write(nbformat.from_dict(nb2dict(nb)), out)
    return out, time.time() - t, None


def _local_links(text):
    "nbdev's absolute doc links -> links relative to the site root (all notebook pages live there)."
    text = re.sub(r'\[([^\]]*)\]\(' + re.escape(DOC_HOST) + r'([\w.-]+\.html)(#[\w.-]*)?\)',
                  lambda m: f'<a href="{m[2]}{(m[3] or "")}">{_md_code(m[1])}</a>', text)
    return text.replace(DOC_HOST, '')


def _no_source_links(text):
    "show_doc's `[source](<git_url>/blob/...)` links removed: settings.ini's git_url names no published repository."
    return re.sub(r'\[source\]\(https?://[^)\s]*\)(\{[^}]*\})?\n*', '', text)


def _md_code(s): return re.sub(r'`([^`]*)`', r'<code>\1</code>', s)


def stage_notebook(proc_path, executed_path, dest_dir, toctree=None):
    "Turn one processed notebook into a myst-nb page with the executed outputs; return its page name."
    nb = nbformat.read(proc_path, as_version=4)
    ran = {c.id: c for c in nbformat.read(executed_path, as_version=4).cells} if executed_path else {}
    front, cells = {}, []
    for c in nb.cells:
        if c.cell_type == 'raw' and c.source.startswith('---'):
            front = yaml.safe_load(c.source.strip().strip('-')) or {}
            head = f"# {front.get('title', proc_path.stem)}"
            if front.get('description'): head += f"\n\n> {front['description']}"
            cells.append(nbformat.v4.new_markdown_cell(head))
            continue
        if c.cell_type == 'markdown': c.source = _local_links(c.source)
        if c.cell_type == 'code':
            c.pop('has_sd', None)  # nbdev's marker for inserted show_doc cells: not valid nbformat
            d = directives(c.source)
            tags = set(c.metadata.get('tags', []))
            if d.get('echo') == 'false': tags.add('remove-input')
            if d.get('output') == 'false': tags.add('remove-output')
            if d.get('include') == 'false': tags.add('remove-cell')
            c.source = '\n'.join(l for l in c.source.splitlines() if not l.startswith('#|'))
            if c.id in ran and not c.get('outputs'):
                c.outputs, c.execution_count = ran[c.id].outputs, ran[c.id].execution_count
            for o in c.get('outputs', []):
                if 'text/markdown' in o.get('data', {}):  # show_doc opens with a Quarto rule: not valid inside a cell
                    o.data['text/markdown'] = _no_source_links(_local_links(re.sub(r'^\s*---\s*\n', '', o.data['text/markdown'])))
            if tags: c.metadata['tags'] = sorted(tags)
        cells.append(c)
    if toctree: cells.append(nbformat.v4.new_markdown_cell(toctree))
    nb.cells = cells
    nb.metadata.setdefault('kernelspec', {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'})
    name = 'index' if proc_path.stem == 'index' else Path(front.get('output-file', proc_path.stem + '.html')).stem
    nbformat.write(nb, dest_dir / f'{name}.ipynb')
    return name


def case_headline(case_dir) -> list:
    "Markdown lines for one case on the reports index: its provenance and headline table (from publish_reports' summary.json / headline.md)."
    summary, table = case_dir / 'summary.json', case_dir / 'headline.md'
    if not summary.exists(): return []
    s = json.loads(summary.read_text())
    wall = sum(v for v in (s.get('wall_seconds') or {}).values() if v)
    profile, device = s.get('profile') or s.get('experiment', {}).get('profile', '?'), s.get('device_name') or s.get('device')
    p = s.get('protocol') or {}
    if s.get('evidence') and p.get('wall_seconds'):  # a protocol: its chains' wall time, and the commit of the evidence step
        ran = (f"{s['evidence']['chains']} replicate chains and the learning curve, {p['wall_seconds'] / 60:.0f} min of wall time; "
               f"evidence from commit `{str(p.get('evidence_commit') or '?')[:10]}`")
    else: ran = f"commit `{str((s.get('git') or {}).get('commit', '?'))[:10]}`, {wall / 60:.0f} min in all"
    lines = [f"## {s.get('case', case_dir.name)}", '', f"Profile `{profile}` on {device}: {ran}.", '']
    if table.exists(): lines += [table.read_text().strip(), '']
    if (case_dir / 'report.html').exists():  # copied beside the pages by `copy_run_reports`
        lines += [f'<a href="{case_dir.name}/run-report.html">The whole run on one page</a> (every stage\'s results, '
                  'the evidence headline on top; the HTML `synthnb run` writes), and each stage\'s report below.', '']
    return lines


def copy_run_reports(reports_dir, site_reports) -> int:
    "Copy each case's one-page run report (reports/<case>/report.html) into the built site as <case>/run-report.html."
    n = 0
    for f in sorted(Path(reports_dir).glob('*/report.html')):
        (site_reports / f.parent.name).mkdir(parents=True, exist_ok=True)
        # the site is read offline: no script from a CDN (nbconvert's page asks for require.js and MathJax)
        html = re.sub(r'<script[^>]*\ssrc="https?://[^"]*"[^>]*>\s*</script>', '', f.read_text(encoding='utf-8'))
        (site_reports / f.parent.name / 'run-report.html').write_text(html, encoding='utf-8')
        n += 1
    return n


RUN_HEADING = ('## run the stage', '## run the report')  # as in synthnb.orchestration.report_layout: where a stage's (a report's) run and results start


def report_page(nb, case: str = ''):
    """An executed report laid out for reading, outputs untouched: its title and run header, then the results (what
    follows `## Run the stage`), then how it ran (the stage call, whose output is its manifest summary, and the
    parameters). The definitions and their prose before the run are left out (they are the stage's own page); no
    code input is shown but the parameters'."""
    cells = nb.cells
    at = next((i for i, c in enumerate(cells) if c.cell_type == 'markdown' and c.source.lstrip().lower().startswith(RUN_HEADING)), None)
    if at is None: return nb
    head = [c for c in cells[:at] if c.cell_type == 'markdown'][:1]
    if case and head and head[0].source.startswith('# '): head[0].source = f'# {case} · ' + head[0].source[2:]  # distinct from the stage's page
    head += [c for c in cells[:at] if c.cell_type == 'markdown' and c.source.startswith('**Experiment**')]
    params = [c for c in cells[:at] if c.cell_type == 'code' and {'parameters', 'injected-parameters'} & set(c.metadata.get('tags', []))]
    runs = [c for c in cells[at + 1:] if c.cell_type == 'code' and c.source.lstrip().startswith('result = ')]
    body = [c for c in cells[at + 1:] if not any(c is r for r in runs)]
    for c in body + runs:
        if c.cell_type == 'code':
            c.metadata.setdefault('tags', []).append('remove-cell' if c.source.lstrip().startswith('#|') else 'remove-input')
    how = ('The stage call (its manifest: status, time, device, artifacts, inputs, versions, commit), then the notebook defaults '
           'and the values this run was given.' if runs else 'The notebook defaults and the values this report was given.')
    tail = [nbformat.v4.new_markdown_cell(f'## How this ran\n\n{how}')] + runs + params
    nb.cells = head + body + tail
    return nb


def stage_reports(reports_dir, dest):
    "Copy executed report notebooks (reports/<case>/<NN_stage>.ipynb) laid out as pages (`report_page`); write the Reports index."
    groups = {}
    for p in sorted(reports_dir.rglob('*.ipynb')) if reports_dir.exists() else []:
        if '.ipynb_checkpoints' in p.parts: continue
        rel = p.relative_to(reports_dir)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(report_page(nbformat.read(p, as_version=4), rel.parts[0] if len(rel.parts) > 1 else ''), dest / rel)
        groups.setdefault(rel.parts[0] if len(rel.parts) > 1 else 'other', []).append(rel.with_suffix('').as_posix())
    lines = ['# Reports', '',
             'Executed experiment notebooks committed under `reports/`, rendered as they were run (not re-executed). '
             'Each stage report ends with its manifest: parameters, device, package versions, git commit and data checksums.', '']
    if not groups:
        lines += ['No reports are committed yet. Run an experiment with `synthnb run experiments/healthcare.yaml -p profile=full` '
                  'and copy `runs/<exp_id>/<NN_stage>/report.ipynb` to `reports/<case>/<NN_stage>.ipynb`.', '']
    for case, pages in groups.items():
        lines += case_headline(reports_dir / case)
        lines += ['```{toctree}', f':caption: {case}', ':maxdepth: 1', '']
        lines += [f'{case} · {Path(pg).name} <{pg}>' for pg in pages] + ['```', '']
    dest.mkdir(parents=True, exist_ok=True)
    (dest / 'index.md').write_text('\n'.join(lines))
    return sum(len(v) for v in groups.values())


def api_reference(dest) -> str:
    "Write `api.md`: one autodoc section per public synthnb module (its __all__), so the site has a general index, search and objects.inv."
    import synthnb
    pkg = Path(synthnb.__file__).parent
    mods = sorted('.'.join(p.relative_to(pkg).with_suffix('').parts) for p in pkg.rglob('*.py') if not p.stem.startswith('_'))
    lines = ['# API reference', '', 'Every exported name of the package, module by module (the notebook pages show the same functions '
             'with their examples). The general index and the search cover them.', '']
    for m in mods:
        lines += [f'## synthnb.{m}', '', '```{eval-rst}', f'.. automodule:: synthnb.{m}', '   :members:', '```', '']
    (dest / 'api.md').write_text('\n'.join(lines))
    return 'api'


HOME_FALLBACK = '# synthnb\n\n> Notebook-first toolkit for synthetic training data from scarce real images.\n'


def main(reports='reports', out='_site', workers=2, clean=False, timeout=1800):
    t0 = time.time()
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    # each worker's kernel gets its share of the cores: torch's default (all of them) in every kernel oversubscribes
    # them (a newcomer's `make docs` took 18 min on 2 cores, 4 min with one thread per kernel)
    for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
        os.environ.setdefault(var, str(max(1, (os.cpu_count() or 1) // max(1, workers))))
    os.environ.setdefault('TQDM_DISABLE', '1')  # progress bars are for people waiting, not for the pages
    if clean: shutil.rmtree(PROC, ignore_errors=True)
    from nbdev.serve import proc_nbs  # the processing step of nbdev_proc_nbs, without its Quarto check
    # nbdev's style hint 'Found cells containing imports and other code' (one per example cell that imports what it
    # shows) repeats whole cells into the log: the build log keeps failures and timings only
    import warnings
    warnings.filterwarnings('ignore', message='Found cells containing imports', category=UserWarning)
    os.environ['PYTHONWARNINGS'] = 'ignore:Found cells containing imports:UserWarning'
    try: proc_nbs(n_workers=workers)
    except Exception as e:  # nbdev runs imports, exported cells and show_doc cells of every notebook; Quarto's nbdev_docs fails alike
        sys.exit(f'[docs] nbdev could not process the notebooks (nbdev_docs would fail too):\n{e}\n'
                 'Usual causes: a cell mixing imports with code that needs earlier results (move the imports to the import cell); '
                 'a @patch on a tuple of classes (annotate with A|B); an exported cell that must not run (add #| eval: false).')
    log(f'nbdev processed {len(list(PROC.glob("*.ipynb")))} notebooks into _proc/ ({time.time()-t0:.0f} s)')

    srcs = notebooks()
    order = sorted(srcs, key=lambda p: -p.stat().st_size)  # big (slow) notebooks first, so the workers finish together
    with ProcessPoolExecutor(max(1, workers)) as ex:
        executed = dict(zip([p.stem for p in order], ex.map(execute, order, [timeout] * len(order))))
    failed = {k: err for k, (_, _, err) in executed.items() if err}
    for k, (_, dt, err) in sorted(executed.items()):
        log(f'FAILED {k} after {dt:.0f} s: {err}' if err else f'executed {k}' + (f' in {dt:.0f} s' if dt else ' (cached)'))

    shutil.rmtree(STAGE, ignore_errors=True)
    STAGE.mkdir(parents=True)
    pages = [stage_notebook(PROC / f'{p.stem}.ipynb', executed[p.stem][0], STAGE) for p in srcs if p.stem != 'index']
    twice = sorted({pg for pg in pages if pages.count(pg) > 1})  # nbdev names a page by the file name without its number
    if twice: sys.exit(f'[docs] two notebooks would write the same page {twice}: rename one (06c_x and 13a_x are both x)')
    n_reports = stage_reports(ROOT / reports, STAGE / 'reports')
    for md in DOCS.glob('*.md'): shutil.copy2(md, STAGE / md.name)
    guides = sorted(md.stem for md in DOCS.glob('*.md'))
    api = api_reference(STAGE)
    toctree = '\n'.join(['```{toctree}', ':hidden:', ':caption: Guide', '', *guides, '```', '',
                         '```{toctree}', ':hidden:', ':caption: Notebooks', '', *pages, '```', '',
                         '```{toctree}', ':hidden:', ':caption: Reference', '', api, 'genindex', '```', '',
                         '```{toctree}', ':hidden:', ':caption: Results', '', 'reports/index', '```'])
    if (PROC / 'index.ipynb').exists(): stage_notebook(PROC / 'index.ipynb', executed.get('index', (None,))[0], STAGE, toctree)
    else: (STAGE / 'index.md').write_text(HOME_FALLBACK + '\n' + toctree)
    log(f'staged {len(pages)} notebook pages, {len(guides)} guides, {n_reports} reports in {STAGE.relative_to(ROOT)}')

    out = ROOT / out
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([sys.executable, '-m', 'sphinx', '-b', 'html', '-q', '-j', str(workers), '-c', str(DOCS),
                    '-d', str(PROC / '_doctrees'), str(STAGE), str(out)], check=True)
    (out / '.nojekyll').touch()
    copy_run_reports(ROOT / reports, out / 'reports')
    if not (out / 'favicon.ico').exists():  # browsers ask for it; a 404 is a console error
        from PIL import Image
        Image.new('RGB', (16, 16), (47, 111, 176)).save(out / 'favicon.ico')
    log(f'site written to {out.relative_to(ROOT)}/ in {time.time()-t0:.0f} s')
    if failed:
        sys.exit(f'[docs] {len(failed)} notebook(s) failed (their pages have no outputs):\n' + '\n'.join(f'  {k}: {e}' for k, e in failed.items()))


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--reports', default='reports', help='folder of executed report notebooks to publish')
    ap.add_argument('--out', default='_site', help='output folder')
    ap.add_argument('--workers', type=int, default=int(os.environ.get('SYNTHNB_DOCS_WORKERS', 2)))
    ap.add_argument('--clean', action='store_true', help='rebuild _proc/ and re-execute every notebook')
    ap.add_argument('--timeout', type=int, default=int(os.environ.get('SYNTHNB_CELL_TIMEOUT', 1800)), help='seconds one cell may run')
    a = ap.parse_args()
    main(a.reports, a.out, a.workers, a.clean, a.timeout)
