"""HTML fixes for the book, so that pages work offline and load without console errors.

* MathJax is served from the built book instead of a CDN: MathJax 3 comes from the
  ``django-static-mathjax`` wheel (pinned in requirements.txt), and its browser bundle and fonts
  are copied into ``_static/mathjax`` of the HTML output.
* Inline scripts registered twice (sphinx-thebe's and sphinx-togglebutton's settings, under
  Jupyter Book 1) are emitted once: declaring the same ``const`` twice is a page error.
* A small stylesheet (``static/kronbook.css``): printed lines wrap in cell outputs.
* Slider frames (``kronlib.widgets.SliderFigure``) leave the pages: each frame embedded as a
  data URI is written once to ``_frames/<hash>.<ext>`` of the HTML output and referred to by a
  relative URL, so a page loads only the frames a reader shows (and still works from disk,
  ``file://``, with no server).
* Numbers in the prose: a chapter quotes a computed value as ``{eval}`glued("key", "spec")` ``
  (and shows a glued figure as a ``{figure}`` whose first paragraph is ``{eval}`glued("key")` ``),
  which JupyterLab (``jupyterlab-myst``) evaluates in the kernel. Before a page is parsed, these
  become myst-nb's ``{glue:text}`key:spec` `` and ``{glue:figure} key``, which paste what the
  executed (cached) notebook glued, with the same text (``kronlib.glue``).
* Citations and links to other chapters: a chapter writes them as ``{eval}`cite("key")` ``,
  ``{eval}`doc("text", "name")` `` or ``{eval}`ref("text", "label")` `` (formatted in the
  kernel in JupyterLab as the book prints them); they become ``{cite:p}``, ``{cite:t}``, ``{doc}``
  and ``{ref}`` roles before a page is parsed (``kronlib.prose``).
* Launch buttons (Binder, Colab, live code) need the repository's URL: without one in
  ``_config.yml`` they are switched off (the theme would fail), and they are shown only on pages
  made from ``.ipynb`` files, the ones Binder and Colab can open.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)

BUNDLE = "tex-mml-chtml.js"
STATIC = Path(__file__).resolve().parent / "static"


def _mathjax_es5() -> Path:
    return Path(str(resources.files("mathjax").joinpath("static/mathjax/es5")))


def _use_local_copy(app: Sphinx, config) -> None:
    config.mathjax_path = f"mathjax/{BUNDLE}"


def _add_stylesheet_folder(app: Sphinx, config) -> None:
    config.html_static_path = [*config.html_static_path, str(STATIC)]


def _copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / "mathjax"
    shutil.copytree(
        _mathjax_es5(),
        target,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("*-full*.js", "node-main.js", "*svg*", "sre"),
    )


_SLIDER = re.compile(r'<div class="kronlib-slider".*?</script>', re.S)
_DATA_URI = re.compile(r"data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)")


def externalise_frames(page: str, store: Callable[[bytes, str], str]) -> str:
    """Replace the data-URI frames of every slider in ``page`` by URLs that ``store`` returns.

    Args:
        page: a page's HTML.
        store: ``store(image_bytes, extension) -> url`` writes one frame and says where it is.

    Returns:
        The page, its sliders referring to the stored frames.
    """

    def frame(match: re.Match) -> str:
        extension = "png" if match.group(1) == "png" else "jpg"
        return store(base64.b64decode(match.group(2)), extension)

    return _SLIDER.sub(lambda block: _DATA_URI.sub(frame, block.group(0)), page)


def _externalise_slider_frames(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    outdir = Path(app.outdir)
    folder = outdir / "_frames"
    for page in outdir.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        if "kronlib-slider" not in text:
            continue

        def store(data: bytes, extension: str, page: Path = page) -> str:
            name = f"{hashlib.sha256(data).hexdigest()[:20]}.{extension}"
            folder.mkdir(exist_ok=True)
            target = folder / name
            if not target.exists():
                target.write_bytes(data)
            return Path(os.path.relpath(target, page.parent)).as_posix()

        page.write_text(externalise_frames(text, store), encoding="utf-8")


def glued_roles_for_myst_nb(source: str, notebook: bool) -> str:
    """A page's source with its live inline expressions turned into the book's roles.

    ``{eval}`glued(...)` `` becomes myst-nb's glue roles (``kronlib.glue``), citations and
    links become ``{cite:p}``, ``{cite:t}``, ``{doc}`` and ``{ref}`` (``kronlib.prose``).

    Args:
        source: the file's text: a notebook's JSON, or MyST Markdown.
        notebook: whether ``source`` is a notebook (only its Markdown cells are rewritten).
    """
    from kronlib.glue import eval_to_glue_text
    from kronlib.prose import eval_to_roles

    def convert(text: str) -> str:
        return eval_to_roles(eval_to_glue_text(text))

    if not notebook:
        return convert(source)
    if "{eval}" not in source:
        return source
    data = json.loads(source)
    for cell in data.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        text = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        cell["source"] = convert(text)
    return json.dumps(data, indent=1, ensure_ascii=False)


def _glued_roles(app: Sphinx, docname: str, source: list[str]) -> None:
    path = str(app.env.doc2path(docname))
    source[0] = glued_roles_for_myst_nb(source[0], notebook=path.endswith(".ipynb"))


def _launch_buttons_need_a_repository(app: Sphinx, config) -> None:
    options = config.html_theme_options
    if options.get("launch_buttons") and not options.get("repository_url"):
        LOGGER.info(
            "launch buttons off: _config.yml names no repository "
            "(python tools/set_repository.py https://github.com/ORG/REPO)"
        )
        options.pop("launch_buttons")


def _launch_only_from_notebooks(app: Sphinx, pagename, templatename, context, doctree) -> None:
    buttons = context.get("header_buttons")
    if not buttons or context.get("page_source_suffix") == ".ipynb":
        return
    context["header_buttons"] = [b for b in buttons if b.get("label") != "launch-buttons"]
    context["use_thebe"] = False


def _drop_duplicate_scripts(app: Sphinx, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        attributes = getattr(script, "attributes", {})
        key = (getattr(script, "filename", None) or "", attributes.get("body"))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict:
    """Register the fixes with Sphinx."""
    if not (_mathjax_es5() / BUNDLE).is_file():
        raise RuntimeError(
            f"MathJax's {BUNDLE} was not found in the 'mathjax' package: install the pinned "
            "requirements (make env)"
        )
    app.connect("config-inited", _use_local_copy)
    app.connect("config-inited", _add_stylesheet_folder)
    app.add_css_file("kronbook.css")
    app.connect("config-inited", _launch_buttons_need_a_repository)
    app.connect("source-read", _glued_roles)
    app.connect("build-finished", _copy_mathjax)
    app.connect("build-finished", _externalise_slider_frames)
    app.connect("html-page-context", _drop_duplicate_scripts)
    # after sphinx-book-theme's own launch buttons (priority 501)
    app.connect("html-page-context", _launch_only_from_notebooks, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
