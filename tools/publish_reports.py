"""Copy the executed stage reports of a finished run into reports/<case>/ for the docs site.

Usage: python tools/publish_reports.py RUN_DIR CASE [--partial]      e.g. runs/healthcare-full healthcare
Refuses a run whose stages are not all complete unless --partial (then only completed stages are copied);
copies the evidence report (RUN_DIR/evidence/report.ipynb, when the protocol ran chains) to reports/<case>/evidence.ipynb
and the one-page run report (RUN_DIR/report.html) to reports/<case>/report.html;
also writes reports/<case>/summary.json (strict JSON: the evidence summary, chain 0's headline, device, commit, wall
time per stage) and reports/<case>/headline.md (the evidence headline, else chain 0's: what the docs' index shows).
"""
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from synthnb.core.config import STAGE_NOTEBOOKS  # noqa: E402
from synthnb.core.files import save_json  # noqa: E402  (strict JSON: NaN -> null)
from synthnb.stages.verdict import headline_markdown  # noqa: E402

STAGES = tuple(STAGE_NOTEBOOKS.values())  # run folders, in the order the stages run


def completed_manifests(run_dir, partial=False) -> dict:
    "stage -> manifest of each completed stage of `run_dir`, in order (stops at the first incomplete one with `partial`)."
    manifests = {}
    for s in STAGES:
        f = run_dir / s / 'manifest.json'
        m = json.loads(f.read_text()) if f.exists() else {}
        if m.get('status') != 'complete' or 'runner' not in m:
            if partial: break
            sys.exit(f'{run_dir / s} did not complete: not publishing')
        manifests[s] = m
    if not manifests: sys.exit(f'no completed stage in {run_dir}')
    return manifests


def protocol_times(run_dir) -> dict | None:
    "When a protocol's chains started and finished, their wall time, and the commit the evidence is published from."
    f = run_dir / 'protocol.json'
    if not f.exists(): return None
    import datetime
    from synthnb.core.runtime import git_commit
    rec = json.loads(f.read_text())
    t = [datetime.datetime.fromisoformat(rec[k]) for k in ('started', 'finished') if rec.get(k)]
    return {'started': rec.get('started'), 'finished': rec.get('finished'), 'chains': len(rec.get('chains', {})),
            'wall_seconds': (t[1] - t[0]).total_seconds() if len(t) == 2 else None, 'evidence_commit': git_commit()['commit']}


def publish(run_dir, case, partial=False):
    run_dir, dest = Path(run_dir), ROOT / 'reports' / case
    manifests = completed_manifests(run_dir, partial)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob('[0-9][0-9]_*.ipynb'):  # a stage report of an earlier run this one does not replace
        if old.stem not in manifests:
            old.unlink()
            print(f'removed stale {old.relative_to(ROOT)}')
    for s in manifests: shutil.copy(run_dir / s / 'report.ipynb', dest / f'{s}.ipynb')
    last = manifests[list(manifests)[-1]]
    prov = last['provenance']
    m6 = manifests.get('06_training', {'metrics': {}})['metrics']
    experiment = json.loads((run_dir / 'experiment.json').read_text())
    evidence = run_dir / 'evidence' / 'summary.json'
    if evidence.exists(): shutil.copy(run_dir / 'evidence' / 'report.ipynb', dest / 'evidence.ipynb')
    if (run_dir / 'report.html').exists(): shutil.copy(run_dir / 'report.html', dest / 'report.html')  # the one-page run report
    summary = {'case': case, 'run': run_dir.name, 'profile': experiment.get('profile'), 'experiment': experiment,
               'device': prov['device'], 'device_name': prov['device_name'], 'git': prov['git'],
               'wall_seconds': {s: manifests[s]['runner'].get('wall_seconds') for s in manifests},
               'stages_published': list(manifests), 'headline': m6.get('headline'),
               'evidence': json.loads(evidence.read_text()) if evidence.exists() else None, 'protocol': protocol_times(run_dir),
               'results_table': json.loads((run_dir / '06_training' / 'results_table.json').read_text()) if '06_training' in manifests else None}
    save_json(dest / 'summary.json', summary)
    if evidence.exists(): shutil.copy(run_dir / 'evidence' / 'headline.md', dest / 'headline.md')
    elif '06_training' in manifests: (dest / 'headline.md').write_text(headline_markdown(m6) + '\n')
    print(f'published {run_dir} -> {dest}')


if __name__ == '__main__':
    publish(*sys.argv[1:3], partial='--partial' in sys.argv)
