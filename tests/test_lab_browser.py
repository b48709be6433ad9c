"""A chapter live in JupyterLab, as a reader uses it: run everything, move a slider, save.

Starts JupyterLab the way ``make lab`` does (``kronlib.lab.lab_command``: MyST rendering, the
contents manager that keeps outputs out of the notebooks) on a copy of ``book/`` (other work on the
checkout's notebooks is never touched), opens chapter 1 in headless Chromium, runs every cell, and
checks that the prose shows its numbers, citations and figure numbers as the book does (instead of
raw roles or unresolved references), that a slider changes its picture, that the saved notebook is
byte for byte the committed one and that a reopened notebook shows plain pictures instead of dead
widgets. Skipped, with the reason, without Chromium.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from chromium import CHROMIUM, FLAGS
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from kronlib.lab import aside_path, free_port, lab_command, lab_environment
from kronlib.prose import cite, figure_numbers

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "01_image_factorization.ipynb"
# what MyST source looks like when it is not rendered: roles, directives, unevaluated expressions
RAW_MARKUP = re.compile(
    r"\{(eval|glue(:\w+)?|cite(:\w+)?|doc|ref|numref|note|figure|math)\}|"
    r"\b(glued|cite|cite_t|doc|ref)\(\"|"
    r"Unknown (Directive|Role)"
)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not found (apt-get install chromium)"
)


def _wait_for_server(url: str, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer {url} within {timeout} s")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab as ``make lab`` starts it, on a copy of book/; stopped afterwards."""
    work = tmp_path_factory.mktemp("lab")
    book = work / "book"
    shutil.copytree(
        ROOT / "book", book, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "_ext")
    )
    shutil.copy(ROOT / "_toc.yml", work / "_toc.yml")  # the book's order numbers the figures
    port = free_port()
    command = lab_command(book, port, work / ".lab", extra=("--LabApp.expose_app_in_browser=True",))
    log = (work / "server.log").open("w")
    process = subprocess.Popen(
        command, env=lab_environment(work / ".lab"), stdout=log, stderr=subprocess.STDOUT, cwd=work
    )
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status", process)
        yield {"url": f"http://127.0.0.1:{port}", "book": book, "log": work / "server.log"}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def page(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield page
        browser.close()


def _run_all(page, lab) -> None:
    page.goto(f"{lab['url']}/lab/tree/{CHAPTER}?reset")
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=60_000)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    # the kernel is ready when the status bar says Idle
    page.wait_for_function("() => document.body.innerText.includes('| Idle')", timeout=90_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                .map(e => e.textContent);
            return prompts.length > 0 && prompts.every(t => /\\[\\d+\\]/.test(t));
        }""",
        timeout=240_000,
    )


def test_a_chapter_runs_live_renders_its_prose_and_saves_without_outputs(page, lab):
    notebook_path = lab["book"] / CHAPTER
    committed = notebook_path.read_bytes()
    started = time.monotonic()
    _run_all(page, lab)
    run_all_seconds = time.monotonic() - started

    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = [text for text in errors.all_inner_texts() if "Error" in text]
    assert not tracebacks, tracebacks[0][:2000]

    # the prose: every inline expression evaluated, no role or directive left raw; citations,
    # links and figure numbers as the book prints them. A citation is drawn as a link (HTML) a
    # moment after the text around it, and a cell may redraw, so wait for all of them at once.
    rendered = ".jp-MarkdownCell .lm-Widget.myst"  # jupyterlab-myst's rendering of a cell
    book = lab["book"]
    numbers = figure_numbers(book.parent)
    first = numbers.first[f"book/{Path(CHAPTER).stem}"]
    expected = [
        str(cite("vanloan1993", folder=book)),
        str(cite("eckart1936", "golub2013", folder=book)),
        # the {numref} in the prose; jupyterlab-myst writes "Figure\u00a02", a no-break space
        f"Figure\u00a0{numbers.numbers['fig-ch1-demo']}",
    ]
    complete = """([selector, expected]) => {
        const cells = [...document.querySelectorAll(selector)];
        const text = cells.map(e => e.textContent).join(' ');
        return cells.length > 10 && !text.includes('glued(')
            && expected.every(words => text.includes(words)) && text;
    }"""
    prose = ""
    with contextlib.suppress(PlaywrightTimeout):  # the assertions below say what is missing
        prose = page.wait_for_function(complete, arg=[rendered, expected], timeout=30_000)
        prose = prose.json_value()
        # a cell redraws when a later result arrives: the prose must be whole again after it
        page.wait_for_timeout(2000)
        prose = page.wait_for_function(complete, arg=[rendered, expected], timeout=30_000)
        prose = prose.json_value()
    prose = prose or " ".join(page.locator(rendered).all_text_contents())
    raw = sorted({m.group(0) for m in RAW_MARKUP.finditer(prose)})
    assert not raw, f"raw MyST markup visible in the rendered prose: {raw}"
    assert page.locator(".myst-RenderedExpressionError").count() == 0
    assert "480×320" in prose or "480" in prose  # numbers glued by the code are in the text
    unresolved = page.locator(f"{rendered} [title$='Not Found']").all_inner_texts()
    assert not unresolved, f"unresolved references in JupyterLab: {unresolved}"
    missing = [words for words in expected if words not in prose]
    assert not missing, f"not in JupyterLab's prose: {missing}"
    captions = [
        text.replace("\u00a0", " ")
        for text in page.locator(".jp-MarkdownCell figure").all_inner_texts()
    ]
    assert captions and captions[0].startswith(f"Figure {first}:"), captions[:1]

    # a slider changes its picture (drawn by the kernel on demand)
    slider = page.locator(".jp-OutputArea .widget-slider .noUi-handle").first
    image = page.locator(".jp-OutputArea .widget-image").first
    before = image.get_attribute("src")
    slider.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "([before]) => document.querySelector('.jp-OutputArea .widget-image').src !== before",
        arg=[before],
        timeout=30_000,
    )
    shot = Path(os.environ.get("KRONBOOK_LAB_SCREENSHOT", lab["book"].parent / "lab.png"))
    page.screenshot(path=str(shot))

    # the picture each control's display carried when its cell ran (the first one)
    first_pictures = page.evaluate(
        """([view]) => window.jupyterapp.shell.currentWidget.context.model.toJSON().cells
            .flatMap(cell => cell.outputs || [])
            .filter(output => output.data && output.data[view])
            .map(output => output.data['image/jpeg'] || output.data['image/png'])""",
        [WIDGET_VIEW],
    )
    assert first_pictures, "no control was displayed"

    # saving: the notebook on disk is the committed one, byte for byte (git diff stays empty)
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    aside = aside_path(notebook_path)
    deadline = time.monotonic() + 30
    while not aside.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert aside.exists(), "saving did not set the outputs aside"
    saved = json.loads(notebook_path.read_text(encoding="utf-8"))
    assert not any(cell.get("outputs") for cell in saved["cells"])
    assert notebook_path.read_bytes() == committed, "saving changed the notebook on disk"

    # reopening: the outputs come back, each control as its last picture, no widget to find
    with urllib.request.urlopen(f"{lab['url']}/api/contents/{CHAPTER}") as response:
        reopened = json.load(response)["content"]
    outputs = [output for cell in reopened["cells"] for output in cell.get("outputs", [])]
    assert outputs, "a reopened notebook should show its last outputs"
    assert not any(WIDGET_VIEW in output.get("data", {}) for output in outputs)
    pictures = [o for o in outputs if {"image/png", "image/jpeg"} & set(o.get("data", {}))]
    assert len(pictures) >= 4
    # the control whose slider moved (the chapter's first) shows its last picture, not the first
    controls = [o for o in outputs if str(o.get("data", {}).get("text/plain")).startswith("Slider")]
    moved = controls[0]
    last = moved["data"].get("image/jpeg") or moved["data"].get("image/png")
    assert last and last.strip() != first_pictures[0].strip()
    page.reload()
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_timeout(3000)
    assert "Error displaying widget" not in page.locator(".jp-Notebook").inner_text()
    assert run_all_seconds < 120, f"Run All took {run_all_seconds:.0f} s"
