"""The book's trained networks: one call gives the model, its data and its accuracy.

Every chapter that needs a trained LeNet-5 or TinyConvNet calls :func:`trained`, so all of them
share one configuration and one weight cache (training happens once per machine).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from kronlib._validate import as_int
from kronlib.data import Digits, mnist, varied_mnist
from kronlib.models import DeepCNN, DigitResNet, LeNet5, TinyConvNet
from kronlib.train import TrainConfig, TrainResult, train

__all__ = ["BOOK_MODELS", "LENET_WIDTHS", "TrainedModel", "lenet_of_width", "trained"]


@dataclass(frozen=True)
class _Recipe:
    build: Callable[[], nn.Module]
    image_size: int
    config: TrainConfig
    varied: bool = False  # trained on fresh random placements, tested on fixed ones


LENET_WIDTHS: tuple[tuple[int, int], ...] = ((2, 4), (3, 8), (6, 16), (12, 32))
"""Channels ``(c1, c2)`` of the LeNets of chapter 7's width study; ``(6, 16)`` is ``"lenet5"``."""

BOOK_MODELS: dict[str, _Recipe] = {
    "lenet5": _Recipe(LeNet5, 32, TrainConfig(epochs=15)),
    "tinyconvnet": _Recipe(TinyConvNet, 28, TrainConfig(epochs=20)),
    "lenet5-varied": _Recipe(
        lambda: LeNet5(input_size=48),
        48,
        TrainConfig(epochs=24, learning_rate=3e-3, augment="place"),
        varied=True,
    ),
    "deep": _Recipe(DeepCNN, 32, TrainConfig(epochs=6)),
    "deep-varied": _Recipe(
        lambda: DeepCNN(input_size=48), 48, TrainConfig(epochs=8, augment="place"), varied=True
    ),
    "resnet": _Recipe(DigitResNet, 32, TrainConfig(epochs=8)),
    **{
        f"lenet5-c{c1}-{c2}": _Recipe(
            lambda c1=c1, c2=c2: LeNet5(channels=(c1, c2)), 32, TrainConfig(epochs=15)
        )
        for c1, c2 in LENET_WIDTHS
        if (c1, c2) != (6, 16)
    },
}
"""Name -> how the book trains it: constructor, input size, hyper-parameters, data."""


@dataclass(frozen=True)
class TrainedModel:
    """A trained network with the data it was trained and tested on."""

    model: nn.Module
    result: TrainResult
    train_data: Digits
    test_data: Digits


def trained(
    name: str, *, seed: int = 0, progress: bool = True, verbose: bool = True
) -> TrainedModel:
    """One of the book's trained networks (cached after the first call).

    ``"lenet5"`` and ``"deep"`` (a VGG-style chain of eight convolutions) learn centred
    digits; ``"lenet5-varied"`` and ``"deep-varied"`` learn digits placed at random positions
    and scales on a 48×48 canvas (fresh placements every epoch; tested on fixed ones);
    ``"tinyconvnet"`` is the SVD report's small network; ``"resnet"`` is
    :func:`kronlib.models.DigitResNet` (three residual blocks with BatchNorm) on centred
    digits; ``"lenet5-c2-4"``, ``"lenet5-c3-8"`` and ``"lenet5-c12-32"`` are LeNet-5 with other
    widths (:data:`LENET_WIDTHS`), trained exactly as ``"lenet5"``.

    Args:
        name: one of :data:`BOOK_MODELS`.
        seed: the training seed (initial weights, batch order, placements).
        progress: show a progress bar while training.
        verbose: print which MNIST source is in use and where the weights came from.
    """
    if not isinstance(name, str) or name not in BOOK_MODELS:
        raise ValueError(f"name must be one of {sorted(BOOK_MODELS)}, got {name!r}")
    seed = as_int(seed, "seed", minimum=0)
    recipe = BOOK_MODELS[name]
    config = dataclasses.replace(recipe.config, seed=seed)
    train_data = mnist("train", size=recipe.image_size, verbose=verbose)
    if recipe.varied:
        test_data = varied_mnist("test", canvas=recipe.image_size, verbose=False)
    else:
        test_data = mnist("test", size=recipe.image_size, verbose=False)
    key = name if seed == 0 else f"{name}-seed{seed}"
    result = train(
        key, recipe.build, train_data, test_data, config, progress=progress, verbose=verbose
    )
    return TrainedModel(result.model, result, train_data, test_data)


def lenet_of_width(channels: tuple[int, int], *, seed: int = 0, **kwargs) -> TrainedModel:
    """The trained LeNet-5 with conv channels ``channels`` (one of :data:`LENET_WIDTHS`)."""
    pairs = {tuple(int(c) for c in pair): pair for pair in LENET_WIDTHS}
    try:
        key = tuple(int(c) for c in channels)
    except (TypeError, ValueError):
        key = None
    if key not in pairs:
        raise ValueError(f"channels must be one of {list(LENET_WIDTHS)}, got {channels!r}")
    c1, c2 = key
    name = "lenet5" if key == (6, 16) else f"lenet5-c{c1}-{c2}"
    return trained(name, seed=seed, **kwargs)
