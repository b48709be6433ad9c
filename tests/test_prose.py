"""kronlib.prose: citations, chapter links and figure numbers, as the built book prints them.

The built pages themselves are compared in test_book_html.py; here the pieces, on the book's
bibliography and on small made-up books.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kronlib.lab import first_figure_number, with_lab_cells, without_lab_cells
from kronlib.prose import (
    LiveLink,
    book_root,
    cite,
    cite_t,
    doc,
    eval_to_roles,
    figure_numbers,
    ref,
    roles_to_eval,
)

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"


@pytest.mark.parametrize(
    ("keys", "parenthetical", "textual"),
    [
        (("molina2026",), "[Molina, 2026]", "Molina [2026]"),
        (("eckart1936",), "[Eckart and Young, 1936]", "Eckart and Young [1936]"),
        (
            ("vanloan1993",),
            "[Van\u00a0Loan and Pitsianis, 1993]",
            "Van\u00a0Loan and Pitsianis [1993]",
        ),
        (("montufar2014",), "[Montúfar et al., 2014]", "Montúfar et al. [2014]"),
        (
            ("eckart1936", "golub2013"),
            "[Eckart and Young, 1936, Golub and Van\u00a0Loan, 2013]",
            "Eckart and Young [1936], Golub and Van\u00a0Loan [2013]",
        ),
    ],
)
def test_citations_read_as_the_books_author_year_style(keys, parenthetical, textual):
    # "Van\u00a0Loan": pybtex ties a name's parts with a no-break space, in the book as here
    assert cite(*keys, folder=BOOK) == parenthetical
    assert cite_t(*keys, folder=BOOK) == textual
    assert repr(cite(*keys, folder=BOOK)) == parenthetical  # Jupyter shows it without quotes


def test_a_citation_shows_each_entry_in_full_as_a_tooltip():
    link = cite("eckart1936", "golub2013", folder=BOOK)
    assert isinstance(link, LiveLink) and isinstance(link, str)
    html = link._repr_html_()
    assert html.startswith("[<span title=") and html.endswith("</span>]")
    assert html.count("<span title=") == 2 and "href" not in html
    assert 'title="Carl Eckart and Gale Young. The approximation of one matrix' in html


def test_bad_citations_say_what_is_wrong():
    with pytest.raises(ValueError, match="no entry \\['nobody2020'\\]"):
        cite("nobody2020", folder=BOOK)
    with pytest.raises(ValueError, match="at least one key"):
        cite(folder=BOOK)
    for bad in (1, np.int64(1), None, ""):
        with pytest.raises(TypeError, match="citation keys must be non-empty strings"):
            cite(bad, folder=BOOK)
    with pytest.raises(FileNotFoundError, match=r"_toc\.yml"):
        cite("molina2026", folder="/")


def test_links_open_the_chapter_that_holds_the_target():
    link = doc("chapter 1", "01_image_factorization", folder=BOOK)
    assert link == "chapter 1"
    assert 'href="01_image_factorization.ipynb"' in link._repr_html_()
    section = ref("chapter 2", "ch2-two-make-one", folder=BOOK)
    assert section == "chapter 2"
    assert 'href="02_composed_convolutions.ipynb"' in section._repr_html_()
    assert "&lt;b&gt;" in doc("<b>", "api", folder=BOOK)._repr_html_()  # text is escaped
    with pytest.raises(ValueError, match="no document 'nothing'"):
        doc("x", "nothing", folder=BOOK)
    with pytest.raises(ValueError, match="no target \\(nowhere\\)="):
        ref("x", "nowhere", folder=BOOK)
    for bad in ("", "  ", 3, None):
        with pytest.raises(TypeError, match="text must be a non-empty string"):
            doc(bad, "api", folder=BOOK)


def test_roles_and_live_calls_convert_both_ways():
    source = (
        "As {cite:t}`vanloan1993` showed {cite}`eckart1936,golub2013` (and {cite:p}`he2016`), "
        "see {doc}`chapter 1's <01_image_factorization>` and {ref}`chapter 2 <ch2-two-make-one>`, "
        'here {ref}`below <own-label>`, {doc}`api`, {numref}`fig-x`, {eval}`glued("k")`.'
    )
    live = roles_to_eval(source, {"own-label"})
    assert '{eval}`cite_t("vanloan1993")`' in live
    assert '{eval}`cite("eckart1936", "golub2013")`' in live
    assert '{eval}`doc("chapter 1\'s", "01_image_factorization")`' in live
    assert '{eval}`ref("chapter 2", "ch2-two-make-one")`' in live
    # kept: a label of the same page, a role without text, other roles and expressions
    assert "{ref}`below <own-label>`" in live and "{doc}`api`" in live
    assert "{numref}`fig-x`" in live and '{eval}`glued("k")`' in live
    back = eval_to_roles(live)
    assert back == source.replace("{cite}`", "{cite:p}`")
    assert roles_to_eval(live, {"own-label"}) == live  # idempotent
    with pytest.raises(ValueError, match="string literals"):
        eval_to_roles("{eval}`cite(key)`")
    with pytest.raises(ValueError, match="takes \\(text, target\\)"):
        eval_to_roles('{eval}`doc("only text")`')


def _notebook(*cells: dict) -> dict:
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _code(figure: dict | None = None, tags: list[str] | None = None) -> dict:
    metadata: dict = {}
    if figure is not None:
        metadata["mystnb"] = {"figure": figure}
    if tags:
        metadata["tags"] = tags
    return {"cell_type": "code", "metadata": metadata, "source": "f()", "outputs": []}


def _markdown(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


@pytest.fixture
def small_book(tmp_path):
    """A made-up book: an intro page with one code-cell figure, two chapters."""
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: pages/intro\nchapters:\n"
        "  - file: pages/one\n    sections:\n      - file: pages/two\n"
    )
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "intro.md").write_text(
        "# Intro\n\n```{code-cell} ipython3\n---\nmystnb:\n  figure:\n    name: fig-intro\n"
        "    caption: An overview.\n---\nplot()\n```\n\nText.\n"
    )
    one = _notebook(
        _markdown("# One\n\n(one-start)=\n## Start"),
        _code({"name": "fig-a", "caption": "A."}),
        _code({"name": "fig-weights", "caption": "Needs weights."}, ["figure-needs-weights"]),
        _code({"name": "fig-no-caption"}),
        _markdown('````{figure}\n:name: fig-b\n{eval}`glued("b")`\n\nB.\n````\n'),
    )
    (pages / "one.ipynb").write_text(json.dumps(one))
    two = _notebook(
        _markdown(":::{figure}\n\nUnnamed.\n:::\n"), _code({"name": "fig-c", "caption": "C"})
    )
    (pages / "two.ipynb").write_text(json.dumps(two))
    return tmp_path


def test_figures_are_numbered_through_the_book_in_toc_order(small_book):
    numbers = figure_numbers(small_book)
    assert numbers.first == {"pages/intro": 1, "pages/one": 2, "pages/two": 4}
    assert numbers.numbers == {"fig-intro": 1, "fig-a": 2, "fig-b": 3, "fig-c": 5}
    assert book_root(small_book / "pages") == small_book.resolve()
    assert first_figure_number(small_book / "pages" / "two.ipynb") == 4
    assert first_figure_number(small_book / "elsewhere.ipynb") is None


def test_a_toc_naming_a_missing_page_is_refused(small_book):
    (small_book / "pages" / "two.ipynb").unlink()
    with pytest.raises(ValueError, match="lists 'pages/two'"):
        figure_numbers(small_book)
    with pytest.raises(FileNotFoundError, match=r"no _toc\.yml"):
        book_root(small_book.parent)


def test_the_lab_cells_number_the_figures_and_are_never_saved(small_book):
    notebook = json.loads((small_book / "pages" / "one.ipynb").read_text())
    lab = with_lab_cells(notebook, first_figure=2)
    sources = [cell["source"] for cell in lab["cells"]]
    assert "start: 2" in sources[0] and "equation: false" in sources[0]
    captions = [s for s in sources if s.startswith("```{figure}")]
    assert captions == ["```{figure}\n:name: fig-a\n\nA.\n```"]  # only what the book numbers
    assert sources.index(captions[0]) == 3  # right below its code cell (after the front matter)
    assert all(not c["metadata"].get("editable", True) for c in lab["cells"][:1])
    assert without_lab_cells(lab) == notebook
    assert with_lab_cells(lab, 2) == lab  # adding twice adds once
    assert "start: 1" in with_lab_cells(notebook)["cells"][0]["source"]
    ids = [cell.get("id") for cell in lab["cells"] if cell.get("id")]
    assert len(ids) == len(set(ids))
