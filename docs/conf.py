"Sphinx + myst-nb configuration for the offline docs site; `python docs/build.py` stages the pages and calls Sphinx."
import configparser, importlib.util, shutil
from pathlib import Path

_ini = configparser.ConfigParser()
_ini.read(Path(__file__).resolve().parent.parent / 'settings.ini')
_s = _ini['DEFAULT']

project = _s['title']
author = _s['author']
copyright = _s['copyright']
release = version = _s['version']

extensions = ['myst_nb', 'sphinx.ext.autodoc']
autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
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


def local_mathjax(dest: Path):
    "Copy MathJax 3 (CommonHTML output) from the django-static-mathjax wheel into `dest`; None when it is not installed."
    spec = importlib.util.find_spec('mathjax')
    if spec is None or not spec.submodule_search_locations: return None
    es5 = Path(list(spec.submodule_search_locations)[0]) / 'static' / 'mathjax' / 'es5'
    if not (es5 / 'tex-mml-chtml.js').exists(): return None
    target = dest / 'mathjax'
    if not (target / 'tex-mml-chtml.js').exists():
        shutil.rmtree(target, ignore_errors=True)
        # the combined TeX+MathML/CommonHTML build, its fonts, and what its menu and TeX extensions load on demand
        keep = ['tex-mml-chtml.js', 'output/chtml', 'input', 'ui', 'a11y', 'sre/mathmaps/base.json', 'sre/mathmaps/en.json']
        for rel in keep:
            src, out = es5 / rel, target / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src, out) if src.is_dir() else shutil.copy2(src, out)
    return dest


# Math is rendered by a MathJax copy inside the site, never a CDN: the site works offline (and the browser test checks it).
_static = local_mathjax(Path(__file__).resolve().parent.parent / '_proc' / '_static_mathjax')
html_static_path = [str(Path(__file__).resolve().parent / 'static')]  # synthnb.css: wide outputs scroll on a narrow screen
html_css_files = ['synthnb.css']
if _static is not None:
    html_static_path.append(str(_static))
    mathjax_path = 'mathjax/tex-mml-chtml.js'
else:
    print('[docs] warning: django-static-mathjax is not installed; pages with math load MathJax from its CDN (needs internet)')
