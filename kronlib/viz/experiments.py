"""Figures of chapter 7's experiments: terms, distributions, curves, intervals, radii."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from kronlib._validate import ArrayLike, as_float_tensor
from kronlib.stats import Interval
from kronlib.viz.base import SIGNED_CMAP, NotebookFigure

__all__ = [
    "distributions_figure",
    "intervals_figure",
    "path_terms_figure",
    "pruning_figure",
    "radius_figure",
    "terms_figure",
]


def _array(value: object, name: str) -> np.ndarray:
    """A float64 numpy array of a tensor, an array or a (nested) sequence of numbers."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be numbers (a tensor, array or sequence): {error}") from None
    return array


def _maps(value: ArrayLike, name: str) -> torch.Tensor:
    t = as_float_tensor(value, name).detach().cpu().double()
    while t.ndim > 3 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 3:
        raise ValueError(
            f"{name} must be (K, H, W) (with singleton axes allowed), got {tuple(t.shape)}"
        )
    return t


def terms_figure(
    terms: ArrayLike, total: ArrayLike, *, labels: Sequence[str] | None = None
) -> Figure:
    """A row of per-channel terms, then their sum, on one signed scale with one colour bar.

    Args:
        terms: ``(C, H, W)`` (singleton axes allowed): one map per channel.
        total: ``(H, W)``: the sum (the saliency map).
        labels: a title per term (default ``"channel m"``).

    Example:
        >>> fig = terms_figure(torch.randn(3, 8, 8), torch.randn(8, 8))
        >>> len(fig.axes)  # 3 terms, the sum and a colour bar
        5
    """
    maps = _maps(terms, "terms")
    whole = _maps(as_float_tensor(total, "total").reshape(1, *maps.shape[1:]), "total")
    labels = list(labels) if labels is not None else [f"channel {m}" for m in range(len(maps))]
    if len(labels) != len(maps):
        raise ValueError(f"labels must give one title per term ({len(maps)}), got {len(labels)}")
    bound = float(max(maps.abs().max(), whole.abs().max())) or 1.0
    panels = len(maps) + 1
    fig = NotebookFigure(figsize=(1.55 * panels + 1.0, 2.2), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax, image, title in zip(axes, [*maps, whole[0]], [*labels, "sum = saliency"], strict=True):
        shown = ax.imshow(image.numpy(), cmap=SIGNED_CMAP, vmin=-bound, vmax=bound)
        ax.set_title(title, fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(shown, ax=list(axes), shrink=0.8, pad=0.01)
    bar.set_label("value", fontsize=11)
    bar.ax.tick_params(labelsize=10)
    return fig


def distributions_figure(
    counts: Mapping[str, ArrayLike], *, xlabel: str, maximum: int | None = None
) -> Figure:
    """Histograms of integer counts, one row per named sample, on a shared integer axis.

    Args:
        counts: name → ``(N,)`` integer counts (e.g. active channels per input).
        xlabel: what is counted.
        maximum: the largest possible count (the axis ends there).
    """
    if not counts:
        raise ValueError("counts must name at least one sample")
    samples = {name: _array(v, name) for name, v in counts.items()}
    top = int(maximum if maximum is not None else max(s.max() for s in samples.values()))
    fig = NotebookFigure(figsize=(6.4, 1.2 + 0.9 * len(samples)), layout="constrained")
    axes = fig.subplots(len(samples), 1, sharex=True, squeeze=False)[:, 0]
    edges = np.arange(-0.5, top + 1.5)
    for ax, (name, sample) in zip(axes, samples.items(), strict=True):
        ax.hist(sample, bins=edges, color="0.35", weights=np.full(sample.size, 100 / sample.size))
        ax.set_ylabel(f"{name}\n% of inputs", fontsize=8)
        ax.set_xlim(-0.5, top + 0.5)
    axes[-1].set_xlabel(xlabel)
    step = max(1, (top + 1) // 12)
    axes[-1].set_xticks(range(0, top + 1, step))
    return fig


def pruning_figure(
    curves: Mapping[str, ArrayLike], *, random: ArrayLike | None = None, channels: int
) -> Figure:
    """Test accuracy against the number of channels removed, one line per order.

    Args:
        curves: name → ``(C + 1,)`` accuracies after removing 0..C channels.
        random: ``(seeds, C + 1)`` accuracies of random orders (drawn as their range and mean).
        channels: C.
    """
    fig = NotebookFigure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    removed = np.arange(channels + 1)
    if random is not None:
        band = _array(random, "random")
        ax.fill_between(
            removed,
            100 * band.min(0),
            100 * band.max(0),
            color="0.85",
            label="random orders (range)",
        )
        ax.plot(
            removed, 100 * band.mean(0), color="0.45", lw=1.2, ls="--", label="random orders (mean)"
        )
    for (name, curve), marker in zip(curves.items(), "osD^v", strict=False):
        values = _array(curve, name)
        ax.plot(removed, 100 * values, marker=marker, ms=4, lw=1.5, label=name)
    ax.set_xlabel("channels removed")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(removed[:: max(1, channels // 8)])
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return fig


def intervals_figure(
    intervals: Mapping[str, Interval], *, xlabel: str, percent: bool = False
) -> Figure:
    """Estimates with their confidence intervals, one line each, and a zero line.

    With ``percent``, the values are fractions and the axis reads in percent.
    """
    names = list(intervals)
    fig = NotebookFigure(figsize=(6.4, 0.8 + 0.55 * len(names)), layout="constrained")
    ax = fig.subplots()
    for y, name in enumerate(names):
        item = intervals[name]
        ax.plot([item.low, item.high], [y, y], color="0.2", lw=2)
        ax.plot([item.estimate], [y], "o", color="0.2")
    ax.axvline(0, color="0.5", lw=1, ls=":")
    ax.set_yticks(range(len(names)), names, fontsize=9)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    if percent:
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.grid(axis="x", alpha=0.3)
    return fig


def path_terms_figure(
    shares: ArrayLike, maps: ArrayLike, *, counts: Sequence[int], xlabel: str
) -> Figure:
    """Left: a bar per path length; right: what each length carries, one row per length.

    Args:
        shares: ``(L,)`` one number per path length ``k = 0..L−1`` (fractions, drawn in %).
        maps: ``(L, K, H, W)``: per path length, ``K`` signed maps (each row on its own scale).
        counts: the number of paths of each length (``C(n, k)``), printed with the bars.
        xlabel: what the bars measure.
    """
    values = _array(shares, "shares")
    tiles = as_float_tensor(maps, "maps").detach().cpu().double()
    if tiles.ndim == 5 and tiles.shape[2] == 1:
        tiles = tiles[:, :, 0]
    if tiles.ndim != 4 or tiles.shape[0] != len(values):
        raise ValueError(f"maps must be (L={len(values)}, K, H, W), got {tuple(tiles.shape)}")
    lengths, columns = tiles.shape[:2]
    fig = NotebookFigure(figsize=(3.4 + 1.05 * columns, 0.8 + 1.2 * lengths), layout="constrained")
    grid = fig.add_gridspec(lengths, columns + 3)
    bar = fig.add_subplot(grid[:, :2])
    bar.barh(range(lengths), 100 * values, color="0.35")
    bar.set_yticks(
        range(lengths),
        [f"k = {k}\n({c} path{'s' if c != 1 else ''})" for k, c in enumerate(counts)],
        fontsize=11,
    )
    bar.tick_params(axis="x", labelsize=10)
    bar.invert_yaxis()
    bar.set_xlabel(xlabel, fontsize=11)
    for k in range(lengths):
        bound = float(tiles[k].abs().max()) or 1.0
        for c in range(columns):
            ax = fig.add_subplot(grid[k, 3 + c])
            shown = ax.imshow((tiles[k, c] / bound).numpy(), cmap=SIGNED_CMAP, vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0:
                ax.set_title(str(c), fontsize=11)
            if c == 0:
                ax.set_ylabel(f"k = {k}", fontsize=11)
    colour = fig.colorbar(shown, ax=fig.axes[1:], shrink=0.6, pad=0.01)
    colour.set_label("value / largest |value| of its row", fontsize=10)
    return fig


def radius_figure(radii: Mapping[str, ArrayLike], *, references: Mapping[str, float]) -> Figure:
    """Histograms of radii on a log axis, one per named sample, with labelled reference lines."""
    fig = NotebookFigure(figsize=(6.4, 3.4), layout="constrained")
    ax = fig.subplots()
    arrays = {name: _array(v, name) for name, v in radii.items()}
    positive = np.concatenate([a[(a > 0) & np.isfinite(a)] for a in arrays.values()])
    low = min([positive.min(), *references.values()]) / 2
    high = max([positive.max(), *references.values()]) * 2
    edges = np.geomspace(low, high, 50)
    for (name, values), colour in zip(arrays.items(), ("0.35", "#b2182b", "#2166ac"), strict=False):
        finite = values[(values > 0) & np.isfinite(values)]
        ax.hist(
            finite,
            bins=edges,
            alpha=0.6,
            color=colour,
            label=name,
            weights=np.full(finite.size, 100 / values.size),
        )
    for name, value in references.items():
        ax.axvline(value, color="0.1", lw=1, ls="--")
        ax.annotate(
            name,
            (value, 0.97),
            xycoords=("data", "axes fraction"),
            rotation=90,
            ha="right",
            va="top",
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.set_xlabel("distance to the nearest change of pattern (input units)")
    ax.set_ylabel("% of (input, direction) pairs")
    ax.legend(fontsize=9, loc="upper left")
    return fig
