"""Serve MathJax from the built book instead of a CDN, so formulas render without a network.

MathJax 3 comes from the ``django-static-mathjax`` wheel (pinned in requirements.txt); its
browser bundle and fonts are copied into ``_static/mathjax`` of the HTML output.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from sphinx.application import Sphinx

BUNDLE = "tex-mml-chtml.js"


def _mathjax_es5() -> Path:
    return Path(str(resources.files("mathjax").joinpath("static/mathjax/es5")))


def _use_local_copy(app: Sphinx, config) -> None:
    config.mathjax_path = f"mathjax/{BUNDLE}"


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


def setup(app: Sphinx) -> dict:
    if not (_mathjax_es5() / BUNDLE).is_file():
        raise RuntimeError(
            f"MathJax's {BUNDLE} was not found in the 'mathjax' package: install the pinned "
            "requirements (make env)"
        )
    app.connect("config-inited", _use_local_copy)
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
