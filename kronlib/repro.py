"""Reproducibility: one call fixes every source of run-to-run variation kronlib knows about."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["set_reproducible"]


def set_reproducible(seed: int = 0, threads: int = 1) -> None:
    """Seed Python, numpy and torch, and fix torch's CPU thread count.

    Results of reductions (matrix products, SVDs) depend on how work is split across threads, so
    the number of threads is part of what makes two runs give the same numbers.
    """
    if threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
