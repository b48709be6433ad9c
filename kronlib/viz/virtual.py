"""Figures of chapter 5: class templates and per-channel activations with effective kernels."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from kronlib._validate import ArrayLike, as_float_tensor
from kronlib.viz.base import NotebookFigure, to_display

__all__ = ["channel_mosaic", "layer_view_figure"]


def _tile(image: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of an ``(h, w, 3)`` tile to ``(size, size, 3)``."""
    h, w = image.shape[:2]
    rows = np.minimum((np.arange(size) * h) // size, h - 1)
    cols = np.minimum((np.arange(size) * w) // size, w - 1)
    return image[rows][:, cols]


def _as_rgb(kernel: torch.Tensor) -> np.ndarray:
    """A kernel ``(C, H, W)`` as an RGB tile: colour for 3 channels, gray otherwise."""
    k = kernel.detach().cpu().double()
    if k.shape[0] == 3:
        return to_display(k.permute(1, 2, 0))
    gray = to_display(k.sum(0))
    return np.repeat(gray[..., None], 3, axis=2)


def channel_mosaic(
    activations: ArrayLike | None, kernels: ArrayLike, *, ncols: int = 8, tile: int = 48
) -> np.ndarray:
    """One RGB image holding, per channel, its activation map (viridis) and effective kernel.

    Args:
        activations: ``(n, h, w)`` maps, ``(n,)`` scalars (linear layers), or ``None``.
        kernels: ``(n, C, H, W)`` effective kernels on the input canvas.
        ncols: channels per row.
        tile: side of each tile in pixels.

    Returns:
        ``(rows·tile, ncols·(2·tile + gap), 3)`` floats in ``[0, 1]``.
    """
    k = as_float_tensor(kernels, "kernels")
    n = k.shape[0]
    gap = max(2, tile // 8)
    rows = -(-n // ncols)
    width = 2 * tile + gap if activations is not None else tile + gap
    mosaic = np.ones((rows * (tile + gap), ncols * width, 3))
    maps = None
    if activations is not None:
        a = as_float_tensor(activations, "activations").detach().cpu().double()
        a = a.reshape(n, 1, 1) if a.ndim == 1 else a
        low, high = float(a.min()), float(a.max())
        scaled = (a - low) / (high - low) if high > low else torch.zeros_like(a)
        maps = colormaps["viridis"](scaled.numpy())[..., :3]
    for c in range(n):
        r, q = divmod(c, ncols)
        top, left = r * (tile + gap), q * width
        if maps is not None:
            mosaic[top : top + tile, left : left + tile] = _tile(maps[c], tile)
            left += tile
        mosaic[top : top + tile, left : left + tile] = _tile(_as_rgb(k[c]), tile)
    return mosaic


def layer_view_figure(
    activations: ArrayLike | None, kernels: ArrayLike, title: str, *, ncols: int = 8
) -> Figure:
    """A layer at a glance: per channel, activation (viridis) beside effective kernel (gray)."""
    k = as_float_tensor(kernels, "kernels")
    mosaic = channel_mosaic(activations, k, ncols=ncols, tile=40 if k.shape[0] > 32 else 56)
    height = 9.5 * mosaic.shape[0] / mosaic.shape[1] + 0.5
    fig = NotebookFigure(figsize=(9.5, max(1.6, height)), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    return fig
