"""Figures of chapter 2: convolution pipelines and the structure of convolution matrices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from matplotlib.figure import Figure

from kronlib._validate import ArrayLike, as_float_tensor
from kronlib.conv import compose
from kronlib.viz.base import NotebookFigure, add_colorbar, show

__all__ = ["Panel", "composed_kernel_figure", "matrix_pattern_figure", "pipeline_figure"]


class Panel(NamedTuple):
    """A titled image for :func:`pipeline_figure`; ``signed`` for a map of either sign.

    A signed map (a kernel, a response) is drawn on :data:`~kronlib.viz.base.SIGNED_CMAP`, zero
    white, with a colour bar.

    A plain ``(title, image)`` pair is read as an unsigned ``Panel``.
    """

    title: str
    image: ArrayLike
    signed: bool = False
    bound: float | None = None  # the signed scale's half-range (default: the image's own)


def pipeline_figure(
    rows: Sequence[Sequence[Panel | str]], *, width: float = 10.0, title: str = ""
) -> Figure:
    """Rows of images joined by operators, e.g. ``input ∗ W1 = intermediate``.

    Args:
        rows: each row alternates :class:`Panel` s (or ``(title, image)`` pairs) and operator
            strings (``"∗"``, ``"="``, ``"→"``); rows may differ in length.
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
                panel = Panel(*item)
                shown = show(ax, panel.image, panel.title, signed=panel.signed, bound=panel.bound)
                if panel.signed:
                    add_colorbar(fig, shown, ax)
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


def composed_kernel_figure(w1: ArrayLike, w2: ArrayLike, stride1: int) -> Figure:
    """The kernel of two composed one-channel convolutions, for a given first-layer stride.

    Left: ``W1`` and ``W2``. Right: ``conv_transpose2d(W2, W1, stride1)``, with thin lines where
    the copies of ``W1`` start (every ``stride1`` pixels): they overlap when ``stride1 < k1``,
    tile exactly when ``stride1 == k1`` (the Kronecker product) and leave gaps beyond.
    """
    a, b = as_float_tensor(w1, "w1"), as_float_tensor(w2, "w2")
    kernel = compose(a, b, stride1=stride1)[0][0, 0]
    k1 = a.shape[-1]
    fig = NotebookFigure(figsize=(9, 3.4), layout="constrained")
    axes = fig.subplots(1, 3, width_ratios=[1, 1, 2.2])
    show(axes[0], a[0, 0], f"W1 ({k1}×{k1})", signed=True)
    show(axes[1], b[0, 0], f"W2 ({b.shape[-2]}×{b.shape[-1]})", signed=True)
    add_colorbar(fig, show(axes[2], kernel, "", signed=True), axes[2])
    for at in range(stride1, kernel.shape[-1], stride1):
        axes[2].axvline(at - 0.5, color="0.5", lw=0.5)
        axes[2].axhline(at - 0.5, color="0.5", lw=0.5)
    if stride1 < k1:
        relation = "the copies of W1 overlap"
    elif stride1 == k1:
        relation = "the copies of W1 tile it: W2 ⊗ W1"
    else:
        relation = "the copies of W1 leave gaps"
    axes[2].set_title(
        f"composed kernel {kernel.shape[-2]}×{kernel.shape[-1]} at stride1 = {stride1}:\n"
        f"{relation}",
        fontsize=9,
    )
    return fig
