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

from kronlib._validate import ArrayLike, as_float_tensor
from kronlib.widgets import figure_bytes

__all__ = ["SIGNED_CMAP", "NotebookFigure", "image_grid", "shape_text", "show", "to_display"]

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


def show(
    ax: Axes, image: ArrayLike, title: str = "", *, scale: bool = True, signed: bool = False
) -> None:
    """Draw an image on ``ax`` without ticks; grayscale images use the gray colormap.

    Args:
        ax: where to draw.
        image: ``(H, W)`` or ``(H, W, 3)``.
        title: axes title.
        scale: stretch values with :func:`to_display`; ``False`` shows them as they are,
            clipped to ``[0, 1]``.
        signed: for a 2-D image of either sign (a kernel): a blue–white–red map centred on 0.
    """
    if signed:
        array = as_float_tensor(image, "image").detach().cpu().to(torch.float64).numpy()
        bound = float(np.abs(array).max()) or 1.0
        ax.imshow(array, cmap=SIGNED_CMAP, vmin=-bound, vmax=bound, interpolation="nearest")
    else:
        array = (
            to_display(image) if scale else np.clip(np.asarray(torch.as_tensor(image).cpu()), 0, 1)
        )
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


def shape_text(shape: tuple[int, ...]) -> str:
    """``(3, 4)`` -> ``"3×4"``."""
    return "×".join(str(s) for s in shape)
