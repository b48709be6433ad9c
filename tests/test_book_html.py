"""The built book in a real browser: pages load cleanly, figures show, static sliders work.

Runs after ``make book`` (``.ci/run`` does both) with Debian's Chromium driven by Playwright;
skipped, with the reason, when the built book or Chromium is missing.
"""

import html
import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from chromium import CHROMIUM, FLAGS

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
CHAPTERS = sorted((HTML / "book").glob("[0-9][0-9]_*.html"))
PAGES = [HTML / "book" / name for name in ("intro.html", "api.html", "references.html")]
PAGES = [page for page in PAGES if page.exists()] + CHAPTERS
FIGURE_PAGES = [page for page in PAGES if page.name not in ("api.html", "references.html")]

pytestmark = [
    pytest.mark.skipif(not CHAPTERS, reason="no built book in _build/html: run `make book` first"),
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser):
    pages = []

    def _open(path: Path, width: int = 1300):
        page = browser.new_page(viewport={"width": width, "height": 900})
        problems: list[str] = []
        page.on(
            "console",
            lambda msg: (
                problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None
            ),
        )
        page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
        page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url}"))
        page.goto(path.as_uri(), wait_until="load")
        page.wait_for_timeout(300)
        pages.append(page)
        return page, problems

    yield _open
    for page in pages:
        page.close()


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_page_loads_without_errors_and_renders_math(open_page, path):
    page, problems = open_page(path)
    if page.locator("div.math, span.math").count():
        page.wait_for_selector("mjx-container", state="attached", timeout=15000)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", FIGURE_PAGES, ids=lambda p: p.name)
def test_every_figure_is_present_and_non_empty(open_page, path):
    page, _ = open_page(path)
    images = page.locator("article img")
    assert images.count() > 0, f"{path.name} shows no figure"
    sizes = images.evaluate_all("els => els.map(e => [e.naturalWidth, e.naturalHeight])")
    empty = [k for k, (w, h) in enumerate(sizes) if w < 10 or h < 10]
    assert not empty, f"{path.name}: images {empty} are missing or empty"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_static_slider_changes_the_picture(open_page, path):
    page, problems = open_page(path)
    sliders = page.locator("div.kronlib-slider")
    for k in range(sliders.count()):
        slider = sliders.nth(k)
        frame = slider.locator("img.kronlib-frame")
        inputs = slider.locator("input[type=range]")
        assert inputs.count() > 0, f"slider {k} of {path.name} has no control"
        for i in range(inputs.count()):
            control = inputs.nth(i)
            before = frame.get_attribute("src")
            top = int(control.get_attribute("max"))
            current = int(control.input_value())
            target = 0 if current != 0 else top
            control.evaluate(
                "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", target
            )
            assert frame.get_attribute("src") != before, (
                f"moving control {i} of slider {k} on {path.name} left the picture unchanged"
            )
        play = slider.locator("button.kronlib-play")
        if play.count():
            before = frame.get_attribute("src")
            play.click()
            page.wait_for_timeout(800)
            play.click()
            assert frame.get_attribute("src") != before, f"play did nothing on slider {k}"
    assert not problems, "\n".join(problems)


def _configured_repository() -> str:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "set_repository", ROOT / "tools/set_repository.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.configured_url()


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_launch_buttons_follow_the_configured_repository(open_page, path):
    """Binder/Colab/live-code buttons: on chapters once a repository is named, nowhere before."""
    page, _ = open_page(path)
    launch = page.locator(".dropdown-launch-buttons")
    expected = bool(_configured_repository()) and path in CHAPTERS
    assert launch.count() == int(expected), (
        f"{path.name}: {launch.count()} launch menus, expected {int(expected)}"
    )
    if expected:
        links = launch.locator("a").evaluate_all("els => els.map(e => e.href)")
        assert any("mybinder.org" in href for href in links), links
        assert any("colab.research.google.com/github/" in href for href in links), links


@pytest.mark.parametrize("path", FIGURE_PAGES, ids=lambda p: p.name)
def test_no_cell_printed_to_stderr(path):
    """Warnings and tracebacks in a page are noise for the reader (or a hidden problem)."""
    html = path.read_text()
    assert 'class="output stderr' not in html, f"{path.name} shows a cell's stderr output"


def test_search_finds_the_chapters_offline(open_page):
    """Sphinx's client-side search works from the files alone (no server, no network)."""
    page, problems = open_page(HTML / "search.html")
    page.goto((HTML / "search.html").as_uri() + "?q=saliency", wait_until="load")
    results = page.locator("#search-results ul.search li a")
    results.first.wait_for(timeout=15000)
    titles = results.all_inner_texts()
    assert any("Saliency is the virtual matrix" in title for title in titles), titles
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_every_internal_link_lands_on_a_page_and_an_anchor(path):
    """Cross-references between chapters point at pages and sections that exist."""
    broken = []
    for href in re.findall(r'<a class="reference internal" href="([^"]+)"', path.read_text()):
        target, _, anchor = unquote(href).partition("#")
        page = (path.parent / target).resolve() if target else path
        if not page.is_file() or (anchor and f'id="{anchor}"' not in page.read_text()):
            broken.append(href)
    assert not broken, f"{path.name}: broken links {broken}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_the_colab_setup_cell_is_not_shown_in_the_book(path):
    assert "google.colab" not in path.read_text(), f"{path.name} shows the Colab setup cell"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_chapter_page_is_light(path):
    # what a reader's browser fetches at first: the page and the images it shows at once (slider
    # frames beyond the first come from _frames/ when the slider moves)
    html = path.read_text(encoding="utf-8")
    shown = {unquote(src) for src in re.findall(r'<img[^>]*\bsrc="([^"]+)"', html)}
    local = [(path.parent / src).resolve() for src in shown if not src.startswith("data:")]
    weight = path.stat().st_size + sum(f.stat().st_size for f in local if f.is_file())
    assert weight <= 3_000_000, f"{path.name}: {weight / 1e6:.1f} MB with its images"


LOG_PATTERNS = (
    r"\b[0-9a-f]{16}\.pt\b",  # weight files
    r"no network: \w+Error",  # why a data source was chosen
    r"cached weights",
    r"\bTraceback \(most recent call last\)",
    r"\d+(\.\d+)?it/s\b",  # progress bars
    r"\bepoch \d+/\d+",
    r"\bWarning: ",
)


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_no_build_log_in_a_page(path):
    # cell outputs (and docstring examples on the API page) that read as logs: data sources,
    # weight files, cache lines, not results
    text = re.sub(r"<[^>]+>", " ", path.read_text(encoding="utf-8"))
    for pattern in LOG_PATTERNS:
        assert not re.search(pattern, text), f"{path.name} shows build output: {pattern}"


# Display math and figures that reach beyond their column: a formula whose box scrolls sideways
# (its ends hidden), an image beyond the window or cut by a container that hides its overflow.
CLIPPED = """() => {
  const width = document.documentElement.clientWidth;
  const bad = [];
  document.querySelectorAll('article mjx-container[display="true"]').forEach((el, k) => {
    if (el.scrollWidth > el.clientWidth + 1) {
      bad.push(`formula ${k + 1}: ${el.scrollWidth} px in a ${el.clientWidth} px box`);
    }
  });
  document.querySelectorAll('article img').forEach((img, k) => {
    const r = img.getBoundingClientRect();
    if (r.width === 0) { return; }  // in a collapsed block
    if (r.right > width + 1 || r.left < -1) {
      bad.push(`image ${k + 1} (${img.alt || img.src.slice(-30)}) beyond the window`);
      return;
    }
    for (let a = img.parentElement; a && a !== document.body; a = a.parentElement) {
      if (getComputedStyle(a).overflowX === 'visible') { continue; }
      const box = a.getBoundingClientRect();
      if (r.right > box.right + 1 || r.left < box.left - 1) {
        bad.push(`image ${k + 1} (${img.alt || img.src.slice(-30)}) cut by its container`);
        break;
      }
    }
  });
  return bad;
}"""


@pytest.mark.parametrize("width", [1400, 390])
@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_no_clipped_display_math_or_figure(open_page, path, width):
    page, _ = open_page(path, width)
    if page.locator("div.math, span.math").count():
        page.wait_for_selector("mjx-container", state="attached", timeout=15000)
        page.wait_for_timeout(500)
    page.wait_for_load_state("load")
    clipped = page.evaluate(CLIPPED)
    assert not clipped, f"{path.name} at {width} px: " + "; ".join(clipped)


@pytest.mark.parametrize("path", FIGURE_PAGES, ids=lambda p: p.name)
def test_every_figure_is_numbered_and_captioned(open_page, path):
    """Every picture sits in a numbered figure with a caption that the text can refer to."""
    page, _ = open_page(path)
    unnumbered = page.evaluate(
        """() => Array.from(document.querySelectorAll('article img'))
              .filter(img => {
                const figure = img.closest('figure');
                return !figure || !figure.querySelector('figcaption .caption-number');
              })
              .map(img => img.alt || img.src.slice(-40))"""
    )
    assert not unnumbered, f"{path.name}: figures without a number {unnumbered}"
    numbers = page.locator("figcaption .caption-number").all_inner_texts()
    assert numbers, f"{path.name} has no numbered figure"
    unreferred = page.evaluate(
        """() => Array.from(document.querySelectorAll('article figure[id]'))
              .map(figure => figure.id)
              .filter(id => !document.querySelector(`article a[href="#${id}"]`))"""
    )
    assert not unreferred, f"{path.name}: figures the text never refers to {unreferred}"


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def test_figure_numbers_are_the_ones_jupyterlab_shows():
    """``make lab`` numbers each notebook's figures from kronlib.prose.figure_numbers: the same."""
    from kronlib.prose import figure_numbers

    # Sphinx writes ids in lower case
    expected = {name.lower(): number for name, number in figure_numbers(ROOT).numbers.items()}
    built: dict[str, int] = {}
    for path in FIGURE_PAGES:
        page = path.read_text(encoding="utf-8")
        for match in re.finditer(
            r'<figure[^>]*\bid="([^"]+)".*?class="caption-number">Figure (\d+)', page, re.S
        ):
            built[match.group(1)] = int(match.group(2))
    assert built and built == expected


@pytest.mark.parametrize("path", FIGURE_PAGES, ids=lambda p: p.name)
def test_citations_read_as_jupyterlab_shows_them(path):
    """Each citation of a page has the text kronlib.prose.cite gives in JupyterLab."""
    from kronlib.prose import CITE_ROLE, cite, cite_t, eval_to_roles

    source = next(
        p for p in (ROOT / "book" / f"{path.stem}{s}" for s in (".ipynb", ".md")) if p.exists()
    )
    text = source.read_text(encoding="utf-8")
    if source.suffix == ".ipynb":
        text = "\n".join(
            "".join(cell["source"])
            for cell in json.loads(text)["cells"]
            if cell["cell_type"] == "markdown"
        )
    expected = []
    for match in CITE_ROLE.finditer(eval_to_roles(text)):
        keys = [key.strip() for key in match.group("keys").split(",")]
        form = cite_t if match.group("kind") == "t" else cite
        expected.append(str(form(*keys, folder=ROOT / "book")))
    page = path.read_text(encoding="utf-8")
    built = [
        _text(m.group(1))
        for m in re.finditer(r'<span class="bibtex-citation"[^>]*>(.*?)</span>', page, re.S)
    ]
    assert sorted(built) == sorted(expected), path.name
