"""Building blocks of the book's figures: a self-displaying figure, image panels, grids.

Figures are built without ``pyplot`` so that they can be rendered into slider frames
(:mod:`kronlib.widgets`) without also appearing in the notebook; a notebook shows one by
leaving it as the last expression of a cell (or with ``display``).
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.ticker import MaxNLocator

from kronlib._validate import ArrayLike, as_float_tensor
from kronlib.widgets import figure_bytes

__all__ = [
    "SIGNED_CMAP",
    "NotebookFigure",
    "add_colorbar",
    "image_grid",
    "integer_ticks",
    "mosaic",
    "shape_text",
    "show",
    "signed_bound",
    "to_display",
]

#: the colormap of every signed map in the book (blue negative, white zero, red positive)
SIGNED_CMAP = "RdBu_r"


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


def signed_bound(*images: ArrayLike) -> float:
    """The largest magnitude over ``images``: the half-range of a zero-centred colour scale.

    1 when every entry is zero, so that a blank map is drawn white rather than failing.
    """
    bound = max(float(as_float_tensor(image, "image").detach().abs().max()) for image in images)
    return bound or 1.0


def show(
    ax: Axes,
    image: ArrayLike,
    title: str = "",
    *,
    scale: bool = True,
    signed: bool = False,
    bound: float | None = None,
) -> AxesImage:
    """Draw an image on ``ax`` without ticks and return it (for a colour bar).

    Args:
        ax: where to draw.
        image: ``(H, W)`` or ``(H, W, 3)``.
        title: axes title.
        scale: stretch values with :func:`to_display`; ``False`` shows them as they are,
            clipped to ``[0, 1]``.
        signed: a map of either sign: :data:`SIGNED_CMAP` on ``[-bound, bound]`` (zero white).
            An ``(H, W, 3)`` signed map cannot use a colormap; it is drawn as
            ``0.5 + 0.5·value/bound`` per channel, so zero is mid-grey.
        bound: the half-range of the signed scale (default: the image's largest magnitude),
            to put several panels on one scale.
    """
    if signed:
        array = as_float_tensor(image, "image").detach().cpu().to(torch.float64).numpy()
        bound = bound or signed_bound(array)
        if array.ndim == 3:
            shown = ax.imshow(np.clip(0.5 + 0.5 * array / bound, 0, 1), interpolation="nearest")
        else:
            shown = ax.imshow(
                array, cmap=SIGNED_CMAP, vmin=-bound, vmax=bound, interpolation="nearest"
            )
    else:
        array = (
            to_display(image) if scale else np.clip(np.asarray(torch.as_tensor(image).cpu()), 0, 1)
        )
        kwargs = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if array.ndim == 2 else {}
        shown = ax.imshow(array, interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return shown


def add_colorbar(fig: Figure, image: AxesImage, axes: Axes | list[Axes], label: str = ""):
    """A slim colour bar for ``image`` beside ``axes`` (one axes or several sharing a scale)."""
    bar = fig.colorbar(image, ax=axes, shrink=0.8, aspect=15, pad=0.02)
    bar.ax.tick_params(labelsize=7)
    if label:
        bar.set_label(label, fontsize=8)
    return bar


def integer_ticks(*axes: Axes, y: bool = False) -> None:
    """Put ticks of an index axis (x, and y too when asked) on whole numbers only."""
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if y:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def image_grid(
    images: list[ArrayLike],
    titles: list[str] | None = None,
    *,
    ncols: int | None = None,
    width: float = 9.0,
    scale: bool = True,
    signed: bool | list[bool] = False,
    shared_scale: bool = False,
    colorbar: bool = True,
    row_labels: list[str] | None = None,
) -> Figure:
    """A row (or grid) of images with titles; signed maps on :data:`SIGNED_CMAP`.

    Args:
        images: ``(H, W)`` or ``(H, W, 3)`` each.
        titles: one per image.
        ncols: images per row (default: all in one row).
        width: figure width in inches.
        scale: stretch unsigned images with :func:`to_display`.
        signed: which images are signed maps (one flag for all, or one per image).
        shared_scale: put every signed map on one scale (their largest magnitude) with one
            colour bar; otherwise each signed map gets its own scale and colour bar.
        colorbar: draw the colour bars of signed maps.
        row_labels: a label left of each row.
    """
    flags = list(signed) if isinstance(signed, list | tuple) else [bool(signed)] * len(images)
    if len(flags) != len(images):
        raise ValueError(f"signed must give one flag per image ({len(images)}), got {len(flags)}")
    ncols = ncols or len(images)
    nrows = -(-len(images) // ncols)
    fig = NotebookFigure(figsize=(width, width / ncols * nrows * 0.9 + 0.3), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    flat = axes.ravel()
    signed_images = [image for image, flag in zip(images, flags, strict=True) if flag]
    common = signed_bound(*signed_images) if shared_scale and signed_images else None
    last = None
    for k, ax in enumerate(flat):
        if k >= len(images):
            ax.axis("off")
            continue
        title = (titles or [""] * len(images))[k]
        shown = show(ax, images[k], title, scale=scale, signed=flags[k], bound=common)
        if flags[k] and colorbar and not shared_scale and np.ndim(images[k]) == 2:
            add_colorbar(fig, shown, ax)
        if flags[k]:
            last = shown
    if shared_scale and colorbar and last is not None:
        add_colorbar(fig, last, list(flat), "value (one scale, zero white)")
    for r, label in enumerate(row_labels or []):
        axes[r, 0].set_ylabel(label, fontsize=10)
    return fig


def mosaic(stack: ArrayLike, ncols: int | None = None, gap: int = 1) -> torch.Tensor:
    """Several maps ``(n, h, w)`` tiled into one image, ``ncols`` to a row, ``gap`` zeros apart.

    Zero is white on the signed colour scale, so the gaps read as separators there.

    Example:
        >>> mosaic(torch.ones(4, 2, 2)).shape
        torch.Size([5, 5])
    """
    maps = as_float_tensor(stack, "stack").detach().cpu()
    if maps.ndim != 3 or maps.shape[0] == 0:
        raise ValueError(f"stack must be (n, h, w) with n >= 1, got shape {tuple(maps.shape)}")
    n, h, w = maps.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = -(-n // ncols)
    out = torch.zeros(nrows * (h + gap) - gap, ncols * (w + gap) - gap, dtype=maps.dtype)
    for k in range(n):
        r, c = divmod(k, ncols)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = maps[k]
    return out


def shape_text(shape: tuple[int, ...]) -> str:
    """``(3, 4)`` -> ``"3×4"``."""
    return "×".join(str(s) for s in shape)
