"""Figures of chapters 3–4: singular-value spectra, filters, and depth against width."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from kronlib._validate import ArrayLike, as_float_tensor
from kronlib.spectral import LayerSVD
from kronlib.viz.base import NotebookFigure, add_colorbar, integer_ticks, show, signed_bound

__all__ = [
    "depth_width_figure",
    "filters_figure",
    "layer_spectrum_figure",
    "pruned_kernels_figure",
    "spectra_figure",
]


def spectra_figure(
    spectra: Mapping[str, ArrayLike], *, bounds: Mapping[str, int] | None = None, title: str = ""
) -> Figure:
    """Singular values (log scale) of several matrices, each with an optional rank bound marked.

    Args:
        spectra: label -> singular values, descending.
        bounds: label -> the rank bound to mark with a dashed line of the same colour.
        title: axes title.
    """
    fig = NotebookFigure(figsize=(7, 3.4), layout="constrained")
    ax = fig.add_subplot()
    for k, (label, values) in enumerate(spectra.items()):
        s = as_float_tensor(values, label).detach().cpu().double()
        s = s / s[0] if float(s[0]) > 0 else s
        ax.semilogy(
            np.arange(1, len(s) + 1),
            s.clamp_min(1e-18).numpy(),
            "o-",
            ms=3,
            color=f"C{k}",
            label=label,
        )
        if bounds and label in bounds:
            ax.axvline(bounds[label] + 0.5, color=f"C{k}", ls="--", lw=0.8)
    ax.set_xlabel("index i")
    ax.set_ylabel("σ_i / σ_1")
    integer_ticks(ax)
    ax.set_ylim(1e-18, 2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def filters_figure(
    filters: ArrayLike,
    titles: Sequence[str] | None = None,
    *,
    ncols: int = 8,
    width: float = 9.0,
    label: str = "filter value",
) -> Figure:
    """Small signed images in a grid, all on one zero-centred scale with one colour bar.

    Args:
        filters: ``(n, kh, kw)``.
        titles: one per filter.
        ncols: filters per row.
        width: figure width in inches.
        label: what the colour bar measures.
    """
    stack = as_float_tensor(filters, "filters").detach().cpu()
    if stack.ndim != 3:
        raise ValueError(f"filters must be (n, kh, kw), got shape {tuple(stack.shape)}")
    n = stack.shape[0]
    nrows = -(-n // ncols)
    fig = NotebookFigure(figsize=(width, width / ncols * nrows * 1.1 + 0.3), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    bound = signed_bound(stack)
    shown = None
    for k, ax in enumerate(axes):
        if k < n:
            shown = show(ax, stack[k], titles[k] if titles else "", signed=True, bound=bound)
        else:
            ax.axis("off")
    add_colorbar(fig, shown, list(axes), label)
    return fig


def layer_spectrum_figure(svds: Mapping[str, LayerSVD]) -> Figure:
    """Per layer: singular values, cumulative energy, and relative error of rank-k weights."""
    fig = NotebookFigure(figsize=(10, 3.2), layout="constrained")
    ax_s, ax_e, ax_r = fig.subplots(1, 3)
    for k, (label, svd) in enumerate(svds.items()):
        sigma = svd.singular_values.detach().cpu().numpy()
        index = np.arange(1, sigma.shape[0] + 1)
        ax_s.plot(index, sigma, "o-", ms=3, color=f"C{k}", label=label)
        ax_e.plot(index, svd.energy().detach().cpu().numpy(), "o-", ms=3, color=f"C{k}")
        errors = [svd.error(int(i)) for i in index]
        ax_r.plot(index, errors, "o-", ms=3, color=f"C{k}")
    ax_e.axhline(0.95, color="0.5", ls="--", lw=0.8)
    integer_ticks(ax_s, ax_e, ax_r)
    for ax, name in (
        (ax_s, "singular value σ_k"),
        (ax_e, "energy in first k"),
        (ax_r, "relative error, rank k"),
    ):
        ax.set_xlabel("k")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    ax_s.legend(fontsize=8)
    return fig


def depth_width_figure(
    kernels_by_depth: Sequence[ArrayLike], spectra_by_width: Mapping[int, ArrayLike]
) -> Figure:
    """Depth sets the size of the composed kernel, width its rank: one figure for both.

    Args:
        kernels_by_depth: composed kernels ``(K, K)`` for depth 1, 2, …, drawn on one pixel
            scale: every panel spans the largest kernel's side, the smaller ones at its centre.
        spectra_by_width: width ``p`` -> singular values of the rearranged composed kernel.
    """
    depth = len(kernels_by_depth)
    fig = NotebookFigure(figsize=(10, 5.8), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.05, 1])
    kernels = [as_float_tensor(k, "kernel").detach().cpu().double() for k in kernels_by_depth]
    sizes = [k.shape[-1] for k in kernels]
    side = max(sizes)
    axes = np.atleast_1d(top.subplots(1, depth))
    for L, (ax, kernel) in enumerate(zip(axes, kernels, strict=True), 1):
        shown = show(ax, kernel, f"depth {L}: {sizes[L - 1]}×{sizes[L - 1]}", signed=True)
        # one pixel scale for all panels: each spans the largest kernel's side
        margin = (side - sizes[L - 1]) / 2
        ax.set_xlim(-0.5 - margin, sizes[L - 1] - 0.5 + margin)
        ax.set_ylim(sizes[L - 1] - 0.5 + margin, -0.5 - margin)
        ax.set_facecolor("0.93")
        add_colorbar(top, shown, ax)
    top.suptitle(
        r"depth: $L$ layers of $k \times k$ kernels at stride $k$ compose into $k^L \times k^L$"
        " (one pixel scale)",
        fontsize=10,
    )
    ax = bottom.add_subplot()
    for k, (width, values) in enumerate(spectra_by_width.items()):
        s = as_float_tensor(values, "spectrum").detach().cpu().double()
        ax.semilogy(
            np.arange(1, len(s) + 1),
            (s / s[0]).clamp_min(1e-18).numpy(),
            "o-",
            ms=3,
            color=f"C{k}",
            label=f"width p = {width}",
        )
        ax.axvline(width + 0.5, color=f"C{k}", ls="--", lw=0.8)
    ax.set_xlabel("index i of the singular value of the rearranged kernel")
    ax.set_ylabel("σ_i / σ_1")
    ax.set_ylim(1e-18, 2)
    integer_ticks(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=4)
    bottom.suptitle(
        "width: the rank of the rearranged composed kernel is the number of shared channels p",
        fontsize=10,
    )
    return fig


def pruned_kernels_figure(
    x: ArrayLike,
    kernels: Sequence[ArrayLike],
    boxes: Sequence[tuple[int, int, int, int]],
    titles: Sequence[str],
) -> Figure:
    """The input with the windows of switched-off units outlined, then each unit's kernel.

    Args:
        x: the input image ``(H, W)``.
        kernels: one ``(H, W)`` effective kernel per unit (signed: own scale, colour bar).
        boxes: ``(top, left, height, width)`` of each kernel's window, outlined in both panels.
        titles: one per kernel.
    """
    n = len(kernels)
    fig = NotebookFigure(figsize=(2.6 * (n + 1), 2.9), layout="constrained")
    axes = fig.subplots(1, n + 1)
    show(axes[0], x, "input digit")
    for k, (kernel, box, title) in enumerate(zip(kernels, boxes, titles, strict=True)):
        shown = show(axes[k + 1], kernel, title, signed=True)
        add_colorbar(fig, shown, axes[k + 1])
        top, left, height, width = box
        whole = (height, width) == tuple(np.shape(kernel))[-2:]
        for ax, lw in ((axes[0], 1.6), (axes[k + 1], 1.0)):
            if whole:  # the window is the canvas: colour the frame instead
                for spine in ax.spines.values():
                    spine.set(edgecolor=f"C{k + 1}", linewidth=2 * lw)
                continue
            ax.add_patch(
                Rectangle(
                    (left - 0.5, top - 0.5), width, height, fill=False, edgecolor=f"C{k + 1}", lw=lw
                )
            )
    return fig
