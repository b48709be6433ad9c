"""kronlib.glue and tools/glue_to_eval.py: one source for the numbers of the prose."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure
from myst_nb.core.variables import format_plain_text

from kronlib import glue as glue_module
from kronlib.glue import eval_to_glue_text, format_text, glue, glued, plain_text
from kronlib.prose import eval_to_roles

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def _script():
    spec = importlib.util.spec_from_file_location("glue_to_eval", ROOT / "tools/glue_to_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("value", "spec"),
    [
        (0.123456, ".3f"),
        (0.98765, ".1%"),
        (torch.tensor(0.25).item(), ".2%"),
        (180, ""),
        (180, "d"),
        ("30×16", ""),
        ("it's", ""),
        ("both ' and \"", ""),
        ((480, 320), ""),
        (1e-7, ".1e"),
    ],
)
def test_glued_reads_as_myst_nb_glue_text(value, spec):
    glue("key", value, display=False)
    expected = format_plain_text(plain_text(value), spec or "")
    assert glued("key", spec) == expected == format_text(plain_text(value), spec)
    assert repr(glued("key", spec)) == expected  # Jupyter shows it without quotes


def test_glued_figure_shows_a_picture():
    figure = Figure(figsize=(2, 1))
    figure.add_subplot().plot([0, 1])
    glue("fig_key", figure, display=False)
    bundle = glued("fig_key")._repr_mimebundle_()
    assert bundle["image/png"] and bundle["text/plain"].startswith("<Figure")


def test_glued_names_what_is_missing():
    glue_module._VALUES.pop("never", None)
    with pytest.raises(KeyError, match="nothing is glued as 'never' yet"):
        glued("never")
    with pytest.raises(TypeError, match="name must be a non-empty string"):
        glue("", 1)


def test_eval_roles_become_glue_roles_for_the_book():
    text = 'Error {eval}`glued("best_error", ".3f")` of {eval}`glued("R_shape")`, {eval}`1+1`.'
    assert eval_to_glue_text(text) == (
        "Error {glue:text}`best_error:.3f` of {glue:text}`R_shape`, {eval}`1+1`."
    )
    with pytest.raises(ValueError, match="glued takes"):
        eval_to_glue_text("{eval}`glued(key)`")


def test_figure_directive_becomes_glue_figure_for_the_book():
    live = (
        '```{figure}\n:name: fig-a\n\n{eval}`glued("fig_a")`\n\nA caption, '
        '{eval}`glued("cos", ".2f")`.\n```'
    )
    assert eval_to_glue_text(live) == (
        "```{glue:figure} fig_a\n:name: fig-a\n\nA caption, {glue:text}`cos:.2f`.\n```"
    )


def test_the_script_converts_once_and_the_book_reads_back_the_original(tmp_path):
    script = _script()
    original = (
        "Among {glue:text}`n_shapes` shapes, {glue:text}`best_error:.3f`; "
        "see {doc}`chap` and {doc}`its title <chap>`.\n\n"
        "```{glue:figure} fig_a\n:name: fig-a\n\nCaption {glue:text}`cos:.2f`.\n```"
    )
    (tmp_path / "chap.md").write_text("# The chapter\n\ntext\n")
    notebook = {
        "cells": [
            {"cell_type": "markdown", "id": "a", "metadata": {}, "source": original},
            {
                "cell_type": "code",
                "id": "b",
                "metadata": {},
                "source": "import torch\nfrom myst_nb import glue\n",
                "outputs": [],
                "execution_count": None,
            },
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = tmp_path / "x.ipynb"
    path.write_text(script.dumps(notebook))
    assert script.main([str(path), "--check"]) == 1
    assert script.main([str(path)]) == 0
    converted = path.read_text()
    assert script.main([str(path)]) == 0 and path.read_text() == converted  # idempotent
    assert script.main([str(path), "--check"]) == 0
    cells = json.loads(converted)["cells"]
    markdown = "".join(cells[0]["source"])
    assert "{glue:" not in markdown and '{eval}`glued("best_error", ".3f")`' in markdown
    # a bare {doc} gets its title; links to chapters are kronlib.prose calls, imported
    assert '{eval}`doc("The chapter", "chap")`' in markdown
    assert '{eval}`doc("its title", "chap")`' in markdown
    code = "".join(cells[1]["source"])
    assert "from kronlib.glue import glue, glued" in code
    assert "from kronlib.prose import doc  # noqa: F401" in code
    back = eval_to_roles(eval_to_glue_text(markdown))
    assert back.replace("{doc}`The chapter <chap>`", "{doc}`chap`") == original


def test_the_script_refuses_keys_from_other_documents(tmp_path):
    script = _script()
    with pytest.raises(script.ConversionError, match="keys must be local names"):
        script.convert_markdown("{glue:text}`other.ipynb::key`")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_quote_numbers_the_way_jupyterlab_reads(path):
    """No myst-nb-only roles in what JupyterLab renders: run tools/glue_to_eval.py after merging.

    Figure captions kept in a code cell's metadata (``mystnb.figure``) are read by myst-nb alone
    (JupyterLab shows no caption there), so they may keep ``{glue:text}``.
    """
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    text = "\n".join("".join(cell["source"]) for cell in cells)
    for old in ("{glue:text}", "{glue:figure}", "{glue}", "from myst_nb import glue"):
        assert old not in text, (
            f"{path.name} still uses {old}: run .venv/bin/python tools/glue_to_eval.py"
        )
    assert _script().main([str(path), "--check"]) == 0
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    if 'glued("' in text:  # JupyterLab evaluates the roles in the kernel: glued must exist there
        assert "from kronlib.glue import glue, glued" in code, f"{path.name} does not import glued"
    for raw in ("{cite}", "{cite:p}", "{cite:t}"):  # citations: formatted by kronlib.prose
        assert raw not in text, f"{path.name} still uses {raw}: run tools/glue_to_eval.py"
    for name in ("cite", "cite_t", "doc", "ref"):
        if f"{{eval}}`{name}(" in text:
            imported = re.search(r"^from kronlib\.prose import ([^#\n]*)", code, re.M)
            assert imported and name in imported.group(1).replace(",", " ").split(), (
                f"{path.name}'s prose calls {name}() but does not import it from kronlib.prose"
            )


def test_the_book_extension_rewrites_only_markdown_cells():
    import sys

    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    try:
        from kronbook_html import glued_roles_for_myst_nb
    finally:
        sys.path.pop(0)
    notebook = {
        "cells": [
            {"cell_type": "markdown", "source": ['Value {eval}`glued("x", ".2f")`.']},
            {"cell_type": "code", "source": 'glued("x", ".2f")', "outputs": []},
        ]
    }
    cells = json.loads(glued_roles_for_myst_nb(json.dumps(notebook), notebook=True))["cells"]
    assert cells[0]["source"] == "Value {glue:text}`x:.2f`."
    assert cells[1]["source"] == 'glued("x", ".2f")'
    markdown = 'A {eval}`glued("x")`.'
    assert glued_roles_for_myst_nb(markdown, notebook=False) == "A {glue:text}`x`."
