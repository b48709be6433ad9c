"""Time the cold training of every network the book trains (an empty weight cache).

    .venv/bin/python tools/cold_training.py

Trains, one after another and into a temporary directory (the real cache is not touched), the
networks that the chapters ask ``kronlib.zoo.trained`` for, and prints each one's wall time and
test accuracy, then the total. Run it with nothing else on the machine: the standard is three
minutes on two cores.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time

from kronlib import zoo
from kronlib.data import mnist, varied_mnist
from kronlib.train import train

#: (name, seed) of every network a chapter trains: chapter 5 uses two seeds of four networks
BOOK_RUNS = [
    *[
        (name, seed)
        for name in ("lenet5", "lenet5-varied", "deep", "deep-varied")
        for seed in (0, 1)
    ],
    *[
        (name, 0)
        for name in zoo.BOOK_MODELS
        if name not in ("lenet5", "lenet5-varied", "deep", "deep-varied")
    ],
]


def main() -> int:
    """Train every book network cold and print the times."""
    cache = tempfile.mkdtemp(prefix="kronbook-cold-")
    started = time.perf_counter()
    for name, seed in BOOK_RUNS:
        recipe = zoo.BOOK_MODELS[name]
        train_data = mnist("train", size=recipe.image_size, verbose=False)
        if recipe.varied:
            test_data = varied_mnist("test", canvas=recipe.image_size, verbose=False)
        else:
            test_data = mnist("test", size=recipe.image_size, verbose=False)
        begun = time.perf_counter()
        result = train(
            name if seed == 0 else f"{name}-seed{seed}",
            recipe.build,
            train_data,
            test_data,
            dataclasses.replace(recipe.config, seed=seed),
            cache_dir=cache,
            progress=False,
            verbose=False,
        )
        seconds = time.perf_counter() - begun
        print(f"{name:>14} seed {seed}: {seconds:6.1f} s, test accuracy {result.test_accuracy:.1%}")
    print(f"{'total':>14}: {time.perf_counter() - started:6.1f} s for {len(BOOK_RUNS)} networks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
