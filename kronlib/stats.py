"""Bootstrap confidence intervals for the comparisons of chapter 7."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from kronlib._validate import as_int, as_real

__all__ = [
    "Interval",
    "auc",
    "bootstrap_subset_difference",
]


@dataclass(frozen=True)
class Interval:
    """An estimate and its percentile-bootstrap confidence interval ``[low, high]``."""

    estimate: float
    low: float
    high: float
    level: float

    def excludes(self, value: float = 0.0) -> bool:
        """Whether ``value`` lies outside the interval."""
        return not self.low <= value <= self.high


def _sample(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size < 2:
        raise ValueError(f"{name} must hold at least 2 values, got {array.size}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return array


def _level(level: float) -> float:
    level = as_real(level, "level")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return level


def bootstrap_subset_difference(
    values: ArrayLike,
    in_first: ArrayLike,
    groups: ArrayLike | None = None,
    *,
    level: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
) -> Interval:
    """``mean(values[in_first]) − mean(values[~in_first])``, with a bootstrap interval.

    When several values come from one source (the same digit in several placements), they are
    not independent: resampling values one by one gives intervals that are too narrow. With
    ``groups``, whole groups are resampled with replacement, every value of a chosen group kept
    (a cluster bootstrap); without, each value is its own group (the plain bootstrap).

    Args:
        values: ``(n,)``.
        in_first: ``(n,)`` bool: which values form the first subset.
        groups: ``(n,)`` integer group of each value (e.g. the source digit's index), or None.
        level: coverage of the interval.
        resamples: bootstrap resamples.
        seed: seed of the resampling (the interval is deterministic).
    """
    sample = _sample(values, "values")
    first = np.asarray(in_first).reshape(-1)
    if first.dtype != np.bool_ or first.size != sample.size:
        raise ValueError(f"in_first must be {sample.size} bools, got {first.dtype} {first.shape}")
    if first.all() or not first.any():
        raise ValueError("in_first must split the values into two non-empty subsets")
    labels = np.arange(sample.size) if groups is None else np.asarray(groups).reshape(-1)
    if labels.size != sample.size or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"groups must be {sample.size} integers, got {labels.dtype} {labels.shape}"
        )
    level = _level(level)
    resamples = as_int(resamples, "resamples", minimum=100)
    rng = np.random.default_rng(as_int(seed, "seed", minimum=0))
    ids, member = np.unique(labels, return_inverse=True)
    draws = rng.integers(0, ids.size, (resamples, ids.size))
    counts = np.stack([np.bincount(row, minlength=ids.size) for row in draws])  # (R, G)
    weights = counts[:, member].astype(np.float64)  # (R, n)
    w_first, w_second = weights * first, weights * ~first
    with np.errstate(invalid="ignore", divide="ignore"):
        diffs = (w_first @ sample) / w_first.sum(1) - (w_second @ sample) / w_second.sum(1)
    diffs = diffs[np.isfinite(diffs)]  # a resample without one of the subsets says nothing
    low, high = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    estimate = float(sample[first].mean() - sample[~first].mean())
    return Interval(estimate, float(low), float(high), level)


def auc(first: ArrayLike, second: ArrayLike) -> float:
    """How well a value separates two samples (the area under the ROC curve).

    ``P(a > b) + P(a = b) / 2`` for ``a`` from ``first`` and ``b`` from ``second``: 1 or 0 when
    the value separates them perfectly, 0.5 when it does not separate them at all.
    """
    a, b = _sample(first, "first"), _sample(second, "second")
    greater = (a[:, None] > b[None]).mean()
    ties = (a[:, None] == b[None]).mean()
    return float(greater + 0.5 * ties)
