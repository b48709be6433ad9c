"""Figures of chapter 5: class templates, and per-channel activations with effective kernels.

Signed quantities (templates, rows, kernels) use one zero-centred diverging colormap,
:data:`SIGNED_CMAP`, with a colour bar; activations use viridis with their own colour bar.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import nn

from kronlib._validate import ArrayLike, as_float_tensor
from kronlib.viz.base import SIGNED_CMAP, NotebookFigure

__all__ = [
    "SIGNED_CMAP",
    "channel_mosaic",
    "effective_kernels_figure",
    "layer_view_figure",
    "templates_figure",
]

_OFF = np.array([0.86, 0.86, 0.86])  # the tile of a channel that is off for this input


def _tile(image: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of an ``(h, w, 3)`` tile to ``(size, size, 3)``."""
    h, w = image.shape[:2]
    rows = np.minimum((np.arange(size) * h) // size, h - 1)
    cols = np.minimum((np.arange(size) * w) // size, w - 1)
    return image[rows][:, cols]


def _crop(kernel: np.ndarray, side: int) -> np.ndarray:
    """The ``side×side`` window of a ``(H, W)`` kernel around its non-zero support."""
    height, width = kernel.shape
    if side >= max(height, width):
        return kernel
    rows, cols = np.nonzero(kernel)
    if rows.size == 0:
        centre_r, centre_c = height // 2, width // 2
    else:
        centre_r, centre_c = (rows.min() + rows.max()) // 2, (cols.min() + cols.max()) // 2
    top = int(np.clip(centre_r - side // 2, 0, height - side))
    left = int(np.clip(centre_c - side // 2, 0, width - side))
    return kernel[top : top + side, left : left + side]


def robust_bound(values: np.ndarray, quantile: float = 0.995) -> float:
    """A colour-scale bound: the ``quantile`` of the non-zero magnitudes.

    A few extreme entries would otherwise wash out every other kernel; 1 when all are zero.
    """
    magnitudes = np.abs(np.asarray(values)).ravel()
    magnitudes = magnitudes[magnitudes > 0]
    return float(np.quantile(magnitudes, quantile)) if magnitudes.size else 1.0


def _off(size: int) -> np.ndarray:
    """A light grey tile crossed by two diagonals: a channel that is off."""
    tile = np.ones((size, size, 3)) * _OFF
    diagonal = np.arange(size)
    tile[diagonal, diagonal] = tile[diagonal, size - 1 - diagonal] = 0.55
    return tile


def channel_mosaic(
    activations: ArrayLike | None,
    kernels: ArrayLike,
    *,
    ncols: int = 8,
    tile: int = 48,
    crop: int | None = None,
    kernel_bound: float | None = None,
    activation_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """One RGB image holding, per channel, its activation map and its effective kernel.

    Activations are coloured with viridis on ``activation_range``; kernels (summed over input
    channels) with :data:`SIGNED_CMAP` on ``[-kernel_bound, kernel_bound]`` (default: the
    99.5th percentile of the non-zero magnitudes, :func:`robust_bound`; larger values
    saturate). A channel whose
    kernel is exactly zero (switched off for this input) is drawn as a crossed grey tile.

    Args:
        activations: ``(n, h, w)`` maps, ``(n,)`` scalars (linear layers), or ``None``.
        kernels: ``(n, C, H, W)`` effective kernels on the input canvas.
        ncols: channels per row.
        tile: side of each tile in pixels.
        crop: show each kernel's ``crop×crop`` window around its support (its receptive field).
        kernel_bound: the colour scale of kernels (default: :func:`robust_bound`).
        activation_range: the colour scale of activations (default: their min and max).

    Returns:
        ``(rows·(tile + gap), ncols·width, 3)`` floats in ``[0, 1]``.
    """
    k = as_float_tensor(kernels, "kernels").detach().cpu().double().sum(1).numpy()
    n = k.shape[0]
    gap = max(2, tile // 8)
    rows = -(-n // ncols)
    width = 2 * tile + gap if activations is not None else tile + gap
    mosaic = np.ones((rows * (tile + gap), ncols * width, 3))
    bound = kernel_bound or robust_bound(k)
    signed = colormaps[SIGNED_CMAP]
    maps = None
    if activations is not None:
        a = as_float_tensor(activations, "activations").detach().cpu().double()
        a = a.reshape(n, 1, 1) if a.ndim == 1 else a
        low, high = activation_range or (float(a.min()), float(a.max()))
        scaled = (a - low) / (high - low) if high > low else torch.zeros_like(a)
        maps = colormaps["viridis"](scaled.clamp(0, 1).numpy())[..., :3]
    for c in range(n):
        r, q = divmod(c, ncols)
        top, left = r * (tile + gap), q * width
        if maps is not None:
            mosaic[top : top + tile, left : left + tile] = _tile(maps[c], tile)
            left += tile
        if not np.any(k[c]):
            picture = _off(tile)
        else:
            shown = _crop(k[c], crop) if crop else k[c]
            picture = _tile(signed(0.5 + 0.5 * np.clip(shown / bound, -1, 1))[..., :3], tile)
        mosaic[top : top + tile, left : left + tile] = picture
    return mosaic


def layer_view_figure(
    activations: ArrayLike | None,
    kernels: ArrayLike,
    title: str,
    *,
    ncols: int = 8,
    crop: int | None = None,
    grid: tuple[int, int] | None = None,
) -> Figure:
    """A layer at a glance: per channel, its activation map beside its effective kernel.

    Two colour bars under the tiles: activations (viridis, this layer's range) and kernels
    (the signed colormap, zero white). Channels that are off for this input show a crossed
    grey tile.

    Args:
        activations: ``(n, h, w)``, ``(n,)`` or ``None``.
        kernels: ``(n, C, H, W)``.
        title: the figure's title.
        ncols: at most this many channels per row.
        crop: show each kernel's receptive-field window, ``crop×crop``, enlarged.
        grid: ``(rows, columns)`` of tiles to draw on, whatever the number of channels (at
            least enough for them): every layer of a control then has the same size and tile
            scale (:func:`layer_grid`). Default: ``ncols`` columns (fewer for few channels).
    """
    k = as_float_tensor(kernels, "kernels")
    n = k.shape[0]
    if grid is not None:
        rows, columns = (int(v) for v in grid)
        if rows < 1 or columns < 1 or rows * columns < n:
            raise ValueError(f"grid {grid} has no room for {n} channels")
        ncols = columns
    else:
        rows, columns = -(-n // ncols), min(ncols, n)
    # one scale for the tiles and their colour bars
    bound = robust_bound(k.detach().cpu().double().sum(1).numpy())
    span = None
    if activations is not None:
        a = as_float_tensor(activations, "activations").detach().cpu().double()
        low, high = float(a.min()), float(a.max())
        span = (low, high if high > low else low + 1)
    tile = 40 if rows * columns > 32 else 56
    shown = min(columns, n)  # a layer with fewer channels is centred, at the grid's scale
    mosaic = channel_mosaic(
        activations,
        k,
        ncols=shown,
        tile=tile,
        crop=crop,
        kernel_bound=bound,
        activation_range=span,
    )
    width = 10.5
    inches_per_pixel = width / (mosaic.shape[1] / shown * columns)
    picture = mosaic.shape[0] * inches_per_pixel
    # a fixed grid keeps the figure's height for all its rows; the rows this layer does not
    # fill are left blank below the colour bars, as the static book pads its frames
    blank = picture / -(-n // shown) * rows - picture
    heights = [picture, 0.18] + ([blank] if blank > 1e-9 else [])
    fig = NotebookFigure(figsize=(width, picture + blank + 1.25), layout="constrained")
    grid = fig.add_gridspec(len(heights), 2, height_ratios=heights)
    ax = fig.add_subplot(grid[0, :])
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    kernel_bar = ScalarMappable(Normalize(-bound, bound), colormaps[SIGNED_CMAP])
    bar = fig.colorbar(kernel_bar, cax=fig.add_subplot(grid[1, 1]), orientation="horizontal")
    bar.set_label("effective kernel (zero is white)", fontsize=9)
    bar.ax.xaxis.set_major_locator(MaxNLocator(6, symmetric=True))  # labels that do not collide
    if span is not None:
        act_bar = ScalarMappable(Normalize(*span), "viridis")
        bar = fig.colorbar(act_bar, cax=fig.add_subplot(grid[1, 0]), orientation="horizontal")
        bar.set_label("activation", fontsize=9)
        bar.ax.xaxis.set_major_locator(MaxNLocator(6))
    return fig


def layer_grid(
    model: nn.Module, x: ArrayLike, layers: Sequence[str], ncols: int
) -> tuple[int, int]:
    """The tile grid ``(rows, ncols)`` that holds the channels of every one of ``layers``.

    Pass it as ``grid`` to :func:`effective_kernels_figure` in a control that steps through
    layers: every frame then has the same size (a live picture that does not jump).

    Args:
        model: a chain of named layers (``model.named_children()``).
        x: one input ``(C, H, W)``; one forward pass counts each layer's channels.
        layers: names of layers of the chain.
        ncols: channels per row.
    """
    if not isinstance(ncols, int) or isinstance(ncols, bool) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")
    wanted = list(layers)
    children = dict(model.named_children())
    unknown = [name for name in wanted if name not in children]
    if unknown:
        raise ValueError(f"no layer {unknown} in the model; it has {list(children)}")
    value = as_float_tensor(x, "x").detach().clone()[None]
    channels: dict[str, int] = {}
    # in eval mode for the count (a BatchNorm in training mode would update its statistics),
    # each module's mode restored afterwards
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            for name, child in children.items():
                value = child(value)
                channels[name] = int(value.shape[1])
                if all(n in channels for n in wanted):
                    break
    finally:
        for module, training in modes.items():
            module.training = training
    rows = max(-(-channels[name] // ncols) for name in wanted)
    return rows, ncols


def effective_kernels_figure(
    model: nn.Module,
    x: ArrayLike,
    layer: str,
    *,
    label: str,
    ncols: int = 16,
    grid: tuple[int, int] | None = None,
) -> Figure:
    """One layer of a chain model for one input: activations beside effective kernels.

    Each kernel is cropped to the layer's receptive field (:func:`kronlib.relu.receptive_fields`)
    while that is smaller than the input; the title names the layer, how many of its channels
    are active and the kernel size.

    Args:
        model: a chain of named layers (``model.named_children()``), e.g. LeNet-5.
        x: one input ``(C, H, W)`` with ``H == W``.
        layer: a layer name of the chain.
        label: what the title calls the model and the input (``"LeNet-5, digit 3"``).
        ncols: at most this many channels per row.
        grid: a fixed ``(rows, columns)`` of tiles (:func:`layer_grid`), so that every layer's
            figure has the same size.
    """
    from kronlib.relu import receptive_fields
    from kronlib.virtual import effective_kernels

    view = effective_kernels(model, x, layer)
    size = view.kernels.shape[-1]
    side = receptive_fields(model.named_children(), size)[layer]
    title = (
        f"{label}, {layer}: {len(view.kernels)} channels, {view.active_channels()} active; "
        f"kernels {side}×{side}"
    )
    crop = side if side < size else None
    return layer_view_figure(
        view.activations, view.kernels, title, ncols=ncols, crop=crop, grid=grid
    )


def templates_figure(
    templates: ArrayLike,
    mean_rows: ArrayLike,
    *,
    labels: Sequence[str] | None = None,
    row_titles: tuple[str, str] = ("data-independent template", "mean exact row"),
    ncols: int = 5,
) -> Figure:
    """Class templates above the class means of the exact rows, each kind on its own scale.

    Classes go ``ncols`` to a line; under each line of templates, the same classes' mean rows.
    Each kind is divided by its largest magnitude and drawn with the signed colormap on
    ``[-1, 1]``, zero white, with one colour bar.

    Args:
        templates: ``(K, H, W)`` or ``(K, 1, H, W)``.
        mean_rows: the same shape.
        labels: a title per class (default ``"0"``, ``"1"``, …).
        row_titles: what each row shows.
        ncols: classes per line.

    Example:
        >>> fig = templates_figure(torch.randn(10, 32, 32), torch.randn(10, 1, 32, 32))
        >>> len(fig.axes)  # 20 panels and one colour bar
        21
    """
    pair = []
    for value, name in ((templates, "templates"), (mean_rows, "mean_rows")):
        t = as_float_tensor(value, name).detach().cpu().double()
        t = t[:, 0] if t.ndim == 4 and t.shape[1] == 1 else t
        if t.ndim != 3:
            raise ValueError(f"{name} must be (K, H, W) or (K, 1, H, W), got {tuple(t.shape)}")
        pair.append(t)
    if pair[0].shape != pair[1].shape:
        raise ValueError(
            f"templates and mean_rows must have one shape, got {tuple(pair[0].shape)} and "
            f"{tuple(pair[1].shape)}"
        )
    classes = pair[0].shape[0]
    labels = list(labels) if labels is not None else [str(k) for k in range(classes)]
    columns = min(ncols, classes)
    blocks = -(-classes // columns)
    fig = NotebookFigure(figsize=(1.45 * columns + 1.3, 3.0 * blocks), layout="constrained")
    axes = fig.subplots(2 * blocks, columns, squeeze=False)
    bounds = [float(maps.abs().max()) or 1.0 for maps in pair]
    for row, (maps, title, bound) in enumerate(zip(pair, row_titles, bounds, strict=True)):
        for k in range(blocks * columns):
            ax = axes[2 * (k // columns) + row, k % columns]
            ax.set_xticks([])
            ax.set_yticks([])
            if k >= classes:
                ax.set_axis_off()
                continue
            image = ax.imshow((maps[k] / bound).numpy(), cmap=SIGNED_CMAP, vmin=-1, vmax=1)
            if row == 0:
                ax.set_title(labels[k], fontsize=11)
            if k % columns == 0:
                ax.set_ylabel(title.replace(" ", "\n", 1), fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.6, pad=0.01, label="value / largest |value| of its kind")
    return fig
