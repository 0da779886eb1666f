"""The package's shape: four folders, imported one way (core → generators → stages → orchestration), with no circle."""
import ast
import io
import re
import tokenize
from pathlib import Path

import nbformat

import synthnb

PKG = Path(synthnb.__file__).parent
# The package's four groups, in import order: a module may import from its own group or an earlier one.
GROUPS = ['core', 'generators', 'stages', 'orchestration']
TOP = {'testing': 'core', '__main__': 'orchestration'}  # the two modules outside the groups: fixtures; `python -m synthnb`
# Within and across the groups, each module's layer; a module may import from its own layer or a lower one, never a higher one.
LAYERS = [
    {'core.runtime', 'core.tracking', 'core.hygiene', 'testing'},  # foundations that import no synthnb module (testing: the fixtures)
    {'core.config', 'core.images'},  # stages and experiment files; uint8 images and tensors
    {'core.parameters', 'core.files'},  # typed stage parameters: every stage's config class; atomic files, JSON, checksums
    {'core.store', 'core.models', 'core.data', 'core.augments', 'core.classifier_metrics',
     'core.chain_reader'},  # the artifact store; the classifier, its augmentations and metrics; datasets
    {'core.dataset_cards'},  # dataset cards and how an image file is read
    {'core.readers', 'core.npz'},  # image folders; .npz files
    {'core.sources', 'core.stage_registry'},  # any dataset's pool and test split; the stage registry
    {'generators.simulation', 'generators.paste', 'generators.blending', 'generators.gan', 'generators.stylegan',
     'generators.external', 'generators.vae', 'generators.pretrained'},  # generators (and the reader of external synthetic sets)
    {'generators.diffusion', 'generators.ddpm'},  # the diffusion model and its parts
    {'generators.hybrid', 'generators.defect_diffusion', 'generators.defect_crops'},  # simulation or paste refined by diffusion; learned defect crops
    {'generators.registry'},  # the generator registry: every generator declared once, its contract, the controls
    {'stages.metrics', 'stages.features', 'stages.gate', 'stages.style', 'stages.translation', 'stages.evidence',
     'stages.inference', 'stages.simulated_experiment', 'stages.worth', 'stages.robustness',
     'stages.review'},  # stage helpers
    {'stages.filtering', 'stages.policies', 'stages.profiling',
     'stages.evaluation_outputs'},  # the filter; augmentation operations and policies; stage 1's profile; stage 3's outputs
    {'stages.domain', 'stages.generation', 'stages.augmentation', 'stages.evaluation', 'stages.integration',
     'stages.sampler'},  # stages 1-5 (and stage 2's sampler choice)
    {'stages.arms', 'stages.verdict'},  # stage 6's arms and its verdict
    {'stages.training_figures', 'stages.arm_results'},  # stage 6's figures; an arm's results
    {'stages.training'},  # stage 6
    {'orchestration.report_layout', 'orchestration.execution', 'orchestration.stage_notebooks'},  # how an executed report reads; executing one notebook; finding it and checking its parameters
    {'orchestration.runner'},  # executes the stage notebooks
    {'orchestration.grid'},  # a sweep file expanded into experiments, and planned
    {'orchestration.feedback', 'orchestration.sweep', 'orchestration.sweep_report'},  # on top of the runner
    {'orchestration.protocol'},  # replicate and learning-curve chains, run like a sweep's experiments
    {'orchestration.protocol_run'},  # the chains run as Dask tasks, then the evidence report
    {'orchestration.evidence_chains'},  # the evidence step's chains read back, scored, the arm chosen
    {'orchestration.evidence_report'},  # the evidence step: reads every chain
    {'orchestration.report_page'},  # what a finished run prints, and its one HTML page
    {'orchestration.cli'}, {'__main__'},  # the command line
]
LAYER = {m: i for i, layer in enumerate(LAYERS) for m in layer}


def module_name(path: Path) -> str:
    "'generators.gan' for synthnb/generators/gan.py."
    return '.'.join(path.relative_to(PKG).with_suffix('').parts)


def group(module: str) -> int: return GROUPS.index(TOP.get(module, module.split('.')[0]))


def imports(path: Path) -> set:
    "synthnb modules that `path` imports anywhere (top level or inside a function), as dotted names below synthnb."
    here, out = module_name(path).split('.')[:-1], set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level: base = here[:len(here) - node.level + 1] + ((node.module or '').split('.') if node.module else [])
            elif (node.module or '').startswith('synthnb.'): base = node.module.split('.')[1:]
            elif node.module == 'synthnb': base = []
            else: continue
            for a in node.names:  # `from ..core import images` names a module; `from ..core.images import x` does not
                sub = '.'.join(base + [a.name])
                out.add(sub if (PKG / (sub.replace('.', '/') + '.py')).exists() else '.'.join(base))
        elif isinstance(node, ast.Import):
            out |= {a.name.split('.', 1)[1] for a in node.names if a.name.startswith('synthnb.')}
    return {m for m in out if m and (PKG / (m.replace('.', '/') + '.py')).exists()}


GRAPH = {module_name(p): imports(p) for p in PKG.rglob('*.py') if p.stem not in ('__init__', '_modidx')}


def test_the_tree_shows_the_groups():
    "Every module but the fixtures and the entry point sits in one of the four group folders."
    assert {m.split('.')[0] for m in GRAPH if '.' in m} == set(GROUPS)
    assert {m for m in GRAPH if '.' not in m} == set(TOP)


def test_imports_run_only_downward_between_the_groups():
    up = [f'{a} imports {b}' for a, deps in GRAPH.items() for b in deps if group(b) > group(a)]
    assert not up, up


def test_the_import_check_sees_imports_across_the_folders():
    assert {'core.images', 'core.parameters', 'core.runtime'} <= GRAPH['generators.gan']  # from ..core.images import ...
    assert 'generators.diffusion' in GRAPH['stages.sampler'] and 'orchestration.cli' in GRAPH['__main__']


def test_every_module_has_a_layer():
    assert set(GRAPH) == set(LAYER), f'modules without a layer: {set(GRAPH) - set(LAYER)}; layers naming no module: {set(LAYER) - set(GRAPH)}'


def test_no_import_runs_up():
    up = [f'{a} (layer {LAYER[a]}) imports {b} (layer {LAYER[b]})' for a, deps in GRAPH.items() for b in deps if LAYER[b] > LAYER[a]]
    assert not up, up


def test_no_import_circle():
    state, cycles = {}, []
    def visit(m, path):
        state[m] = 'open'
        for d in GRAPH[m]:
            if state.get(d) == 'open': cycles.append(path[path.index(d):] + [d])
            elif d not in state: visit(d, path + [d])
        state[m] = 'done'
    for m in GRAPH:
        if m not in state: visit(m, [m])
    assert not cycles, cycles


def _nbdev_all(lines: list) -> set:
    "Line numbers of nbdev's generated `__all__` (from `__all__ = [` to its `]`): nbdev wraps it at 120 columns."
    start = next((i for i, line in enumerate(lines, 1) if line.startswith('__all__ = [')), None)
    if start is None: return set()
    end = next(i for i, line in enumerate(lines[start - 1:], start) if line.rstrip().endswith(']'))
    return set(range(start, end + 1))


def test_exported_lines_fit_in_100_columns():
    """Every line of the exported package fits in 100 columns (STYLE), except nbdev's generated `__all__`."""
    long = []
    for p in sorted(PKG.rglob('*.py')):
        if p.stem == '_modidx': continue
        lines = p.read_text().splitlines()
        skip = _nbdev_all(lines)
        long += [f'{module_name(p)}:{i}' for i, line in enumerate(lines, 1) if len(line) > 100 and i not in skip]
    assert not long, f'lines over 100 characters (edit the notebooks, then nbdev_export): {long}'


def test_no_semicolon_chains():
    "No statements chained with `;` in the exported package (ruff's E702/E703 check tests, tools and benches too)."
    chained = [f'{module_name(p)}:{t.start[0]}' for p in sorted(PKG.rglob('*.py'))
               for t in tokenize.generate_tokens(io.StringIO(p.read_text()).readline)
               if t.type == tokenize.OP and t.string == ';']
    assert not chained, f'`;`-chained statements (one statement per line): {chained}'


NBS = Path(__file__).resolve().parent.parent / 'nbs'


def _exported_source(cell) -> str | None:
    "The code of an exported cell (`#| export`/`exports`), its `#|` lines dropped; None for any other cell."
    if cell.cell_type != 'code': return None
    lines = cell.source.splitlines()
    if not any(re.match(r'#\|\s*exports?\b', line) for line in lines): return None
    return '\n'.join(line for line in lines if not line.startswith('#|'))


def _definitions(source: str) -> int:
    "Top-level definitions in `source`: functions, classes and assignments (imports are not definitions)."
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)
    return sum(isinstance(n, kinds) for n in ast.parse(source).body)


def test_notebooks_at_nbdev_density():
    """STYLE: one definition per exported cell (the imports cell aside), a (non-exported) example cell under
    each before the next exported one, and at most 250 lines of exported cells per notebook."""
    crowded, no_example, long = [], [], []
    for path in sorted(NBS.glob('[0-9]*.ipynb')):
        cells, total = nbformat.read(path, as_version=4).cells, 0
        for i, cell in enumerate(cells):
            src = _exported_source(cell)
            if src is None: continue
            total += len(cell.source.splitlines())  # the cell as written, its `#|` lines too
            n = _definitions(src)
            if n > 1: crowded.append(f'{path.stem}[{i}]: {n}')
            following = next((c for c in cells[i + 1:] if c.cell_type == 'code'), None)
            if n and (following is None or _exported_source(following) is not None): no_example.append(f'{path.stem}[{i}]')
        if total > 250: long.append(f'{path.stem}: {total}')
    assert not crowded, f'exported cells with more than one definition: {crowded}'
    assert not no_example, f'exported definitions without an example cell under them: {no_example}'
    assert not long, f'notebooks over 250 exported lines (split along their concerns): {long}'


def _dynamic_imports(path: Path) -> list:
    "Calls that import a module by name at run time (`importlib.import_module`, `__import__`): the layer test cannot see them."
    calls = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ''
            if name in ('import_module', '__import__'): calls.append(f'{path.name}:{node.lineno}')
    return calls


def test_a_stage_runs_no_other_stage():
    """No stage module reaches another stage: not by import, not through the stage registry (`core.stage_registry`, whose RUNNERS
    import stage modules by name), not by importing a module by name itself. Replicate chains run every stage from the
    orchestration layer (`protocol`), never from inside a stage."""
    from synthnb.core.config import STAGES
    mods = {f'stages.{s}' for s in STAGES}
    reach = {s: sorted((GRAPH[s] & (mods | {'core.stage_registry'})) - {s}) for s in mods}
    assert not any(reach.values()), reach
    dynamic = [c for s in STAGES for c in _dynamic_imports(PKG / 'stages' / f'{s}.py')]
    assert not dynamic, dynamic


def test_the_dynamic_import_check_can_fail(tmp_path):
    "The check above sees a stage that imports a module by name (the way the old stage 6 reached stages 1-5)."
    bad = tmp_path / 'training.py'
    bad.write_text("import importlib\nRUN = importlib.import_module('synthnb.stages.domain').run_domain\n")
    assert _dynamic_imports(bad) == ['training.py:2']
