"Sphinx + myst-nb configuration for the offline docs site; `python docs/build.py` stages the pages and calls Sphinx."
import configparser
from pathlib import Path

_ini = configparser.ConfigParser()
_ini.read(Path(__file__).resolve().parent.parent / 'settings.ini')
_s = _ini['DEFAULT']

project = _s['title']
author = _s['author']
copyright = _s['copyright']
release = version = _s['version']

extensions = ['myst_nb']
# The notebooks were executed by build.py (stage notebooks) or are committed executed reports: never re-run here.
nb_execution_mode = 'off'
nb_render_markdown_format = 'myst'  # show_doc's markdown output uses attributes on links
myst_enable_extensions = ['attrs_inline', 'colon_fence', 'deflist', 'dollarmath']
myst_heading_anchors = 3
nb_merge_streams = True
exclude_patterns = ['**.ipynb_checkpoints', '_build']
suppress_warnings = ['myst.header', 'mystnb.unknown_mime_type', 'misc.highlighting_failure',
                    'myst.xref_missing']  # reports link to sibling notebooks in nbs/; the browser test checks real links

html_theme = 'furo'
html_title = f'{project} {version}'
html_show_sourcelink = False
html_copy_source = False
