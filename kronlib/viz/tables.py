"""Tables of computed numbers, displayed as Markdown in a notebook."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from IPython.display import Markdown

__all__ = ["markdown_table"]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> Markdown:
    """A Markdown table: one header row, then one row per sequence (values shown with ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(value) for value in row]
        if len(cells) != len(header):
            raise ValueError(f"each row must have {len(header)} cells, got {len(cells)}: {cells}")
        lines.append("| " + " | ".join(cells) + " |")
    return Markdown("\n".join(lines))
