"""The book's small networks, as plain ``nn.Sequential`` chains with named layers.

Plain chains (no custom ``forward``) are what the virtual-matrix engine walks layer by layer.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

__all__ = ["LeNet5", "TinyConvNet", "count_parameters"]


def LeNet5() -> nn.Sequential:  # noqa: N802 (a constructor, named like the class it stands for)
    """LeNet-5 for 32×32 digits: the blog's seven layers plus their ReLUs.

    ``conv1`` 5×5 → 6, ReLU, ``pool1`` 2×2 max, ``conv2`` 5×5 → 16, ReLU, ``pool2`` 2×2 max,
    flatten (400), ``fc1`` → 120, ReLU, ``fc2`` → 84, ReLU, ``fc3`` → 10.
    Input ``(N, 1, 32, 32)``, output ``(N, 10)`` logits. 61,706 parameters.
    """
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(1, 6, 5)),
                ("relu1", nn.ReLU()),
                ("pool1", nn.MaxPool2d(2)),
                ("conv2", nn.Conv2d(6, 16, 5)),
                ("relu2", nn.ReLU()),
                ("pool2", nn.MaxPool2d(2)),
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(16 * 5 * 5, 120)),
                ("relu3", nn.ReLU()),
                ("fc2", nn.Linear(120, 84)),
                ("relu4", nn.ReLU()),
                ("fc3", nn.Linear(84, 10)),
            ]
        )
    )


def TinyConvNet() -> nn.Sequential:  # noqa: N802
    """The small network of the SVD report: bias-free convolutions, so each is a pure matrix.

    ``conv1`` 3×3 → 8 (no bias), ReLU, 2×2 max pool, ``conv2`` 3×3 → 16 (no bias), ReLU,
    2×2 max pool, flatten (400), ``fc`` → 10. Input ``(N, 1, 28, 28)``, output ``(N, 10)``.
    5,234 parameters.
    """
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(1, 8, 3, bias=False)),
                ("relu1", nn.ReLU()),
                ("pool1", nn.MaxPool2d(2)),
                ("conv2", nn.Conv2d(8, 16, 3, bias=False)),
                ("relu2", nn.ReLU()),
                ("pool2", nn.MaxPool2d(2)),
                ("flatten", nn.Flatten()),
                ("fc", nn.Linear(16 * 5 * 5, 10)),
            ]
        )
    )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
