"""Figures of chapter 1: rearrangement, factor shapes, rank and modes of a factorization."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from kronlib._validate import ArrayLike, as_float_tensor
from kronlib.kron import KronFactorization, nkp, rearrange
from kronlib.viz.base import NotebookFigure, shape_text, show

__all__ = [
    "factor_shapes_figure",
    "modes_figure",
    "rank_figure",
    "rearrangement_figure",
]


def rearrangement_figure(
    image: ArrayLike, block_shape: tuple[int, int], moved: int, color: str | None = None
) -> Figure:
    """One frame of the rearrangement: the first ``moved`` blocks taken out of the image.

    Left: the image with the moved blocks blacked out and the latest one outlined. Right: the
    rearranged matrix with its first ``moved`` rows filled (block ``(i, j)`` flattened into row
    ``i*n1 + j``) and the rest still black.
    """
    A = as_float_tensor(image, "image").detach().cpu()
    R = rearrange(A, block_shape, color)
    m2, n2 = block_shape
    n1 = A.shape[1] // n2
    per_block = R.shape[0] // (A.shape[0] // m2 * n1)  # rows per block: 3 for colour in B
    left = A.clone()
    filled = torch.zeros_like(R)
    for k in range(moved):
        i, j = divmod(k, n1)
        left[i * m2 : (i + 1) * m2, j * n2 : (j + 1) * n2] = 0
        rows = slice(k * per_block, (k + 1) * per_block)
        filled[rows] = R[rows]
    fig = NotebookFigure(figsize=(10, 3.6), layout="constrained")
    ax_image, ax_matrix = fig.subplots(1, 2, width_ratios=[1, 1.6])
    show(ax_image, left, f"image {shape_text(tuple(A.shape))}: {moved} blocks moved", scale=False)
    show(ax_matrix, filled, "", scale=False)
    ax_matrix.set_aspect("auto")
    ax_matrix.set_title(
        f"rearranged matrix {shape_text(tuple(R.shape))}: one row per block", fontsize=9
    )
    if moved:
        i, j = divmod(moved - 1, n1)
        ax_image.add_patch(
            Rectangle((j * n2 - 0.5, i * m2 - 0.5), n2, m2, fill=False, edgecolor="red", lw=1.5)
        )
        ax_matrix.axhline((moved - 1) * per_block, color="red", lw=0.8)
    return fig


def factor_shapes_figure(
    image: ArrayLike, grid_shape: tuple[int, int], color: str | None = None
) -> Figure:
    """B, C and B ⊗ C of the best single Kronecker term for a given shape of B."""
    fac = nkp(image, grid_shape, rank=1, color=color)
    B, C = fac.B[0], fac.C[0]
    product = fac.reconstruct(1)
    fig = NotebookFigure(figsize=(10, 3.3), layout="constrained")
    axes = fig.subplots(1, 3, width_ratios=[1, 1, 1.3])
    show(axes[0], B, f"B: {shape_text(fac.grid_shape)}")
    show(axes[1], C, f"C: {shape_text(fac.block_shape)}")
    show(axes[2], product, f"B ⊗ C: {shape_text(tuple(product.shape[:2]))}", scale=False)
    fig.suptitle(
        f"B {shape_text(fac.grid_shape)}  ⊗  C {shape_text(fac.block_shape)}  =  "
        f"{shape_text(tuple(product.shape[:2]))}   (relative error {fac.error(1):.3f})",
        fontsize=10,
    )
    return fig


def _tail_errors(fac: KronFactorization, max_rank: int) -> np.ndarray:
    energy = fac.singular_values.detach().cpu().to(torch.float64) ** 2
    tail = energy.flip(0).cumsum(0).flip(0)  # tail[r] = sum of σ_i² for i >= r (0-based)
    return (tail[1 : max_rank + 1].clamp_min(0) / energy.sum()).sqrt().numpy()


def _draw_error_curve(ax: Axes, fac: KronFactorization, max_rank: int, mark: int | None = None):
    ranks = np.arange(1, max_rank + 1)
    ax.plot(ranks, _tail_errors(fac, max_rank), color="C0", lw=1.5)
    if mark is not None:
        ax.plot([mark], [fac.error(mark)], "o", color="C3")
    ax.set_xlabel("rank r")
    ax.set_ylabel("relative error")
    ax.set_xlim(1, max_rank)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def rank_figure(fac: KronFactorization, rank: int, max_rank: int = 50) -> Figure:
    """The rank-``rank`` reconstruction next to the error curve, with ``rank`` marked on it."""
    fig = NotebookFigure(figsize=(10, 3.6), layout="constrained")
    ax_image, ax_curve = fig.subplots(1, 2, width_ratios=[1.1, 1])
    show(
        ax_image,
        fac.reconstruct(rank),
        f"Σ of {rank} Kronecker term{'s' * (rank > 1)}: relative error {fac.error(rank):.3f}",
        scale=False,
    )
    _draw_error_curve(ax_curve, fac, max_rank, mark=rank)
    ax_curve.set_title("error against rank", fontsize=9)
    return fig


def modes_figure(fac: KronFactorization, rank: int = 5, title: str = "") -> Figure:
    """One row per mode ``i``: ``B_i``, ``C_i``, ``B_i ⊗ C_i`` and the sum of modes ``1..i``."""
    terms = fac.terms(rank)
    fig = NotebookFigure(figsize=(8.5, 1.9 * rank + 0.4), layout="constrained")
    axes = fig.subplots(rank, 4, squeeze=False, width_ratios=[1, 1, 1.4, 1.4])
    cumulative = torch.zeros_like(terms[0])
    for i in range(rank):
        cumulative = cumulative + terms[i]
        show(axes[i, 0], fac.B[i], f"B{i + 1}")
        show(axes[i, 1], fac.C[i], f"C{i + 1}")
        show(axes[i, 2], terms[i], f"B{i + 1} ⊗ C{i + 1}")
        show(axes[i, 3], cumulative, f"sum of modes 1..{i + 1}", scale=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
