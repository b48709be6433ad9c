"""kronlib.set_reproducible: the same seed gives the same numbers."""

import numpy as np
import pytest
import torch

from kronlib import set_reproducible


def test_same_seed_same_draws():
    set_reproducible(seed=3)
    first = (torch.rand(3), np.random.rand(3))
    set_reproducible(seed=3)
    second = (torch.rand(3), np.random.rand(3))
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert torch.get_num_threads() == 1


def test_bad_thread_count():
    with pytest.raises(ValueError, match="threads must be a positive int, got 0"):
        set_reproducible(threads=0)


def test_median_seconds():
    from kronlib.timing import median_seconds

    calls = []
    seconds = median_seconds(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and 0 <= seconds < 1
    with pytest.raises(ValueError, match="repeats must be ≥ 1"):
        median_seconds(lambda: None, repeats=0)


def test_paired_median_seconds_alternates_blocks_of_calls():
    from kronlib.timing import paired_median_seconds

    calls = []
    first, second = paired_median_seconds(
        lambda: calls.append("a"), lambda: calls.append("b"), repeats=2, warmup=1, block=3
    )
    assert calls == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert 0 <= first < 1 and 0 <= second < 1
    for bad in ({"repeats": 0}, {"block": 0}, {"block": 2.0}, {"warmup": -1}, {"block": True}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be an int"):
            paired_median_seconds(lambda: None, lambda: None, **bad)
