"""Bootstrap confidence intervals for the comparisons of chapter 7."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from kronlib._validate import as_int, as_real

__all__ = ["Interval", "bootstrap_mean", "bootstrap_mean_difference"]


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


def bootstrap_mean_difference(
    a: ArrayLike,
    b: ArrayLike,
    *,
    level: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
) -> Interval:
    """``mean(a) − mean(b)`` with a percentile-bootstrap interval (each sample resampled).

    Args:
        a: first sample ``(n_a,)``.
        b: second sample ``(n_b,)``.
        level: coverage of the interval.
        resamples: bootstrap resamples.
        seed: seed of the resampling (the interval is deterministic).
    """
    first, second = _sample(a, "a"), _sample(b, "b")
    level = _level(level)
    resamples = as_int(resamples, "resamples", minimum=100)
    rng = np.random.default_rng(as_int(seed, "seed", minimum=0))
    means_a = first[rng.integers(0, first.size, (resamples, first.size))].mean(1)
    means_b = second[rng.integers(0, second.size, (resamples, second.size))].mean(1)
    low, high = np.quantile(means_a - means_b, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(first.mean() - second.mean()), float(low), float(high), level)


def bootstrap_mean(
    a: ArrayLike, *, level: float = 0.95, resamples: int = 4000, seed: int = 0
) -> Interval:
    """``mean(a)`` with a percentile-bootstrap interval."""
    first = _sample(a, "a")
    level = _level(level)
    resamples = as_int(resamples, "resamples", minimum=100)
    rng = np.random.default_rng(as_int(seed, "seed", minimum=0))
    means = first[rng.integers(0, first.size, (resamples, first.size))].mean(1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(first.mean()), float(low), float(high), level)
