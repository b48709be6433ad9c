"""Rewrite the chapters' ``{glue:text}`` roles as ``{eval}`glued(...)` ``: one source, two readers.

JupyterLab (with ``jupyterlab-myst``) cannot read myst-nb's ``{glue:text}`key:spec` ``: it shows
the role raw (and ``{glue:figure}`` as an unknown directive). It evaluates ``{eval}`expression` ``
in the kernel, so each role becomes

    {glue:text}`best_error:.3f`   ->   {eval}`glued("best_error", ".3f")`
    {glue:text}`R_shape`          ->   {eval}`glued("R_shape")`

and each ``{glue:figure} key`` directive becomes a ``{figure}`` (same options, same caption) whose
first paragraph is ``{eval}`glued("key")` ``.

A bare ``{doc}`04_channels_as_rank` `` (which the book shows as that chapter's title, and
JupyterLab as the file name) gets the title written out, ``{doc}`Channels as rank
<04_channels_as_rank>` ``, so both show the same words.

Citations and links to other chapters become the inline expressions of ``kronlib.prose``, which
format them in the kernel as the book prints them (``{cite}`key` `` -> ``{eval}`cite("key")` ``,
``{doc}`text <name>` `` -> ``{eval}`doc("text", "name")` ``, ``{ref}`` to another chapter's
label -> ``{eval}`ref("text", "label")` ``), and the chapter imports what its prose calls.

Each code cell's ``from myst_nb import glue`` becomes ``from kronlib.glue import glue, glued``
(``kronlib.glue.glue`` records the value and still glues it for myst-nb). The book's Sphinx
extension turns the ``{eval}`` form back into ``{glue:text}`` when it builds, so the built pages
are unchanged (see ``kronlib/glue.py``).

Idempotent: run it again after merging prose from elsewhere; a notebook already converted is left
byte for byte as it is. Notebooks are written in nbformat's layout (one-space indent, sorted keys).

Usage::

    .venv/bin/python tools/glue_to_eval.py            # convert book/*.ipynb in place
    .venv/bin/python tools/glue_to_eval.py --check    # exit 1 and list what needs converting
    .venv/bin/python tools/glue_to_eval.py PATH ...   # only these notebooks
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from kronlib.prose import LIVE_CALL, TARGET_LINE, roles_to_eval

ROOT = Path(__file__).resolve().parents[1]

GLUE_TEXT = re.compile(r"\{glue:text\}`([^`]+)`")
# the old import, or kronlib's without glued (as a linter's unused-import fix leaves it)
OLD_IMPORT = re.compile(r"^(from myst_nb import glue|from kronlib\.glue import glue)[ \t]*$", re.M)
# glued looks unused to a linter: the prose's {eval} roles call it in the kernel
NEW_IMPORT = "from kronlib.glue import glue, glued  # noqa: F401 (the prose calls glued)"
# the same for the citations and links of kronlib.prose
PROSE_NAMES = ("cite", "cite_t", "doc", "ref")
PROSE_IMPORT = re.compile(r"^from kronlib\.prose import [^\n]*$", re.M)
KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")
BARE_DOC = re.compile(r"\{doc\}`([^`<>]+)`")
GLUE_FIGURE = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{glue:figure\}[ \t]+(?P<key>\S+)[ \t]*\n(?P<options>(?::[^\n]*\n)*)",
    re.M,
)


class ConversionError(ValueError):
    """A role this script cannot rewrite faithfully (a key from another document, say)."""


def eval_role(content: str) -> str:
    """``key`` or ``key:spec`` (a ``{glue:text}`` role's content) as the ``{eval}`` role."""
    key, _, spec = content.rpartition(":") if ":" in content else (content, "", "")
    if "::" in content or not KEY.match(key):
        raise ConversionError(f"cannot rewrite {{glue:text}}`{content}`: keys must be local names")
    if '"' in spec or "\\" in spec or "`" in spec:
        raise ConversionError(f"cannot rewrite {{glue:text}}`{content}`: unusual format spec")
    arguments = f'"{key}"' + (f', "{spec}"' if spec else "")
    return f"{{eval}}`glued({arguments})`"


def title_of(document: Path) -> str | None:
    """The first ``# `` heading of a notebook or MyST Markdown file (its title in the book)."""
    if document.suffix == ".ipynb":
        cells = json.loads(document.read_text(encoding="utf-8")).get("cells", [])
        text = "\n".join(_source(c) for c in cells if c.get("cell_type") == "markdown")
    else:
        text = document.read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return None


def doc_role(target: str, folder: Path) -> str:
    """``{doc}`target` `` with the target's title written out (as is if it has none)."""
    name = target.strip()
    for suffix in (".ipynb", ".md"):
        document = folder / f"{name}{suffix}"
        if document.is_file():
            title = title_of(document)
            if title and not any(c in title for c in "`<>"):
                return f"{{doc}}`{title} <{name}>`"
    return f"{{doc}}`{target}`"


def figure_directive(match: re.Match) -> str:
    """A ``{glue:figure} key`` header as a ``{figure}`` whose first paragraph is the figure."""
    key = match.group("key")
    if not KEY.match(key) or "::" in key:
        raise ConversionError(f"cannot rewrite {{glue:figure}} {key}: keys must be local names")
    head = f"{match.group('fence')}{{figure}}\n{match.group('options')}"
    return f'{head}\n{{eval}}`glued("{key}")`\n'


def convert_markdown(
    text: str, folder: Path | None = None, labels: frozenset[str] = frozenset()
) -> str:
    """A Markdown string converted for JupyterLab and the book alike.

    ``{glue:text}`` roles become ``{eval}`glued(...)` ``, ``{glue:figure}`` directives become
    ``{figure}`` directives showing ``{eval}`glued("key")` ``, bare ``{doc}`` roles (when
    ``folder``, where the documents are, is given) get their titles, and citations, ``{doc}`` and
    ``{ref}`` roles (except to ``labels``, the document's own) become ``kronlib.prose`` calls.
    """
    text = GLUE_FIGURE.sub(figure_directive, text)
    text = GLUE_TEXT.sub(lambda match: eval_role(match.group(1)), text)
    if folder is not None:
        text = BARE_DOC.sub(lambda match: doc_role(match.group(1), folder), text)
    return roles_to_eval(text, labels)


def convert_code(text: str) -> str:
    """``from myst_nb import glue`` rewritten as the import of kronlib's glue and glued.

    An import of kronlib's ``glue`` alone gets ``glued`` back: JupyterLab evaluates the prose's
    ``{eval}`glued(...)` `` roles in the kernel, so the name must be defined there.
    """
    return OLD_IMPORT.sub(NEW_IMPORT, text)


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def prose_import(names: set[str]) -> str:
    """The import of the ``kronlib.prose`` functions a chapter's prose calls."""
    listed = ", ".join(sorted(names))
    return f"from kronlib.prose import {listed}  # noqa: F401 (the prose calls them)"


def convert_notebook(notebook: dict, folder: Path | None = None) -> bool:
    """Convert a notebook (nbformat 4 JSON, in ``folder``) in place; True if anything changed.

    The first code cell that imports ``glue`` also imports the ``kronlib.prose`` functions the
    converted prose calls.
    """
    changed = False
    cells = notebook.get("cells", [])
    markdown = [_source(c) for c in cells if c.get("cell_type") == "markdown"]
    labels = frozenset(m.group("label") for text in markdown for m in TARGET_LINE.finditer(text))
    for cell in cells:
        text = _source(cell)
        if cell.get("cell_type") == "markdown":
            new = convert_markdown(text, folder, labels)
        elif cell.get("cell_type") == "code":
            new = convert_code(text)
        else:
            continue
        if new != text:
            cell["source"] = new.splitlines(keepends=True)
            changed = True
    called = {
        m.group("function")
        for c in cells
        if c.get("cell_type") == "markdown"
        for m in LIVE_CALL.finditer(_source(c))
    }
    for cell in cells:
        text = _source(cell)
        if cell.get("cell_type") != "code" or NEW_IMPORT not in text:
            continue
        wanted = prose_import(called) if called else ""
        if PROSE_IMPORT.search(text):
            new = PROSE_IMPORT.sub(wanted, text) if wanted else PROSE_IMPORT.sub("", text)
        elif wanted:
            new = text.replace(NEW_IMPORT, f"{NEW_IMPORT}\n{wanted}", 1)
        else:
            new = text
        if new != text:
            cell["source"] = new.splitlines(keepends=True)
            changed = True
        break
    return changed


def dumps(notebook: dict) -> str:
    """A notebook as nbformat writes it."""
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Convert the notebooks named (default: ``book/*.ipynb``); see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: book/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if needed")
    args = parser.parse_args(argv)
    paths = args.paths or sorted((ROOT / "book").glob("*.ipynb"))
    pending = []
    for path in paths:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        try:
            changed = convert_notebook(notebook, path.resolve().parent)
        except ConversionError as error:
            print(f"{path}: {error}", file=sys.stderr)
            return 2
        if not changed:
            continue
        pending.append(path)
        if not args.check:
            path.write_text(dumps(notebook), encoding="utf-8")
    verb = "need converting" if args.check else "converted"
    for path in pending:
        print(f"{verb}: {path}")
    if not pending:
        print("nothing to convert: no {glue:text}, {glue:figure}, {cite}, {doc} or {ref} left")
    return 1 if (args.check and pending) else 0


if __name__ == "__main__":
    sys.exit(main())
