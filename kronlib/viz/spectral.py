"""Figures of chapters 3–4: singular-value spectra, filters, and depth against width."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from kronlib._validate import ArrayLike, as_float_tensor
from kronlib.spectral import LayerSVD
from kronlib.viz.base import NotebookFigure, show

__all__ = ["depth_width_figure", "filters_figure", "layer_spectrum_figure", "spectra_figure"]


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
    ax.set_ylim(1e-18, 2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def filters_figure(
    filters: ArrayLike, titles: Sequence[str] | None = None, *, ncols: int = 8, width: float = 9.0
) -> Figure:
    """Small signed images in a grid: ``(n, kh, kw)`` filters (blue negative, red positive)."""
    stack = as_float_tensor(filters, "filters").detach().cpu()
    if stack.ndim != 3:
        raise ValueError(f"filters must be (n, kh, kw), got shape {tuple(stack.shape)}")
    n = stack.shape[0]
    nrows = -(-n // ncols)
    fig = NotebookFigure(figsize=(width, width / ncols * nrows * 1.1 + 0.2), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for k, ax in enumerate(axes):
        if k < n:
            show(ax, stack[k], titles[k] if titles else "", signed=True)
        else:
            ax.axis("off")
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
        kernels_by_depth: composed kernels ``(K, K)`` for depth 1, 2, …, drawn to scale.
        spectra_by_width: width ``p`` -> singular values of the rearranged composed kernel.
    """
    depth = len(kernels_by_depth)
    fig = NotebookFigure(figsize=(10, 5.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1])
    sizes = [as_float_tensor(k, "kernel").shape[-1] for k in kernels_by_depth]
    axes = top.subplots(1, depth, width_ratios=[max(s, sizes[-1] / 4) for s in sizes])
    for L, (ax, kernel) in enumerate(zip(np.atleast_1d(axes), kernels_by_depth, strict=True), 1):
        show(ax, kernel, f"depth {L}: {sizes[L - 1]}×{sizes[L - 1]}", signed=True)
    top.suptitle("depth: the composed kernel grows as k^L", fontsize=10)
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
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=4)
    bottom.suptitle(
        "width: the rank of the composed kernel is the number of shared channels", fontsize=10
    )
    return fig
