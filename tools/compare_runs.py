"""Compare two runs of the same experiment stage by stage: which artifacts have the same sha256, and which metrics differ.

Usage: python tools/compare_runs.py RUN_A RUN_B [--tolerance 1e-9]     e.g. runs-old/defect runs-new/defect

For a refactor that must not change behaviour: run the smoke profile at both commits (`--runs-dir`), then compare.
Stages are matched by stage name (from each manifest), so a renumbered stage folder still pairs with its old self.
Timings (`*_seconds`) are never compared. Exits 1 if any artifact or metric differs.
"""
import hashlib
import json
import math
import sys
from pathlib import Path


def stages(run_dir: Path) -> dict:
    "stage name -> its folder, for every stage folder of `run_dir` that has a manifest."
    return {json.loads((d / 'manifest.json').read_text())['stage']: d
            for d in sorted(run_dir.iterdir()) if (d / 'manifest.json').exists()}


def file_hash(f: Path) -> str:
    "sha256 of a file; of a JSON file, of its canonical form (diffusers writes the set `_use_default_values` unordered)."
    if f.suffix != '.json': return hashlib.sha256(f.read_bytes()).hexdigest()
    def canonical(d):
        if isinstance(d, list): return [canonical(v) for v in d]
        if not isinstance(d, dict): return d
        return {k: sorted(v) if k == '_use_default_values' else canonical(v) for k, v in d.items()}
    return hashlib.sha256(json.dumps(canonical(json.loads(f.read_text())), sort_keys=True).encode()).hexdigest()


def artifact_hashes(stage_dir: Path) -> dict:
    ("artifact -> hash of every file the stage wrote (inputs from upstream stages excluded; "
     "metrics.json is compared value by value instead).")
    m = json.loads((stage_dir / 'manifest.json').read_text())
    out = {k: file_hash(stage_dir.parent / a['path']) for k, a in m['artifacts'].items()
           if a.get('stage') == m['stage'] and k != 'metrics'}
    models = stage_dir / 'models'
    for f in sorted(models.rglob('*')) if models.exists() else []:
        if f.is_file(): out[str(f.relative_to(stage_dir))] = file_hash(f)
    return out


def flatten(d, prefix='') -> dict:
    "Nested metrics as {'a.b.c': leaf}, timings left out."
    out = {}
    for k, v in (d.items() if isinstance(d, dict) else enumerate(d)):
        key = f'{prefix}{k}'
        if str(k).endswith('_seconds'): continue
        if isinstance(v, (dict, list)) and v: out.update(flatten(v, key + '.'))
        else: out[key] = v
    return out


def same(a, b, tol: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol * max(1.0, abs(a), abs(b))
    return a == b


def compare(run_a, run_b, tol: float = 1e-9) -> dict:
    "stage -> {'artifacts': (identical, total, [differing]), 'metrics': (equal, total, [differing])}."
    sa, sb = stages(Path(run_a)), stages(Path(run_b))
    report = {}
    for stage in [s for s in sa if s in sb]:
        ha, hb = artifact_hashes(sa[stage]), artifact_hashes(sb[stage])
        keys = sorted(set(ha) | set(hb))
        diff_art = [k for k in keys if ha.get(k) != hb.get(k)]
        ma, mb = (flatten(json.loads((s[stage] / 'metrics.json').read_text())) for s in (sa, sb))
        mkeys = sorted(set(ma) | set(mb))
        diff_met = [k for k in mkeys if k not in ma or k not in mb or not same(ma[k], mb[k], tol)]
        report[stage] = {'artifacts': (len(keys) - len(diff_art), len(keys), diff_art),
                         'metrics': (len(mkeys) - len(diff_met), len(mkeys), diff_met)}
    return report


if __name__ == '__main__':
    args = [a for a in sys.argv[1:] if not a.startswith('--')]
    tol = float(sys.argv[sys.argv.index('--tolerance') + 1]) if '--tolerance' in sys.argv else 1e-9
    if '--tolerance' in sys.argv: args.remove(sys.argv[sys.argv.index('--tolerance') + 1])
    if len(args) != 2: sys.exit(__doc__)
    report, bad = compare(*args, tol), False
    for stage, r in report.items():
        (ai, an, ad), (mi, mn, md) = r['artifacts'], r['metrics']
        print(f'{stage:13s} artifacts {ai}/{an} identical   metrics {mi}/{mn} equal')
        for k in ad: print(f'    artifact differs: {k}')
        for k in md[:20]: print(f'    metric differs: {k}')
        if len(md) > 20: print(f'    … and {len(md) - 20} more metrics')
        bad |= bool(ad or md)
    sys.exit(1 if bad else 0)
