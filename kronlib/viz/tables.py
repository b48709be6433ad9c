"""Tables of computed numbers, displayed as Markdown in a notebook."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from IPython.display import Markdown

__all__ = ["is_numeric_cell", "markdown_table"]


#: a cell that reads as a number: an optional sign, then a digit (``-1.5e-07``, ``98.7%``,
#: ``1,024 (15%)``, ``14×14``, ``3.1 ms``)
_NUMERIC = re.compile(r"^[-+−]?\.?\d")


def is_numeric_cell(text: str) -> bool:
    """Whether a table cell reads as a number (it starts with a digit, after a sign)."""
    return bool(_NUMERIC.match(text.strip()))


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> Markdown:
    """A Markdown table: one header row, then one row per sequence (values shown with ``str``).

    Columns whose every cell reads as a number (:func:`is_numeric_cell`) are right-aligned, so
    that digits line up; the others are left-aligned.
    """
    table = []
    for row in rows:
        cells = [str(value) for value in row]
        if len(cells) != len(header):
            raise ValueError(f"each row must have {len(header)} cells, got {len(cells)}: {cells}")
        table.append(cells)
    numeric = [
        bool(table) and all(is_numeric_cell(r[c]) for r in table) for c in range(len(header))
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "".join("---:|" if right else ":---|" for right in numeric),
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in table]
    return Markdown("\n".join(lines))
