"""The book's trained networks: one call gives the model, its data and its accuracy.

Every chapter that needs a trained LeNet-5 or TinyConvNet calls :func:`trained`, so all of them
share one configuration and one weight cache (training happens once per machine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from kronlib.data import Digits, mnist
from kronlib.models import LeNet5, TinyConvNet
from kronlib.train import TrainConfig, TrainResult, train

__all__ = ["BOOK_MODELS", "TrainedModel", "trained"]


@dataclass(frozen=True)
class _Recipe:
    build: Callable[[], nn.Module]
    image_size: int
    config: TrainConfig


BOOK_MODELS: dict[str, _Recipe] = {
    "lenet5": _Recipe(LeNet5, 32, TrainConfig(epochs=15)),
    "tinyconvnet": _Recipe(TinyConvNet, 28, TrainConfig(epochs=20)),
}
"""Name -> how the book trains it: constructor, input size, hyper-parameters."""


@dataclass(frozen=True)
class TrainedModel:
    """A trained network with the data it was trained and tested on."""

    model: nn.Module
    result: TrainResult
    train_data: Digits
    test_data: Digits


def trained(name: str, *, progress: bool = True) -> TrainedModel:
    """The book's trained ``"lenet5"`` or ``"tinyconvnet"`` (cached after the first call).

    Prints which MNIST source is in use and whether the weights came from the cache.
    """
    if name not in BOOK_MODELS:
        raise ValueError(f"name must be one of {sorted(BOOK_MODELS)}, got {name!r}")
    recipe = BOOK_MODELS[name]
    train_data = mnist("train", size=recipe.image_size)
    test_data = mnist("test", size=recipe.image_size)
    result = train(name, recipe.build, train_data, test_data, recipe.config, progress=progress)
    return TrainedModel(result.model, result, train_data, test_data)
