"""Figures of the book. Every function returns a new :class:`matplotlib.figure.Figure`.

Figures are built without ``pyplot`` so that they can be rendered into slider frames
(:mod:`kronlib.widgets`) without also appearing in the notebook; a notebook shows one by
leaving it as the last expression of a cell (or with ``display``).
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from kronlib._validate import ArrayLike, as_float_tensor
from kronlib.kron import KronFactorization, nkp, rearrange
from kronlib.widgets import figure_bytes

__all__ = [
    "NotebookFigure",
    "error_curve_figure",
    "factor_shapes_figure",
    "image_grid",
    "modes_figure",
    "rank_figure",
    "rearrangement_figure",
    "show",
    "to_display",
]


class NotebookFigure(Figure):
    """A :class:`~matplotlib.figure.Figure` that notebooks display as a PNG by itself.

    Figures made without ``pyplot`` have no inline display of their own until matplotlib's
    inline backend is switched on; this one always shows.
    """

    def _repr_png_(self) -> bytes:
        return figure_bytes(self, dpi=100)


def to_display(image: ArrayLike) -> np.ndarray:
    """Scale an image linearly into ``[0, 1]`` for display: ``(H, W)`` or ``(H, W, 3)``.

    Factors of a decomposition can be of any scale and sign. A non-negative image is divided by
    its maximum, so zero stays black and the ratios between channels (its hue) are kept; an image
    with negative values maps its minimum to 0 and its maximum to 1 (all channels together). An
    image that is constant zero maps to 0.5.
    """
    array = as_float_tensor(image, "image").detach().cpu().to(torch.float64).numpy()
    low, high = float(array.min()), float(array.max())
    if low >= 0 and high > 0:
        return array / high
    if high - low < 1e-12:
        return np.full_like(array, 0.5)
    return (array - low) / (high - low)


def show(ax: Axes, image: ArrayLike, title: str = "", *, scale: bool = True) -> None:
    """Draw an image on ``ax`` without ticks; grayscale images use the gray colormap.

    ``scale=False`` shows values as they are (clipped to ``[0, 1]``) instead of min–max scaling.
    """
    array = to_display(image) if scale else np.clip(np.asarray(torch.as_tensor(image).cpu()), 0, 1)
    kwargs = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if array.ndim == 2 else {}
    ax.imshow(array, interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def image_grid(
    images: list[ArrayLike],
    titles: list[str] | None = None,
    *,
    ncols: int | None = None,
    width: float = 9.0,
    scale: bool = True,
) -> Figure:
    """A row (or grid) of images with titles."""
    ncols = ncols or len(images)
    nrows = -(-len(images) // ncols)
    fig = NotebookFigure(figsize=(width, width / ncols * nrows * 0.9 + 0.3), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for k, ax in enumerate(axes):
        if k < len(images):
            show(ax, images[k], (titles or [""] * len(images))[k], scale=scale)
        else:
            ax.axis("off")
    return fig


def _shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(str(s) for s in shape)


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
    show(ax_image, left, f"image {_shape_text(tuple(A.shape))}: {moved} blocks moved", scale=False)
    show(ax_matrix, filled, "", scale=False)
    ax_matrix.set_aspect("auto")
    ax_matrix.set_title(
        f"rearranged matrix {_shape_text(tuple(R.shape))}: one row per block", fontsize=9
    )
    if moved:
        i, j = divmod(moved - 1, n1)
        ax_image.add_patch(
            Rectangle((j * n2 - 0.5, i * m2 - 0.5), n2, m2, fill=False, edgecolor="red", lw=1.5)
        )
        ax_matrix.axhline((moved - 1) * per_block, color="red", lw=0.8)
    return fig


def factor_shapes_figure(
    image: ArrayLike, b_shape: tuple[int, int], color: str | None = None
) -> Figure:
    """B, C and B ⊗ C of the best single Kronecker term for a given shape of B."""
    fac = nkp(image, b_shape, rank=1, color=color)
    B, C = fac.B[0], fac.C[0]
    product = fac.reconstruct(1)
    fig = NotebookFigure(figsize=(10, 3.3), layout="constrained")
    axes = fig.subplots(1, 3, width_ratios=[1, 1, 1.3])
    show(axes[0], B, f"B: {_shape_text(fac.grid_shape)}")
    show(axes[1], C, f"C: {_shape_text(fac.block_shape)}")
    show(axes[2], product, f"B ⊗ C: {_shape_text(tuple(product.shape[:2]))}", scale=False)
    fig.suptitle(
        f"B {_shape_text(fac.grid_shape)}  ⊗  C {_shape_text(fac.block_shape)}  =  "
        f"{_shape_text(tuple(product.shape[:2]))}   (relative error {fac.error(1):.3f})",
        fontsize=10,
    )
    return fig


def error_curve_figure(fac: KronFactorization, max_rank: int | None = None) -> Figure:
    """Relative Frobenius error against rank, measured and as predicted by the singular values."""
    fig = NotebookFigure(figsize=(6, 3.2), layout="constrained")
    _draw_error_curve(fig.add_subplot(), fac, max_rank or fac.rank)
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
