"""Launch buttons and the Colab setup cell: one repository URL, used consistently.

``tools/set_repository.py`` writes the URL into ``_config.yml`` and into the first cell of every
chapter notebook; the book's Sphinx extension switches the buttons off while no URL is set.
"""

import base64
import importlib.util
import json
import re
import shutil
import sys
import types
from pathlib import Path

import pytest
from IPython.core.inputtransformer2 import TransformerManager

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


set_repository = _load("set_repository", ROOT / "tools" / "set_repository.py")
kronbook_html = _load("kronbook_html", ROOT / "book" / "_ext" / "kronbook_html.py")


def test_every_chapter_starts_with_the_setup_cell_for_the_configured_url():
    assert set_repository.NOTEBOOKS, "no chapter notebooks found"
    assert set_repository.check() == []


def test_the_setup_cell_survives_the_notebook_formatter():
    """Notebooks are formatted at 76 columns; a longer line would be rewrapped and drift."""
    long = [
        line for line in set_repository.SETUP_CELL.format(url="").splitlines() if len(line) > 76
    ]
    assert long == []


@pytest.fixture
def book_copy(tmp_path, monkeypatch):
    """The tool pointed at a copy of _config.yml and of two notebooks."""
    config = tmp_path / "_config.yml"
    shutil.copy(ROOT / "_config.yml", config)
    notebooks = []
    for path in set_repository.NOTEBOOKS[:2]:
        notebooks.append(tmp_path / path.name)
        shutil.copy(path, notebooks[-1])
    monkeypatch.setattr(set_repository, "CONFIG", config)
    monkeypatch.setattr(set_repository, "NOTEBOOKS", notebooks)
    return config, notebooks


def test_setting_a_url_updates_config_and_notebooks_and_can_be_undone(book_copy):
    _, notebooks = book_copy
    before = [json.loads(p.read_text()) for p in notebooks]
    set_repository.write("https://github.com/someone/kronbook")
    assert set_repository.configured_url() == "https://github.com/someone/kronbook"
    assert set_repository.check() == []
    for path in notebooks:
        cells = json.loads(path.read_text())["cells"]
        assert 'REPOSITORY = "https://github.com/someone/kronbook"' in "".join(cells[0]["source"])
        assert [c for c in cells if c.get("id") == set_repository.CELL_ID] == cells[:1]
    set_repository.write("")
    assert set_repository.configured_url() == ""
    assert [json.loads(p.read_text()) for p in notebooks] == before


def test_a_notebook_without_the_setup_cell_is_reported_and_repaired(book_copy):
    _, notebooks = book_copy
    notebook = json.loads(notebooks[0].read_text())
    notebook["cells"].pop(0)
    notebooks[0].write_text(json.dumps(notebook))
    assert set_repository.check() == [
        f"{notebooks[0].name}: first cell is not the Colab setup cell for this URL"
    ]
    set_repository.write(set_repository.configured_url())
    assert set_repository.check() == []


@pytest.mark.parametrize(
    "url", ["github.com/a/b", "https://example.org/a/b", "https://github.com/a"]
)
def test_a_url_that_is_not_a_repository_is_refused(book_copy, url):
    with pytest.raises(SystemExit, match=re.escape("https://github.com/ORG/REPO")):
        set_repository.write(url)


def _run_setup_cell(url: str, on_colab: bool, monkeypatch) -> list[tuple[str, str]]:
    """Execute the setup cell as IPython would; return the line magics it ran."""
    calls = []
    shell = types.SimpleNamespace(run_line_magic=lambda name, line: calls.append((name, line)))
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    code = TransformerManager().transform_cell(set_repository.SETUP_CELL.format(url=url))
    exec(code, {"get_ipython": lambda: shell})
    return calls


def test_the_setup_cell_does_nothing_outside_colab(monkeypatch):
    assert _run_setup_cell("", on_colab=False, monkeypatch=monkeypatch) == []


def test_the_setup_cell_installs_kronlib_with_its_extras_on_colab(monkeypatch):
    calls = _run_setup_cell("https://github.com/a/b", on_colab=True, monkeypatch=monkeypatch)
    assert calls == [("pip", 'install --quiet "kronlib[book] @ git+{REPOSITORY}"')]


def test_the_setup_cell_says_what_to_do_on_colab_without_a_url(monkeypatch):
    with pytest.raises(RuntimeError, match="set REPOSITORY"):
        _run_setup_cell("", on_colab=True, monkeypatch=monkeypatch)


def _theme_config(url: str) -> types.SimpleNamespace:
    launch = {"binderhub_url": "https://mybinder.org", "colab_url": "https://colab.example"}
    return types.SimpleNamespace(
        html_theme_options={"repository_url": url, "launch_buttons": launch}
    )


def test_launch_buttons_are_switched_off_without_a_repository():
    config = _theme_config("")
    kronbook_html._launch_buttons_need_a_repository(None, config)
    assert "launch_buttons" not in config.html_theme_options


def test_launch_buttons_stay_on_with_a_repository():
    config = _theme_config("https://github.com/a/b")
    kronbook_html._launch_buttons_need_a_repository(None, config)
    assert config.html_theme_options["launch_buttons"]["binderhub_url"]


@pytest.mark.parametrize(("suffix", "kept"), [(".ipynb", True), (".md", False)])
def test_launch_buttons_are_shown_only_on_notebook_pages(suffix, kept):
    launch = {"type": "group", "label": "launch-buttons", "buttons": []}
    download = {"type": "group", "label": "download-buttons", "buttons": []}
    context = {"page_source_suffix": suffix, "header_buttons": [download, launch]}
    kronbook_html._launch_only_from_notebooks(None, "page", "page.html", context, None)
    assert context["header_buttons"] == ([download, launch] if kept else [download])


def test_slider_frames_leave_the_page_and_other_images_stay():
    png = base64.b64encode(b"frame-one").decode()
    jpg = base64.b64encode(b"frame-two").decode()
    page = (
        f'<p><img src="data:image/png;base64,{png}"></p>'
        f'<div class="kronlib-slider" id="k"><img src="data:image/png;base64,{png}">'
        f'<script>var d = {{"frames": ["data:image/png;base64,{png}", '
        f'"data:image/jpeg;base64,{jpg}"]}};</script></div>'
    )
    stored = {}

    def store(data, extension):
        stored.setdefault(data, f"../_frames/{len(stored)}.{extension}")
        return stored[data]

    out = kronbook_html.externalise_frames(page, store)
    assert set(stored) == {b"frame-one", b"frame-two"}
    assert out.count("data:image") == 1  # the image outside the slider is left alone
    assert '"../_frames/0.png", "../_frames/1.jpg"' in out
