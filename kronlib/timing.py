"""Wall-clock timing for the benchmarks and the book's cost comparisons."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ["median_seconds", "paired_median_seconds"]


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock time of ``fn()`` in seconds, after ``warmup`` untimed calls."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be ≥ 1 and warmup ≥ 0, got {repeats} and {warmup}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_median_seconds(
    first: Callable[[], object],
    second: Callable[[], object],
    repeats: int = 20,
    warmup: int = 2,
    block: int = 1,
) -> tuple[float, float]:
    """Median times per call of two functions measured in alternation, ``first`` then ``second``.

    Each of ``repeats`` rounds times ``block`` consecutive calls of ``first``, then ``block``
    calls of ``second``. Alternating exposes both to the same drift of the machine (frequency,
    other load), so their ratio is steadier than that of two separate series.

    ``block`` sets what is measured. With ``block=1`` every call comes right after the other
    function's, with what that left in the caches: the time of one call amid other work. A
    longer block measures the steady state, a function called again and again, as ``timeit``
    and ``torch.utils.benchmark`` do (a block's first call still pays for the switch, shared
    by the block).

    Returns:
        ``(median seconds per call of first, median seconds per call of second)``.
    """
    for name, value, least in (("repeats", repeats, 1), ("warmup", warmup, 0), ("block", block, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int ≥ {least}, got {value!r}")
    for _ in range(warmup):
        first()
        second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            for _ in range(block):
                fn()
            bucket.append((time.perf_counter() - start) / block)
    return statistics.median(times[0]), statistics.median(times[1])
