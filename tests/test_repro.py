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
