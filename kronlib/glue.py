"""Numbers computed in a notebook, quoted in its prose: one source for the book and for JupyterLab.

A chapter computes a value in a code cell and names it::

    glue("best_error", rank_one_error[best_shape], display=False)

and its prose quotes it with an inline expression: an ``{eval}`` role around
``glued("best_error", ".3f")``.
That one piece of Markdown is read in two places:

* in JupyterLab, ``jupyterlab-myst`` evaluates the expression in the kernel when the Markdown cell
  runs and shows the text :func:`glued` returns;
* in the built book, the book's Sphinx extension (``book/_ext/kronbook_html.py``) turns each
  ``{eval}`` role around ``glued("key", "spec")`` into myst-nb's ``{glue:text}`` role around
  ``key:spec``, which pastes
  the value that :func:`glue` recorded in the executed notebook (cached, no kernel needed).

:func:`glued` formats exactly as ``{glue:text}`` does (the value's ``text/plain`` form, then the
optional format spec), so both readers see the same characters.
"""

from __future__ import annotations

import ast
import re
from typing import Any

__all__ = ["eval_to_glue_text", "glue", "glued", "plain_text"]

_EVAL_GLUED = re.compile(r"\{eval\}`glued\(([^`]*)\)`")
_FIGURE_GLUED = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{figure\}[ \t]*\n(?P<options>(?::[^\n]*\n)*)"
    r"\n?\{eval\}`glued\(\"(?P<key>[^\"`]+)\"\)`[ \t]*\n",
    re.M,
)

_VALUES: dict[str, Any] = {}


def plain_text(value: Any) -> str:
    """The ``text/plain`` form IPython shows for ``value`` (what myst-nb's glue stores)."""
    try:
        from IPython.core.formatters import format_display_data
    except ImportError:  # pragma: no cover - IPython is there wherever notebooks run
        return repr(value)
    bundle, _ = format_display_data(value, include=["text/plain"])
    return bundle.get("text/plain", repr(value))


def format_text(text: str, spec: str = "") -> str:
    """Format a ``text/plain`` string the way myst-nb's ``{glue:text}`` role does.

    Args:
        text: a value's ``text/plain`` form (quotes of a string included).
        spec: a format spec ending in its type character (``".3f"``, ``".1%"``, ``"d"``), or
            ``""`` for the text as it is (without a string's quotes).

    Returns:
        The text a reader sees.
    """
    try:
        value: Any = ast.literal_eval(text)
    except (SyntaxError, ValueError):
        value = text
    if spec == "":
        return str(value)
    kind = spec[-1]
    if kind == "s":
        value = str(value)
    elif kind in "bcdoxX":
        value = int(value)
    elif kind in "eEfFgGn%":
        value = float(value)
    return format(value, spec)


class GluedText(str):
    """A :func:`glued` result: shown as its bare text (no quotes), in Jupyter and in a REPL."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def glue(name: str, value: Any, display: bool = True) -> None:
    """Record ``value`` under ``name`` for the prose, and glue it for the book (myst-nb).

    Args:
        name: the key the prose quotes, as ``glued("name")`` in an ``{eval}`` role.
        value: any Python object; its ``text/plain`` form is what the prose shows.
        display: also show the value as this cell's output (as ``myst_nb.glue`` does).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    _VALUES[name] = value
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # a live session without myst-nb: the prose still works
        if display:
            from IPython.display import display as show

            show(value)
        return
    myst_glue(name, value, display=display)


def glued(name: str, spec: str = "") -> Any:
    """The text of the value glued as ``name``, formatted by ``spec`` as ``{glue:text}`` does.

    A glued matplotlib figure is returned as it is, so that Jupyter shows the picture (the book's
    ``{glue:figure}``; see :func:`eval_to_glue_text`).

    Args:
        name: a key given to :func:`glue` earlier in this session.
        spec: optional format spec ending in its type character, e.g. ``".3f"`` or ``".1%"``.

    Returns:
        The text, which Jupyter displays without quotes (or the figure).

    Raises:
        KeyError: if nothing was glued under ``name`` (run the cell that computes it first).
    """
    if name not in _VALUES:
        raise KeyError(
            f"nothing is glued as {name!r} yet: run the code cells above this text first"
        )
    value = _VALUES[name]
    if not spec and _is_figure(value):
        return GluedFigure(value)
    return GluedText(format_text(plain_text(value), spec))


class GluedFigure:
    """A glued matplotlib figure as Jupyter shows it: a PNG, drawn as a cell's output would be."""

    def __init__(self, figure: Any) -> None:
        self.figure = figure

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        import base64
        import io

        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", bbox_inches="tight")
        return {
            "image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
            "text/plain": repr(self.figure),
        }


def _is_figure(value: Any) -> bool:
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return False
    return isinstance(value, Figure)


def eval_to_glue_text(markdown: str) -> str:
    """A Markdown string's ``{eval}`` roles around ``glued("key", "spec")`` as ``{glue:text}``.

    What the book build does to the prose, so that myst-nb pastes values from the executed
    notebook. A ``{figure}`` directive without an argument whose body starts with a paragraph
    holding only an ``{eval}`` role around ``glued("key")`` becomes ``{glue:figure} key`` (same
    options, same caption). Other ``{eval}`` expressions are left as they are (myst-nb then warns
    that the page has no running kernel, and the build, warnings being errors, stops).

    Raises:
        ValueError: if a ``glued(...)`` call has other than one or two literal string arguments.
    """

    def replace(match: re.Match) -> str:
        try:
            arguments = ast.literal_eval(f"({match.group(1)},)")
        except (SyntaxError, ValueError) as error:
            raise ValueError(f"{match.group(0)}: glued takes literal strings") from error
        if not (1 <= len(arguments) <= 2 and all(isinstance(a, str) for a in arguments)):
            raise ValueError(f"{match.group(0)}: glued takes a key and an optional format spec")
        key, spec = (*arguments, "")[:2]
        return f"{{glue:text}}`{key}:{spec}`" if spec else f"{{glue:text}}`{key}`"

    markdown = _FIGURE_GLUED.sub(
        lambda m: f"{m.group('fence')}{{glue:figure}} {m.group('key')}\n{m.group('options')}",
        markdown,
    )
    return _EVAL_GLUED.sub(replace, markdown)
