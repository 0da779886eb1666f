"""Write README.md from nbs/index.ipynb (nbdev_readme needs Quarto; this keeps the two in sync without it).

Usage: python tools/readme.py [--check]   (--check exits 1 if README.md is out of date)
"""
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
HEADER = '<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, then run `make readme`. -->\n\n'


def render(nb_path=ROOT / 'nbs' / 'index.ipynb') -> str:
    "README text: markdown cells as they are, code cells (unless hidden) as fenced python."
    nb = nbformat.read(str(nb_path), as_version=4)
    parts = []
    for cell in nb.cells:
        src = cell.source.strip()
        if not src or src.startswith('#| hide') or src.startswith('#|hide'):
            continue
        parts.append(src if cell.cell_type == 'markdown' else f'```python\n{src}\n```')
    return HEADER + '\n\n'.join(parts) + '\n'


if __name__ == '__main__':
    text, readme = render(), ROOT / 'README.md'
    if '--check' in sys.argv:
        if readme.read_text() != text:
            sys.exit('README.md is out of date with nbs/index.ipynb: run `python tools/readme.py`')
    else:
        readme.write_text(text)
