"""Figures of chapter 1: rearrangement, factor shapes, rank and modes of a factorization."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from kronlib._validate import ArrayLike, as_float_tensor
from kronlib.kron import BudgetPoint, KronFactorization, nkp, rearrange
from kronlib.viz.base import NotebookFigure, add_colorbar, integer_ticks, shape_text, show

__all__ = [
    "budget_figure",
    "colour_factors_figure",
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
    for ax, factor, name, shape in (
        (axes[0], B, "B", fac.grid_shape),
        (axes[1], C, "C", fac.block_shape),
    ):
        shown = _factor(ax, factor, f"{name}: {shape_text(shape)}")
        if factor.ndim == 2:
            add_colorbar(fig, shown, ax)
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
    integer_ticks(ax)
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


def _factor(ax: Axes, factor: torch.Tensor, title: str):
    """A Kronecker factor: 2-D on the signed colormap; RGB with zero at mid-grey if signed."""
    if factor.ndim == 3 and float(factor.min()) >= 0:
        return show(ax, factor, title)  # a non-negative colour factor: its own colours
    return show(ax, factor, title, signed=True)


def modes_figure(fac: KronFactorization, rank: int = 5, title: str = "") -> Figure:
    """One row per mode ``i``: ``B_i``, ``C_i``, ``B_i ⊗ C_i`` and the sum of modes ``1..i``.

    Factors and terms are signed maps, each on its own zero-centred scale with a colour bar
    (colour factors of either sign: zero is mid-grey); the running sums are images.
    """
    terms = fac.terms(rank)
    fig = NotebookFigure(figsize=(10, 1.9 * rank + 0.4), layout="constrained")
    axes = fig.subplots(rank, 4, squeeze=False, width_ratios=[1, 1.25, 1, 0.8])
    cumulative = torch.zeros_like(terms[0])
    for i in range(rank):
        cumulative = cumulative + terms[i]
        for ax, factor, name in (
            (axes[i, 0], fac.B[i], f"B{i + 1}"),
            (axes[i, 1], fac.C[i], f"C{i + 1}"),
            (axes[i, 2], terms[i], f"B{i + 1} ⊗ C{i + 1}"),
        ):
            shown = _factor(ax, factor, name)
            if factor.ndim == 2:
                add_colorbar(fig, shown, ax)
        show(axes[i, 3], cumulative, f"sum of modes 1..{i + 1}", scale=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def colour_factors_figure(
    allocations: dict[str, KronFactorization], notes: dict[str, str] | None = None
) -> Figure:
    """The first mode of colour factorizations: ``B1``, ``C1`` and ``B1 ⊗ C1``, one row each.

    A grey factor is drawn with its contrast stretched from its smallest to its largest value,
    with a colour bar giving the range (a nearly flat factor would otherwise look blank); a
    colour factor as its colours, each channel divided by the largest value.

    Args:
        allocations: row label -> a factorization with ``color`` ``"B"`` or ``"C"``.
        notes: row label -> a line added under the title of that row's colour factor.
    """
    fig = NotebookFigure(figsize=(10, 3.1 * len(allocations)), layout="constrained")
    axes = fig.subplots(len(allocations), 3, squeeze=False, width_ratios=[1.3, 1, 1.3])
    for row, (label, fac) in enumerate(allocations.items()):
        for col, (name, factor) in enumerate((("B1", fac.B[0]), ("C1", fac.C[0]))):
            ax = axes[row, col]
            shape = shape_text(tuple(factor.shape))
            if factor.ndim == 2:
                array = factor.detach().cpu().double().numpy()
                shown = ax.imshow(
                    array, cmap="gray", vmin=array.min(), vmax=array.max(), interpolation="nearest"
                )
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{name} ({shape}), contrast stretched", fontsize=9)
                add_colorbar(fig, shown, ax)
            else:
                extra = (notes or {}).get(label, "")
                show(ax, factor, f"{name} ({shape})" + (f"\n{extra}" if extra else ""))
        show(axes[row, 2], fac.reconstruct(1).clamp(0, 1), "B1 ⊗ C1", scale=False)
        axes[row, 0].set_ylabel(label, fontsize=10)
    return fig


def budget_figure(points: list[BudgetPoint], image_shape: tuple[int, int]) -> Figure:
    """Error against the split between ``B`` and ``C`` at fixed storage budgets.

    One line per budget; the x axis is the side of the (square) block ``C``, from a large
    ``B`` with tiny blocks on the left to a tiny ``B`` with large blocks on the right. The best
    split of each budget is marked; points where not even one term fits are left out.
    """
    fig = NotebookFigure(figsize=(8, 3.8), layout="constrained")
    ax = fig.add_subplot()
    total = image_shape[0] * image_shape[1]
    budgets = sorted({p.budget for p in points})
    for k, budget in enumerate(budgets):
        row = [p for p in points if p.budget == budget and p.rank > 0]
        sides = np.array([p.block_shape[0] for p in row])
        errors = np.array([p.error for p in row])
        ax.plot(
            sides,
            errors,
            "o-",
            ms=4,
            color=f"C{k}",
            label=f"{budget:,} numbers ({budget / total:.0%} of the pixels)",
        )
        best = int(errors.argmin())
        ax.plot(sides[best], errors[best], "*", ms=14, color=f"C{k}", mec="k", mew=0.6)
        for p in row:
            ax.annotate(
                f"r={p.rank}",
                (p.block_shape[0], p.error),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
                color=f"C{k}",
            )
    shown = sorted({p.block_shape[0] for p in points if p.rank > 0})
    ax.set_xscale("log")
    ax.set_xticks(shown)
    ax.set_xticklabels([str(s) for s in shown])
    ax.minorticks_off()
    ax.set_xlabel("side of the block C (B is the image size divided by it); r: terms that fit")
    ax.set_ylabel("relative error")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="storage budget", title_fontsize=8)
    return fig
