"""The book's small networks, as plain ``nn.Sequential`` chains with named layers.

Plain chains (no custom ``forward``) are what the virtual-matrix engine walks layer by layer.
"""

from __future__ import annotations

import os
import socket
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from kronlib._validate import as_int

__all__ = [
    "LENET5_LAYERS",
    "DeepCNN",
    "DigitResNet",
    "LeNet5",
    "Residual",
    "ResidualBlock",
    "TinyConvNet",
    "alexnet",
    "calibrate_batchnorm",
    "count_parameters",
    "describe_alexnet",
]


#: LeNet-5's seven weighted and pooling layers, input to output (the rows of chapter 6's table)
LENET5_LAYERS = ("conv1", "pool1", "conv2", "pool2", "fc1", "fc2", "fc3")


class Residual(nn.Module):
    """A residual block ``y = x + body(x)``: the identity path plus one branch.

    Args:
        body: the branch; it must keep the input's shape.

    Example:
        >>> block = Residual(nn.Conv2d(1, 1, 3, padding=1))
        >>> block(torch.zeros(1, 1, 4, 4)).shape
        torch.Size([1, 1, 4, 4])
    """

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + body(x)``."""
        return x + self.body(x)


def LeNet5(  # noqa: N802
    batchnorm: bool = False,
    activation: str = "relu",
    input_size: int = 32,
    channels: tuple[int, int] = (6, 16),
) -> nn.Sequential:
    """LeNet-5 for 32×32 digits: the blog's seven layers plus their ReLUs.

    ``conv1`` 5×5 → 6, ReLU, ``pool1`` 2×2 max, ``conv2`` 5×5 → 16, ReLU, ``pool2`` 2×2 max,
    flatten (400), ``fc1`` → 120, ReLU, ``fc2`` → 84, ReLU, ``fc3`` → 10.
    Input ``(N, 1, 32, 32)``, output ``(N, 10)`` logits. 61,706 parameters.

    Args:
        batchnorm: insert ``bn1``/``bn2`` (BatchNorm2d) after each convolution.
        activation: ``"relu"`` or ``"leaky"`` (LeakyReLU with slope 0.1).
        input_size: side of the square input (32, or 48 for the varied digits); fc1 takes
            ``c2·s·s`` features with ``s = ((input_size − 4) / 2 − 4) / 2``.
        channels: output channels ``(c1, c2)`` of conv1 and conv2 (the width; LeNet-5's is
            ``(6, 16)``).
    """
    if activation not in ("relu", "leaky"):
        raise ValueError(f"activation must be 'relu' or 'leaky', got {activation!r}")
    input_size = as_int(input_size, "input_size", minimum=16)
    c1, c2 = _int_pair(channels, "channels")
    side = ((input_size - 4) // 2 - 4) // 2

    def act() -> nn.Module:
        return nn.ReLU() if activation == "relu" else nn.LeakyReLU(0.1)

    def conv_block(index: int, c_in: int, c_out: int) -> list[tuple[str, nn.Module]]:
        block = [(f"conv{index}", nn.Conv2d(c_in, c_out, 5))]
        if batchnorm:
            block.append((f"bn{index}", nn.BatchNorm2d(c_out)))
        return [*block, (f"relu{index}", act()), (f"pool{index}", nn.MaxPool2d(2))]

    return nn.Sequential(
        OrderedDict(
            [
                *conv_block(1, 1, c1),
                *conv_block(2, c1, c2),
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(c2 * side * side, 120)),
                ("relu3", act()),
                ("fc2", nn.Linear(120, 84)),
                ("relu4", act()),
                ("fc3", nn.Linear(84, 10)),
            ]
        )
    )


def _int_pair(value: object, name: str) -> tuple[int, int]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{name} must be a pair of positive ints, got {value!r}")
    return as_int(value[0], f"{name}[0]", minimum=1), as_int(value[1], f"{name}[1]", minimum=1)


def DeepCNN(  # noqa: N802
    input_size: int = 32, widths: tuple[int, ...] = (8, 8, 16, 16, 32, 32, 32, 32)
) -> nn.Sequential:
    """A VGG-style plain chain of 3×3 convolutions for digits, deeper than LeNet-5.

    Convolutions come in pairs, each ``conv`` (padding 1) → ``bn`` (BatchNorm2d) → ``relu``;
    a 2×2 max-pool follows each pair; then flatten and one linear layer to 10 classes. With
    the default eight widths, four pools take a 32×32 input to 2×2 and a 48×48 one to 3×3.
    Names: ``conv1``, ``bn1``, ``relu1``, …, ``pool1``, …, ``flatten``, ``fc``.

    Args:
        input_size: side of the square input (divisible by ``2 ** (len(widths) // 2)``).
        widths: output channels of each convolution (an even number of them, at least 8).
    """
    input_size = as_int(input_size, "input_size", minimum=1)
    if len(widths) < 8 or len(widths) % 2:
        raise ValueError(f"widths must hold an even number ≥ 8 of ints, got {widths!r}")
    pools = len(widths) // 2
    if input_size % 2**pools:
        raise ValueError(f"input_size must be divisible by {2**pools}, got {input_size}")
    layers: list[tuple[str, nn.Module]] = []
    c_in = 1
    for index, width in enumerate(widths, start=1):
        width = as_int(width, "widths (each)", minimum=1)
        layers += [
            (f"conv{index}", nn.Conv2d(c_in, width, 3, padding=1)),
            (f"bn{index}", nn.BatchNorm2d(width)),
            (f"relu{index}", nn.ReLU()),
        ]
        if index % 2 == 0:
            layers.append((f"pool{index // 2}", nn.MaxPool2d(2)))
        c_in = width
    side = input_size // 2**pools
    layers += [("flatten", nn.Flatten()), ("fc", nn.Linear(c_in * side * side, 10))]
    return nn.Sequential(OrderedDict(layers))


class ResidualBlock(nn.Module):
    """``relu(bn2(conv2(relu1(bn1(conv1(x))))) + shortcut(x))``, a ResNet basic block.

    Both convolutions are 3×3 (padding 1, no bias; the first has the block's stride), each
    followed by BatchNorm. The shortcut is the identity when the shape is kept, else a 1×1
    convolution with the stride and a BatchNorm (a projection). Input ``(N, c_in, H, W)``,
    output ``(N, c_out, H / stride, W / stride)``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        c_in = as_int(c_in, "c_in", minimum=1)
        c_out = as_int(c_out, "c_out", minimum=1)
        stride = as_int(stride, "stride", minimum=1)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride == 1 and c_in == c_out:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, c_in, H, W)`` → ``(N, c_out, H / stride, W / stride)``."""
        branch = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(branch + self.shortcut(x))


def DigitResNet(  # noqa: N802
    input_size: int = 32, widths: tuple[int, ...] = (8, 16, 32)
) -> nn.Sequential:
    """A small residual network for digits: a stem and one :class:`ResidualBlock` per width.

    ``stem`` (3×3 convolution with stride 2, BatchNorm, ReLU) → ``block1`` (stride 1) → ``block2``,
    ``block3``, … (stride 2, projection shortcuts) → ``pool`` (global average) → ``flatten``
    → ``fc`` (10 logits). Input ``(N, 1, input_size, input_size)``, output ``(N, 10)``.

    Args:
        input_size: side of the square input (divisible by ``2 ** len(widths)``).
        widths: channels of each residual block (at least 3 blocks).
    """
    input_size = as_int(input_size, "input_size", minimum=1)
    if isinstance(widths, (str, bytes)) or not hasattr(widths, "__len__") or len(widths) < 3:
        raise ValueError(f"widths must hold at least 3 positive ints, got {widths!r}")
    widths = tuple(as_int(w, "widths (each)", minimum=1) for w in widths)
    if input_size % 2 ** len(widths):
        raise ValueError(f"input_size must be divisible by {2 ** len(widths)}, got {input_size}")
    layers: list[tuple[str, nn.Module]] = [
        (
            "stem",
            nn.Sequential(
                nn.Conv2d(1, widths[0], 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(widths[0]),
                nn.ReLU(),
            ),
        )
    ]
    c_in = widths[0]
    for index, width in enumerate(widths, start=1):
        layers.append((f"block{index}", ResidualBlock(c_in, width, 1 if index == 1 else 2)))
        c_in = width
    layers += [
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(c_in, 10)),
    ]
    return nn.Sequential(OrderedDict(layers))


def calibrate_batchnorm(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Set every BatchNorm's running statistics from ``images`` ``(N, C, H, W)``; eval mode."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches seen
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()


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


def _hub_checkpoint(url: str) -> Path:
    """Where ``torch.hub`` keeps the file downloaded from ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether ``url``'s host accepts a connection (a quick offline check before a download)."""
    try:
        socket.create_connection((urlparse(url).hostname, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def alexnet(weights: str | Path | None = None, *, seed: int = 0, verbose: bool = True):
    """The AlexNet of torchvision, with pretrained ImageNet weights when they can be had.

    Tries, in order: the ``.pth`` state dict at ``weights`` or at ``$KRONBOOK_ALEXNET_WEIGHTS``;
    torchvision's ``IMAGENET1K_V1`` weights, from the torch hub cache or downloaded (with
    torch's progress bar) when ``download.pytorch.org`` can be reached. Otherwise it returns a
    randomly initialised AlexNet (seeded), for which every exactness check still holds but
    pictures mean nothing; nothing is attempted, or printed, about a download that cannot work.

    Returns:
        ``(model, source, pretrained)``: the model in eval mode, a sentence saying where its
        weights came from, and whether they are the trained ImageNet weights.

    Raises:
        FileNotFoundError: ``weights`` (or the environment variable) names a missing file.
    """
    from torchvision.models import AlexNet_Weights
    from torchvision.models import alexnet as build

    path = weights or os.environ.get("KRONBOOK_ALEXNET_WEIGHTS")
    pretrained_url = AlexNet_Weights.IMAGENET1K_V1.url
    model, source, pretrained = None, "", False
    problem = ""
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"AlexNet weights: no file at {path!s} (weights / $KRONBOOK_ALEXNET_WEIGHTS)"
            )
        model = build()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        source, pretrained = f"ImageNet weights from {path}", True
    elif _hub_checkpoint(pretrained_url).is_file() or _reachable(pretrained_url):
        try:
            model = build(weights=AlexNet_Weights.IMAGENET1K_V1)
            source, pretrained = "torchvision's ImageNet weights (IMAGENET1K_V1)", True
        except Exception as error:  # a failed or interrupted download, a corrupt cache file
            problem = f"loading them failed ({type(error).__name__}: {error})"
    else:
        problem = "they are not in the torch hub cache and download.pytorch.org is unreachable"
    if model is None:
        torch.manual_seed(seed)
        model = build()
        source = (
            f"random weights (seed {seed}): no pretrained weights, as {problem}; set "
            "KRONBOOK_ALEXNET_WEIGHTS to a .pth file to use them"
        )
    if verbose:
        print(f"AlexNet: {source}")
    return model.eval(), source, pretrained


def describe_alexnet(source: str, pretrained: bool) -> str:
    """What a page can say about the AlexNet in use, for a reader (one short paragraph).

    Args:
        source: where the weights came from (the second value :func:`alexnet` returns).
        pretrained: whether they are the pretrained ImageNet weights (its third value).
    """
    if pretrained:
        return f"AlexNet's weights: {source}."
    return (
        "AlexNet's pretrained weights are not on this machine, so this page shows no AlexNet "
        "pictures. To see them, set the environment variable KRONBOOK_ALEXNET_WEIGHTS to the "
        "path of a state dict of torchvision's alexnet (or put torchvision's IMAGENET1K_V1 file "
        "in the torch hub cache) and rebuild. The exactness check still runs on AlexNet's "
        "architecture, with seeded random weights: the top rows of its virtual matrix and their "
        "offsets reproduce the top five logits."
    )
