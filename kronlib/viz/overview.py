"""The landing page's figure: the book's claim in one picture."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure

from kronlib._validate import ArrayLike, as_float_tensor
from kronlib.conv import kron_kernel
from kronlib.viz.base import NotebookFigure, show

__all__ = ["overview_figure"]


def _as_kernel(w: ArrayLike, name: str) -> torch.Tensor:
    """A one-channel kernel given as ``(k, k)`` or ``(1, 1, k, k)``, returned as ``(k, k)``."""
    t = as_float_tensor(w, name)
    if t.ndim == 4 and t.shape[:2] == (1, 1):
        t = t[0, 0]
    if t.ndim != 2:
        raise ValueError(
            f"{name} must be one 2-D kernel, (k_h, k_w) or (1, 1, k_h, k_w); got shape "
            f"{tuple(t.shape)}"
        )
    return t


def overview_figure(
    w1: ArrayLike,
    w2: ArrayLike,
    templates: ArrayLike,
    *,
    labels: Sequence[str] | None = None,
    templates_title: str = "a whole network as templates: rows of its virtual matrix",
) -> Figure:
    """Two convolutions as one Kronecker kernel, next to a network's class templates.

    Left: ``W2``, ``W1`` and ``W2 ⊗ W1``, the single kernel that two convolutions with
    stride equal to their kernel size compose into, with a thin line around each copy of ``W1``.
    Right: the class templates (rows of a data-independent virtual matrix), on a blue–white–red
    scale centred on zero, two rows.

    Args:
        w1: the first layer's kernel, ``(k1h, k1w)`` or ``(1, 1, k1h, k1w)``.
        w2: the second layer's kernel, ``(k2h, k2w)`` or ``(1, 1, k2h, k2w)``.
        templates: ``(n, H, W)`` or ``(n, 1, H, W)``, one template per class.
        labels: a title per template (default ``"0"``, ``"1"``, ...).
        templates_title: the title above the templates.

    Example:
        >>> fig = overview_figure(torch.randn(3, 3), torch.randn(2, 2), torch.randn(10, 32, 32))
        >>> len(fig.subfigs)
        2
    """
    inner, outer = _as_kernel(w1, "w1"), _as_kernel(w2, "w2")
    t = as_float_tensor(templates, "templates")
    if t.ndim == 4 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 3 or t.shape[0] == 0:
        raise ValueError(
            f"templates must be (n, H, W) or (n, 1, H, W) with n >= 1; got shape {tuple(t.shape)}"
        )
    n = t.shape[0]
    labels = list(labels) if labels is not None else [str(k) for k in range(n)]
    if len(labels) != n:
        raise ValueError(f"labels must give one title per template ({n}); got {len(labels)}")
    composed = kron_kernel(inner[None, None], outer[None, None])[0, 0]

    fig = NotebookFigure(figsize=(10.0, 3.5), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1.0, 1.15], wspace=0.04)
    axes = left.subplots(1, 5, width_ratios=[1, 0.3, 1, 0.3, 2.2])
    show(axes[0], outer, f"W2 ({outer.shape[0]}×{outer.shape[1]})", signed=True)
    show(axes[2], inner, f"W1 ({inner.shape[0]}×{inner.shape[1]})", signed=True)
    show(axes[4], composed, f"W2 ⊗ W1 ({composed.shape[0]}×{composed.shape[1]})", signed=True)
    for ax, symbol in ((axes[1], "⊗"), (axes[3], "=")):
        ax.axis("off")
        ax.text(0.5, 0.5, symbol, ha="center", va="center", fontsize=20)
    for at in range(inner.shape[1], composed.shape[1], inner.shape[1]):
        axes[4].axvline(at - 0.5, color="0.3", lw=0.6)
    for at in range(inner.shape[0], composed.shape[0], inner.shape[0]):
        axes[4].axhline(at - 0.5, color="0.3", lw=0.6)
    left.suptitle("two convolutions, one kernel", fontsize=13)

    ncols = -(-n // 2)  # two rows
    grid = right.subplots(-(-n // ncols), ncols, squeeze=False).ravel()
    for k, ax in enumerate(grid):
        if k < n:
            show(ax, t[k], labels[k], signed=True)
        else:
            ax.axis("off")
    right.suptitle(templates_title, fontsize=13)
    for ax in (*axes, *grid):  # a landing-page figure is shown smaller than a chapter's
        ax.title.set_fontsize(11)
    return fig
