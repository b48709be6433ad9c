"""Figures of chapter 2: convolution pipelines and the structure of convolution matrices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from kronlib._validate import ArrayLike, as_float_tensor
from kronlib.viz.base import NotebookFigure, show

__all__ = ["matrix_pattern_figure", "pipeline_figure"]

Panel = tuple[str, ArrayLike]
"""A titled image: ``(title, image)`` with the image ``(H, W)`` or ``(H, W, 3)``."""


def pipeline_figure(
    rows: Sequence[Sequence[Panel | str]], *, width: float = 10.0, title: str = ""
) -> Figure:
    """Rows of images joined by operators, e.g. ``input ∗ W1 = intermediate``.

    Args:
        rows: each row alternates panels ``(title, image)`` and operator strings (``"∗"``,
            ``"="``, ``"→"``); rows may differ in length.
        width: figure width in inches.
        title: optional title above the whole figure.
    """
    columns = max(len(row) for row in rows)
    kinds = [
        [isinstance(item, str) for item in row] + [True] * (columns - len(row)) for row in rows
    ]
    ratios = [0.25 if all(k[c] for k in kinds) else 1.0 for c in range(columns)]
    fig = NotebookFigure(figsize=(width, 2.3 * len(rows) + 0.3), layout="constrained")
    axes = fig.subplots(len(rows), columns, squeeze=False, width_ratios=ratios)
    for r, row in enumerate(rows):
        for c in range(columns):
            ax = axes[r, c]
            item = row[c] if c < len(row) else ""
            if isinstance(item, str):
                ax.axis("off")
                ax.text(0.5, 0.5, item, ha="center", va="center", fontsize=16)
            else:
                panel_title, image = item
                show(ax, image, panel_title)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def matrix_pattern_figure(
    M: ArrayLike,
    row_block: int | None = None,
    col_block: int | None = None,
    *,
    title: str = "",
    width: float = 7.0,
) -> Figure:
    """Where a matrix is non-zero (black), with lines between blocks of rows and columns.

    Args:
        M: ``(rows, cols)``.
        row_block: draw a line every ``row_block`` rows (e.g. one output row of a convolution).
        col_block: draw a line every ``col_block`` columns (e.g. one input row).
        title: axes title.
        width: figure width in inches.
    """
    matrix = as_float_tensor(M, "M").detach().cpu()
    nonzero = (matrix != 0).to(torch.float64).numpy()
    rows, cols = nonzero.shape
    height = max(2.0, min(9.0, width * rows / cols))
    fig = NotebookFigure(figsize=(width, height + 0.5), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(1 - nonzero, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    for step, draw, extent in ((row_block, ax.axhline, rows), (col_block, ax.axvline, cols)):
        if step:
            for at in np.arange(step, extent, step):
                draw(at - 0.5, color="C0", lw=0.6)
    ax.set_xlabel(f"input pixel ({cols})")
    ax.set_ylabel(f"output pixel ({rows})")
    density = nonzero.mean()
    ax.set_title(title or f"{rows}×{cols}, {density:.1%} non-zero", fontsize=10)
    return fig
