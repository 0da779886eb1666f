"""Write each stage notebook's `parameters` cell from its config class (synthnb.core.parameters.parameters_cell): one source per parameter.

Usage: python tools/parameters_cells.py [--check]   (--check exits 1 and names the notebooks whose cell is out of date)
Edit a parameter in its config class (type, default, comment), then run this and `nbdev_export`.
"""
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from synthnb.core.config import STAGE_NOTEBOOKS
from synthnb.core.parameters import parameters_cell# noqa: E402
from synthnb.core.stage_registry import CONFIGS  # noqa: E402


def stale(write: bool) -> list:
    "Notebooks whose parameters cell differs from their config class (rewritten when `write`)."
    out = []
    for stage, name in STAGE_NOTEBOOKS.items():
        path = ROOT / 'nbs' / f'{name}.ipynb'
        nb = nbformat.read(str(path), as_version=4)
        cells = [c for c in nb.cells if 'parameters' in c.metadata.get('tags', [])]
        if len(cells) != 1: sys.exit(f'{path}: {len(cells)} cells tagged `parameters`, expected exactly one')
        text = parameters_cell(CONFIGS[stage], stage)
        if cells[0].source != text:
            out.append(str(path.relative_to(ROOT)))
            if write:
                cells[0].source = text
                nbformat.write(nb, str(path))
    return out


if __name__ == '__main__':
    check = '--check' in sys.argv
    bad = stale(write=not check)
    if check and bad: sys.exit('parameters cells out of date with their config classes: ' + ', '.join(bad) + '; run `python tools/parameters_cells.py`')
    print(('rewrote ' + ', '.join(bad)) if bad and not check else 'parameters cells match the config classes')
