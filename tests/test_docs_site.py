"""The built docs site in a real browser: Debian's chromium, driven headless by Playwright, over python's http.server.

Builds `_site/` with `docs/build.py` when it is missing (or when SYNTHNB_DOCS_REBUILD=1); SYNTHNB_SITE points at another
built site; SYNTHNB_SCREENSHOTS names a folder to keep the screenshots in.
"""
import functools, os, shutil, subprocess, sys, threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking']

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason='needs Debian chromium (apt-get install chromium)')]


def launch_chromium(p):
    "Debian's chromium, never a Playwright-downloaded browser."
    return p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def blank(png_bytes, min_colours=8):
    "True when a screenshot is (nearly) one flat colour."
    import io
    from PIL import Image
    im = Image.open(io.BytesIO(png_bytes)).convert('RGB')
    colours = im.getcolors(maxcolors=1 << 16)
    return colours is not None and len(colours) < min_colours


# what a reader sees before scrolling: the text of the elements and the loaded images inside the viewport
FIRST_SCREEN = """() => {
  const seen = e => { const r = e.getBoundingClientRect(); return r.height > 0 && r.bottom > 0 && r.top < innerHeight; };
  return {text: [...document.querySelectorAll('h1, h2, p, li, th, td, pre, code, blockquote')].filter(seen)
                  .map(e => e.innerText).join('\\n'),
          images: [...document.images].filter(i => seen(i) && i.naturalWidth > 0).length,
          code: document.querySelectorAll('.jp-InputArea, .input_area, .cell_input').length};
}"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *a): pass


@pytest.fixture(scope='module')
def site():
    d = Path(os.environ.get('SYNTHNB_SITE') or ROOT / '_site')
    if os.environ.get('SYNTHNB_DOCS_REBUILD') == '1' or not (d / 'index.html').exists():
        subprocess.run([sys.executable, str(ROOT / 'docs' / 'build.py'), '--out', str(d.relative_to(ROOT))], cwd=ROOT, check=True)
    server = ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Quiet, directory=str(d)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{server.server_address[1]}/'
    server.shutdown()
    server.server_close()


@pytest.fixture(scope='module')
def browser():
    sync_api = pytest.importorskip('playwright.sync_api')
    with sync_api.sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


@pytest.fixture(scope='module')
def shots(tmp_path_factory):
    d = Path(os.environ.get('SYNTHNB_SCREENSHOTS') or tmp_path_factory.mktemp('screenshots'))
    d.mkdir(parents=True, exist_ok=True)
    return d


def open_page(browser, url):
    "Load `url`; return (page, problems) where problems lists console errors, page errors and failed requests."
    page = browser.new_page(viewport={'width': 1280, 'height': 900})
    problems = []
    page.on('console', lambda m: m.type == 'error' and problems.append(f'console: {m.text}'))
    page.on('pageerror', lambda e: problems.append(f'pageerror: {e}'))
    page.on('requestfailed', lambda r: problems.append(f'requestfailed: {r.url}'))
    page.on('response', lambda r: r.status >= 400 and problems.append(f'HTTP {r.status}: {r.url}'))
    page.goto(url, wait_until='load')
    return page, problems


@pytest.fixture(scope='module')
def crawl(site, browser):
    "Visit every page reachable from the home page; record per-page problems, links, broken images."
    todo, seen, pages = [site], set(), {}
    while todo:
        url = todo.pop()
        if url in seen: continue
        seen.add(url)
        page, problems = open_page(browser, url)
        links = page.eval_on_selector_all('a[href]', 'els => els.map(e => e.href)')
        bad_imgs = page.eval_on_selector_all('img', 'els => els.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)')
        n_imgs = page.eval_on_selector_all('img', 'els => els.length')
        pages[url] = dict(problems=problems, links=links, bad_imgs=bad_imgs, n_imgs=n_imgs, title=page.title())
        page.close()
        for link in links:
            target = urldefrag(link)[0]
            if target.startswith(site) and target.endswith(('.html', '/')) and target not in seen: todo.append(target)
    return pages


def test_every_page_loads_cleanly(crawl):
    assert len(crawl) >= 8, sorted(crawl)
    bad = {u: p['problems'] for u, p in crawl.items() if p['problems']}
    assert not bad, bad


def test_no_broken_internal_links(site, crawl):
    import urllib.request, urllib.error
    targets = {urldefrag(l)[0] for p in crawl.values() for l in p['links'] if l.startswith(site)}
    broken = []
    for t in sorted(targets):
        try: urllib.request.urlopen(t, timeout=10).close()
        except urllib.error.HTTPError as e: broken.append((t, e.code))
    assert not broken, broken


def test_stage_pages_present_with_api_reference(site, crawl):
    for name in ['config', 'store', 'domain', 'generation', 'augmentation', 'evaluation', 'integration', 'training', 'runner',
                 'evidence', 'evidence_report']:  # 06c_evidence (the statistics) and 13a_evidence_report: a page each
        assert urljoin(site, f'{name}.html') in crawl, f'{name}.html not linked from the site'
    # show_doc renders signatures; the home page links to the Reports section and the getting-started guide
    assert urljoin(site, 'reports/index.html') in crawl and urljoin(site, 'getting-started.html') in crawl


def test_figures_render(site, browser, crawl, shots):
    assert not {u: p['bad_imgs'] for u, p in crawl.items() if p['bad_imgs']}
    with_figures = [u for u, p in crawl.items() if p['n_imgs'] and not u.endswith('/')]
    assert any(u.endswith(('domain.html', 'generation.html')) for u in with_figures), with_figures
    for name in ['index.html', 'generation.html'] + [urlparse(u).path.lstrip('/') for u in with_figures if '/reports/' in u][:1]:
        page, problems = open_page(browser, urljoin(site, name))
        png = page.screenshot(full_page=False)
        (shots / name.replace('/', '_').replace('.html', '.png')).write_bytes(png)
        assert not blank(png), f'{name} screenshot is blank'
        img = page.locator('.cell_output img, .output img, img').first
        if name != 'index.html':
            img.scroll_into_view_if_needed()
            fig = img.screenshot()
            (shots / name.replace('/', '_').replace('.html', '-figure.png')).write_bytes(fig)
            assert img.evaluate('i => i.naturalWidth') > 0 and not blank(fig), f'first figure of {name} is blank'
        page.close()


def test_api_reference_index_and_search(site, crawl):
    "Every exported name is in the API reference, the general index links it, the search index knows it; page titles are distinct."
    assert urljoin(site, 'api.html') in crawl and urljoin(site, 'genindex.html') in crawl
    out = Path(os.environ.get('SYNTHNB_SITE') or ROOT / '_site')
    assert 'href="api.html#synthnb.orchestration.runner.run_experiment"' in (out / 'genindex.html').read_text()
    assert 'synthnb.stages.verdict.headline_markdown' in (out / 'searchindex.js').read_text()
    assert (out / 'objects.inv').stat().st_size > 2000
    placeholder = [l for p in crawl.values() for l in p['links'] if l.startswith('https://github.com/synthnb/')]
    assert not placeholder, f'source links to the placeholder repository of settings.ini: {placeholder[:3]}'
    titles = {}
    for u, p in crawl.items(): titles.setdefault(p['title'], set()).add(u + 'index.html' if u.endswith('/') else u)  # / is index.html
    assert not {t: us for t, us in titles.items() if len(us) > 1}, 'pages share a title'


def test_report_page_opens_with_results(site, browser, crawl, shots):
    """A published evidence report shows its headline table on its first screen, a stage-6 report its validation table
    of every arm (or a one-chain run's headline and a figure); no warning text there, none of the exported source."""
    reports = sorted(u for u in crawl if '/reports/' in u and u.endswith(('06_training.html', '/evidence.html')))
    if not reports: pytest.skip('no stage-6 or evidence report is committed under reports/')
    for url in reports:
        page, problems = open_page(browser, url)
        (shots / ('report_' + urlparse(url).path.strip('/').replace('/', '_').replace('.html', '.png'))).write_bytes(page.screenshot(full_page=False))
        top = page.evaluate("() => { const o = document.querySelector('.cell_output'); return o ? o.getBoundingClientRect().top : null; }")
        assert top is not None and top < 900, f'{url}: the first result is {top} px down, below the first screen'
        assert '#| export' not in page.inner_text('body'), f'{url} shows exported source'
        first = page.evaluate(FIRST_SCREEN)
        if url.endswith('/evidence.html'):  # the answer: every chain, the test split read once
            assert 'Δ vs real-only' in first['text'] and 'Warning' not in first['text'], f"{url}: first screen {first}"
            page.close()
            continue
        # a chain's stage 6 opens with every arm on validation (choices are made there); a one-chain run with its headline
        assert 'validation roc_auc' in first['text'] or 'Δ best synthetic − real only' in first['text'], \
            f"{url}: no results on the first screen"
        # a figure, unless the validation table of every arm fills the screen (a full profile's 17 arms)
        assert (first['images'] >= 1 or 'validation roc_auc' in first['text']) and 'Warning' not in first['text'], \
            f"{url}: first screen {first}"
        page.set_viewport_size({'width': 420, 'height': 900})  # a phone: wide tables scroll in their cell, the page does not
        assert page.evaluate('() => document.documentElement.scrollWidth') <= 440, f'{url} overflows a narrow screen'
        page.close()


def test_navigation_between_stages(site, browser):
    page, problems = open_page(browser, site)
    page.locator('.sidebar-tree a', has_text='Domain').first.click()
    page.wait_for_load_state('load')
    assert page.url.endswith('/domain.html'), page.url
    assert 'Domain' in page.locator('h1').first.inner_text()
    page.locator('a.next-page').first.click()  # furo's "next" link follows the notebook order: 01a_profiling
    page.wait_for_load_state('load')
    assert page.url.endswith('/profiling.html'), page.url  # stage 1's helper notebook, then stage 2
    page.locator('a.next-page').first.click()
    page.wait_for_load_state('load')
    assert page.url.endswith('/generation.html'), page.url
    assert 'Generation' in page.locator('h1').first.inner_text()
    page.go_back()
    page.wait_for_load_state('load')
    assert page.url.endswith('/profiling.html')
    assert not problems, problems
    page.close()


def test_math_renders_offline(site, browser, crawl, shots):
    "Pages with TeX load MathJax from the site itself (no CDN) and it typesets them."
    page, problems = open_page(browser, urljoin(site, 'sweep_report.html'))
    scripts = page.eval_on_selector_all('script[src]', 'els => els.map(e => e.src)')
    mathjax = [s for s in scripts if 'mathjax' in s.lower()]
    assert mathjax and all(s.startswith(site) for s in mathjax), mathjax
    page.wait_for_selector('mjx-container', timeout=20_000)
    formula = page.locator('mjx-container').first
    formula.scroll_into_view_if_needed()
    png = formula.screenshot()
    (shots / 'sweep_report-math.png').write_bytes(png)
    assert formula.bounding_box()['width'] > 50 and not blank(png, min_colours=3)
    assert not problems, problems
    page.close()
