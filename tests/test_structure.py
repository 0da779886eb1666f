"""The package's shape: imports run one way (foundations → stages → orchestration → command line), with no circle."""
import ast
from pathlib import Path

import synthnb

PKG = Path(synthnb.__file__).parent
# Each module's layer; a module may import from its own layer or a lower one, never a higher one.
LAYERS = [
    {'runtime', 'tracking', 'hygiene', 'testing'},  # foundations that import no synthnb module (testing: the fixtures)
    {'config', 'images'},  # stages and experiment files; uint8 images and tensors
    {'parameters'},  # typed stage parameters: every stage's config class
    {'store', 'models'},  # the artifact store; the classifier
    {'data', 'metrics', 'features', 'gate', 'style', 'translation', 'evidence', 'inference', 'worth', 'robustness',
     'review'},  # datasets, stage helpers
    {'dataset_cards', 'filtering'},  # dataset cards and how an image file is read
    {'readers'},  # .npz files and image folders
    {'sources', 'stages'},  # any dataset's pool and test split; the stage registry
    {'simulation', 'paste', 'gan', 'external', 'vae', 'pretrained'},  # generators (and the reader of external synthetic sets)
    {'diffusion'},  # the diffusion model
    {'hybrid', 'defect_diffusion'},  # simulation or paste refined by the diffusion model; learned defect crops
    {'generators'},  # the generator registry: every generator declared once, its contract, the controls
    {'policies'},  # augmentation operations and policies
    {'domain', 'generation', 'augmentation', 'evaluation', 'integration', 'sampler'},  # stages 1-5 (and stage 2's sampler choice)
    {'arms', 'verdict'},  # stage 6's arms and its verdict
    {'training_figures'},  # stage 6's figures
    {'training'},  # stage 6
    {'report_layout', 'execution'},  # how an executed report reads; finding, checking and executing one notebook
    {'runner'},  # executes the stage notebooks
    {'grid'},  # a sweep file expanded into experiments, and planned
    {'feedback', 'sweep', 'sweep_report'},  # orchestration on top of the runner
    {'protocol'},  # replicate and learning-curve chains, run like a sweep's experiments
    {'evidence_report'},  # the evidence step: reads every chain
    {'report_page'},  # what a finished run prints, and its one HTML page
    {'cli'}, {'__main__'},  # the command line
]
LAYER = {m: i for i, layer in enumerate(LAYERS) for m in layer}


def imports(path: Path) -> set:
    "synthnb modules that `path` imports anywhere (top level or inside a function)."
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1: out.add((node.module or '').split('.')[0])
            elif (node.module or '').startswith('synthnb.'): out.add(node.module.split('.')[1])
            elif node.module == 'synthnb': out |= {a.name for a in node.names if (PKG / f'{a.name}.py').exists()}
        elif isinstance(node, ast.Import):
            out |= {a.name.split('.')[1] for a in node.names if a.name.startswith('synthnb.')}
    return out - {''}


GRAPH = {p.stem: imports(p) for p in PKG.glob('*.py') if p.stem not in ('__init__', '_modidx')}


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


def test_exported_lines_fit_in_120_columns():
    """Every line of the exported package fits in 120 columns, except the first line of nbdev's generated `__all__` (nbdev wraps the
    names at 120 columns, then prefixes `__all__ = `)."""
    long = [f'{p.name}:{i}' for p in sorted(PKG.glob('*.py')) if p.stem != '_modidx'
            for i, line in enumerate(p.read_text().splitlines(), 1) if len(line) > 120 and not line.startswith('__all__ = [')]
    assert not long, f'lines over 120 characters (edit the notebooks, then nbdev_export): {long}'


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
    """No stage module reaches another stage: not by import, not through the stage registry (`stages`, whose RUNNERS
    import stage modules by name), not by importing a module by name itself. Replicate chains run every stage from the
    orchestration layer (`protocol`), never from inside a stage."""
    from synthnb.config import STAGES
    reach = {s: sorted((GRAPH[s] & (set(STAGES) | {'stages'})) - {s}) for s in STAGES}
    assert not any(reach.values()), reach
    dynamic = [c for s in STAGES for c in _dynamic_imports(PKG / f'{s}.py')]
    assert not dynamic, dynamic


def test_the_dynamic_import_check_can_fail(tmp_path):
    "The check above sees a stage that imports a module by name (the way the old stage 6 reached stages 1-5)."
    bad = tmp_path / 'training.py'
    bad.write_text("import importlib\nRUN = importlib.import_module('synthnb.domain').run_domain\n")
    assert _dynamic_imports(bad) == ['training.py:2']
