"""Citations, links and figure numbers of the live prose: what JupyterLab shows as the book does.

A chapter's Markdown is read twice: by the book (Sphinx with myst-nb and sphinxcontrib-bibtex)
and live in JupyterLab (``jupyterlab-myst``), which knows neither the bibliography nor the other
chapters. So the chapters write citations and links to other chapters as inline expressions that
the kernel evaluates in JupyterLab, and that the book's Sphinx extension turns back into roles
before a page is parsed (:func:`eval_to_roles`). What a chapter's Markdown says, and (right)
what the book parses::

    {eval}`cite("eckart1936", "golub2013")`      {cite:p}`eckart1936,golub2013`
    {eval}`cite_t("vanloan1993")`                {cite:t}`vanloan1993`
    {eval}`doc("chapter 1", "01_image_factorization")`
                                                 {doc}`chapter 1 <01_image_factorization>`
    {eval}`ref("chapter 2", "ch2-two-make-one")` {ref}`chapter 2 <ch2-two-make-one>`

In the kernel, :func:`cite` formats with sphinxcontrib-bibtex's own author-year style from
``references.bib``, so both readers see the same characters ("[Eckart and Young, 1936, Golub and
Van Loan, 2013]"), each with its full entry as a tooltip; :func:`doc` and :func:`ref` are links
that JupyterLab opens as the chapter's notebook.

Figures are numbered through the whole book, in the order of ``_toc.yml`` (Sphinx's numbering
without section numbers); :func:`figure_numbers` counts them from the sources the same way, for
``make lab`` to number each notebook's figures as the book does (``kronlib.lab``).
"""

from __future__ import annotations

import ast
import functools
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CITE_ROLE",
    "LIVE_CALL",
    "TARGET_LINE",
    "FigureNumbers",
    "LiveLink",
    "book_root",
    "caption_figure",
    "cite",
    "cite_t",
    "doc",
    "document_figures",
    "eval_to_roles",
    "figure_numbers",
    "ref",
    "roles_to_eval",
]

BIBLIOGRAPHY = "references.bib"  # beside the chapters
TOC = "_toc.yml"
# a figure cell whose picture needs downloaded weights: not drawn (so not numbered) offline
OPTIONAL_FIGURE_TAG = "figure-needs-weights"

# what this module reads and writes: its live calls, citation roles and ``(label)=`` targets
LIVE_CALL = re.compile(r"\{eval\}`(?P<function>cite|cite_t|doc|ref)\((?P<args>[^`]*)\)`")
CITE_ROLE = re.compile(r"\{cite(?::(?P<kind>[pt]))?\}`(?P<keys>[^`]+)`")
_LINK_ROLE = re.compile(r"\{(?P<role>doc|ref)\}`(?P<text>[^`<]+?)\s*<(?P<target>[^`>]+)>`")
TARGET_LINE = re.compile(r"^\((?P<label>[^)\s]+)\)=\s*$", re.M)
_FIGURE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?:figure|glue:figure)\}", re.M)
_NAME = re.compile(r"^:name:\s*(\S+)\s*$", re.M)


class LiveLink(str):
    """Text the prose shows (a citation, a link to a chapter), as a link in JupyterLab.

    It is a ``str`` (the text both readers see) whose HTML form is the link, with a tooltip.
    """

    __slots__ = ("html",)
    html: str

    def __new__(cls, text: str, html_form: str) -> LiveLink:
        """``text`` shown as plain text, ``html_form`` (a link) where HTML is shown."""
        link = super().__new__(cls, text)
        link.html = html_form
        return link

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        return self.html


def _anchor(text: str, href: str, title: str | None = None) -> str:
    tip = f' title="{html.escape(title)}"' if title else ""
    return f'<a href="{html.escape(href)}"{tip}>{html.escape(text)}</a>'


def book_root(start: str | Path | None = None) -> Path:
    """The folder holding the book's ``_toc.yml``: ``start`` (default: here) or one above it.

    Raises:
        FileNotFoundError: no ``_toc.yml`` in ``start`` or any folder above it.
    """
    here = Path.cwd() if start is None else Path(start)
    for folder in (here.resolve(), *here.resolve().parents):
        if (folder / TOC).is_file():
            return folder
    raise FileNotFoundError(
        f"no {TOC} in {here} or above it: the book's citations and figure numbers need the "
        "checkout (run the notebook from its book/ folder)"
    )


def _chapters_folder(start: str | Path | None = None) -> Path:
    """The folder of the chapters and ``references.bib``: ``start`` or the book's ``book/``."""
    here = Path.cwd() if start is None else Path(start)
    if (here / BIBLIOGRAPHY).is_file():
        return here
    candidate = book_root(here) / "book"
    if (candidate / BIBLIOGRAPHY).is_file():
        return candidate
    raise FileNotFoundError(f"no {BIBLIOGRAPHY} in {here} or in the book's book/ folder")


@functools.lru_cache(maxsize=4)
def _bibliography(path: str, stamp: float) -> tuple[Any, dict[str, Any]]:
    """The parsed entries of ``path`` and their formatted forms (cached per file version)."""
    from pybtex.database import parse_file
    from pybtex.plugin import find_plugin

    data = parse_file(path)
    # sphinxcontrib-bibtex's default bibliography style ("alpha") gives the tooltip's text
    style = find_plugin("pybtex.style.formatting", "alpha")()
    formatted = {entry.key: entry for entry in style.format_entries(data.entries.values())}
    return data, formatted


class _Builder:
    """The one thing sphinxcontrib-bibtex asks of Sphinx's builder to format a citation."""

    name = "html"

    def get_relative_uri(self, from_: str, to: str) -> str:
        return "references.html"


def _citation(role: str, keys: tuple[str, ...], folder: str | Path | None) -> LiveLink:
    if not keys:
        raise ValueError(f"cite{'_t' if role == 't' else ''}() needs at least one key")
    for key in keys:
        if not isinstance(key, str) or not key:
            raise TypeError(f"citation keys must be non-empty strings, got {key!r}")
    import pybtex_docutils
    from docutils import nodes
    from sphinxcontrib.bibtex.style.referencing import format_references
    from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle
    from sphinxcontrib.bibtex.style.template import SphinxReferenceInfo

    path = _chapters_folder(folder) / BIBLIOGRAPHY
    data, formatted = _bibliography(str(path), path.stat().st_mtime)
    missing = [key for key in keys if key not in data.entries]
    if missing:
        raise ValueError(f"no entry {missing} in {path}; known: {sorted(data.entries)}")
    references = [
        (
            data.entries[key],
            formatted[key],
            SphinxReferenceInfo(
                _Builder(), "", "references", key, formatted[key].text.render_as("text"), "", ""
            ),
        )
        for key in keys
    ]
    # the book's setting: bibtex_reference_style = author_year (_config.yml)
    rendered = format_references(AuthorYearReferenceStyle(), role, references).render(
        pybtex_docutils.Backend()
    )
    text, parts = "", []
    for node in rendered:
        text += node.astext()
        if isinstance(node, nodes.reference):
            # the entry in full as a tooltip; no link: references.md is a {bibliography}
            # directive, which JupyterLab would show as it is written
            title = html.escape(node.get("reftitle") or "")
            parts.append(f'<span title="{title}">{html.escape(node.astext())}</span>')
        else:
            parts.append(html.escape(node.astext()))
    return LiveLink(text, "".join(parts))


def cite(*keys: str, folder: str | Path | None = None) -> LiveLink:
    """A parenthetical citation as the book prints ``{cite:p}``: "[Eckart and Young, 1936]".

    Args:
        keys: entries of ``references.bib``.
        folder: where ``references.bib`` is (default: here, else the book's ``book/``).
    """
    return _citation("p", keys, folder)


def cite_t(*keys: str, folder: str | Path | None = None) -> LiveLink:
    """A textual citation as the book prints ``{cite:t}``: "Eckart and Young [1936]"."""
    return _citation("t", keys, folder)


def _document_file(folder: Path, document: str) -> Path:
    for suffix in (".ipynb", ".md"):
        path = folder / f"{document}{suffix}"
        if path.is_file():
            return path
    raise ValueError(f"no document {document!r} (.ipynb or .md) in {folder}")


def doc(text: str, document: str, *, folder: str | Path | None = None) -> LiveLink:
    """A link to another chapter, as ``{doc}`text <document>``` (JupyterLab opens the notebook).

    Args:
        text: what the reader sees.
        document: the chapter's name without suffix, e.g. ``"01_image_factorization"``.
        folder: the chapters' folder (default: here).
    """
    if not isinstance(text, str) or not text.strip():
        raise TypeError(f"text must be a non-empty string, got {text!r}")
    if not isinstance(document, str) or not document:
        raise TypeError(f"document must be a non-empty string, got {document!r}")
    here = Path.cwd() if folder is None else Path(folder)
    path = _document_file(here, document)
    return LiveLink(text, _anchor(text, path.name, f"{document} ({path.suffix[1:]})"))


def ref(text: str, label: str, *, folder: str | Path | None = None) -> LiveLink:
    """A link to a labelled section of another chapter, as ``{ref}`text <label>```.

    JupyterLab opens the notebook that defines ``label`` (a ``(label)=`` line).
    """
    if not isinstance(text, str) or not text.strip():
        raise TypeError(f"text must be a non-empty string, got {text!r}")
    here = Path.cwd() if folder is None else Path(folder)
    targets = _targets(here)
    if label not in targets:
        raise ValueError(f"no target ({label})= in the notebooks of {here}")
    path = targets[label]
    return LiveLink(text, _anchor(text, path.name, f"{path.stem}, section {label}"))


_CODE_CELL = re.compile(
    r"^(?P<fence>`{3,})\{code-cell\}[^\n]*\n(?:---\n(?P<options>.*?)\n---\n)?"
    r"(?P<code>.*?)^(?P=fence)[ \t]*$",
    re.M | re.S,
)


def _cells(path: Path) -> list[dict]:
    """The cells of a notebook; of a MyST Markdown page, its text and ``{code-cell}`` blocks."""
    if path.suffix == ".md":
        import yaml

        text, cells, start = path.read_text(encoding="utf-8"), [], 0
        for match in _CODE_CELL.finditer(text):
            cells.append({"cell_type": "markdown", "source": text[start : match.start()]})
            options = yaml.safe_load(match.group("options") or "") or {}
            cells.append({"cell_type": "code", "source": match.group("code"), "metadata": options})
            start = match.end()
        cells.append({"cell_type": "markdown", "source": text[start:]})
        return cells
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    for cell in cells:
        if not isinstance(cell.get("source"), str):
            cell["source"] = "".join(cell.get("source", []))
    return cells


def _targets(folder: Path) -> dict[str, Path]:
    """``{label: file}`` of every ``(label)=`` target in the documents of ``folder``."""
    found: dict[str, Path] = {}
    for path in sorted([*folder.glob("*.ipynb"), *folder.glob("*.md")]):
        for cell in _cells(path):
            if cell.get("cell_type") == "markdown":
                for match in TARGET_LINE.finditer(cell["source"]):
                    found.setdefault(match.group("label"), path)
    return found


def caption_figure(cell: dict) -> dict | None:
    """A code cell's myst-nb figure (``metadata.mystnb.figure``) when the book numbers it.

    ``None`` for other cells, figures without a caption and cells tagged
    :data:`OPTIONAL_FIGURE_TAG` (their picture needs weights the offline book does not have).
    """
    if cell.get("cell_type") != "code":
        return None
    metadata = cell.get("metadata", {})
    figure = metadata.get("mystnb", {}).get("figure")
    if not isinstance(figure, dict) or not figure.get("caption"):
        return None
    if OPTIONAL_FIGURE_TAG in metadata.get("tags", []):
        return None
    return figure


def document_figures(path: Path) -> list[str | None]:
    """The numbered figures of one page, in order: each one's name (``None`` when unnamed).

    Counted: ``{figure}`` and ``{glue:figure}`` directives in Markdown, and code cells with a
    captioned myst-nb figure (:func:`caption_figure`).
    """
    names: list[str | None] = []
    for cell in _cells(path):
        if cell.get("cell_type") == "markdown":
            text = cell["source"]
            for match in _FIGURE.finditer(text):
                end = text.find(match.group("fence"), match.end())
                body = text[match.end() : end if end >= 0 else len(text)]
                name = _NAME.search(body)
                names.append(name.group(1) if name else None)
        elif (figure := caption_figure(cell)) is not None:
            names.append(figure.get("name"))
    return names


@dataclass(frozen=True)
class FigureNumbers:
    """The book's figure numbers.

    Attributes:
        first: ``{page: number of its first figure}``, every page of ``_toc.yml`` (pages
            relative to the book's root, without suffix, e.g. ``"book/04_channels_as_rank"``).
        numbers: ``{figure name: number}``.
    """

    first: dict[str, int] = field(default_factory=dict)
    numbers: dict[str, int] = field(default_factory=dict)


def _toc_pages(root: Path) -> list[str]:
    import yaml

    toc = yaml.safe_load((root / TOC).read_text(encoding="utf-8"))
    pages = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections", []))

    walk(toc.get("chapters", []))
    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    return pages


def figure_numbers(root: str | Path | None = None) -> FigureNumbers:
    """Number the figures of every page of ``_toc.yml`` as the book does: 1, 2, … in order.

    Args:
        root: the book's root folder (default: :func:`book_root` from here).
    """
    base = book_root(root)
    first: dict[str, int] = {}
    numbers: dict[str, int] = {}
    count = 0
    for page in _toc_pages(base):
        path = next(
            (base / f"{page}{s}" for s in (".ipynb", ".md") if (base / f"{page}{s}").is_file()),
            None,
        )
        if path is None:
            raise ValueError(f"{TOC} lists {page!r}, which is neither a .ipynb nor a .md file")
        first[page] = count + 1
        for name in document_figures(path):
            count += 1
            if name:
                numbers[name] = count
    return FigureNumbers(first=first, numbers=numbers)


def _call(function: str, args: tuple[str, ...]) -> str:
    return f"{{eval}}`{function}({', '.join(json.dumps(a, ensure_ascii=False) for a in args)})`"


def roles_to_eval(
    markdown: str, same_document_labels: set[str] | frozenset[str] = frozenset()
) -> str:
    """``markdown`` with its citation, ``{doc}`` and ``{ref}`` roles as the live inline expressions.

    Roles without an explicit text (``{doc}`name```) and references to labels of the same
    document (``same_document_labels``, which ``jupyterlab-myst`` resolves itself) are kept.
    """

    def citation(match: re.Match) -> str:
        keys = tuple(key.strip() for key in match.group("keys").split(","))
        return _call("cite_t" if match.group("kind") == "t" else "cite", keys)

    def link(match: re.Match) -> str:
        if match.group("role") == "ref" and match.group("target") in same_document_labels:
            return match.group(0)
        return _call(match.group("role"), (match.group("text"), match.group("target")))

    return _LINK_ROLE.sub(link, CITE_ROLE.sub(citation, markdown))


def eval_to_roles(markdown: str) -> str:
    """``markdown`` with the live inline expressions of this module as the book's roles.

    The inverse of :func:`roles_to_eval`; other ``{eval}`` roles are left as they are.
    """

    def role(match: re.Match) -> str:
        try:
            args = ast.literal_eval(f"({match.group('args')},)")
        except (SyntaxError, ValueError):
            args = (None,)
        if not all(isinstance(a, str) for a in args):
            raise ValueError(f"{match.group(0)!r}: the arguments must be string literals")
        function = match.group("function")
        if function in ("cite", "cite_t"):
            return f"{{cite:{'t' if function == 'cite_t' else 'p'}}}`{','.join(args)}`"
        if len(args) != 2:
            raise ValueError(f"{match.group(0)!r}: {function}() takes (text, target)")
        return f"{{{function}}}`{args[0]} <{args[1]}>`"

    return LIVE_CALL.sub(role, markdown)
