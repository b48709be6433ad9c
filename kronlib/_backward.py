"""Reverse composition: rows of the virtual matrix pulled back layer by layer, batched.

One forward pass records what each layer needs (its input shape, the ReLU gates, the max-pool
picks); then a batch of output rows (one-hot cotangents) goes back through the transposed layers:
``conv_transpose2d`` for a convolution, ``Wᵀ`` for a linear layer, the gate for a ReLU, a scatter
to the picked entries for a max-pool. This is the Kronecker composition run from the output end,
and the same arithmetic as autograd, without its per-operation bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Pullback = Callable[[torch.Tensor], torch.Tensor]


def _conv_pullback(layer: nn.Conv2d, inp: torch.Tensor, out: torch.Tensor) -> Pullback:
    extra = []
    for axis in range(2):
        produced = (
            (out.shape[2 + axis] - 1) * layer.stride[axis]
            - 2 * layer.padding[axis]
            + layer.dilation[axis] * (layer.kernel_size[axis] - 1)
            + 1
        )
        extra.append(inp.shape[2 + axis] - produced)

    unit_steps = tuple(layer.stride) == (1, 1) and tuple(layer.dilation) == (1, 1)
    if unit_steps and all(
        p <= k - 1 for p, k in zip(layer.padding, layer.kernel_size, strict=True)
    ):
        # stride and dilation 1: the transpose is a plain convolution with the flipped kernel,
        # which runs faster on CPUs than conv_transpose2d
        flipped = layer.weight.flip(2, 3).transpose(0, 1)
        pad = tuple(k - 1 - p for p, k in zip(layer.padding, layer.kernel_size, strict=True))

        def pull(cot: torch.Tensor) -> torch.Tensor:
            return F.conv2d(cot, flipped, None, 1, pad)

        return pull

    def pull_strided(cot: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(
            cot, layer.weight, None, layer.stride, layer.padding, tuple(extra), 1, layer.dilation
        )

    return pull_strided


def maxpool_picks(layer: nn.MaxPool2d, inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The max-pool's output for ``inp`` ``(N, C, H, W)`` and the flat index each output picked."""
    return F.max_pool2d(
        inp,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
        layer.ceil_mode,
        return_indices=True,
    )


def _maxpool_pullback(layer: nn.MaxPool2d, inp: torch.Tensor) -> tuple[torch.Tensor, Pullback]:
    out, index = maxpool_picks(layer, inp)
    channels, height, width = inp.shape[1:]

    def pull(cot: torch.Tensor) -> torch.Tensor:
        n = cot.shape[0]
        grad = cot.new_zeros(n, channels, height * width)
        grad.scatter_add_(2, index.flatten(2).expand(n, -1, -1), cot.flatten(2))
        return grad.reshape(n, channels, height, width)

    return out, pull


def _generic_pullback(layer: nn.Module, inp: torch.Tensor) -> tuple[torch.Tensor, Pullback]:
    """Any other linear layer (average pools): autograd's pullback of that one layer, batched."""
    out, pullback = torch.func.vjp(layer, inp)

    def pull(cot: torch.Tensor) -> torch.Tensor:
        return torch.vmap(lambda c: pullback(c[None])[0][0])(cot)

    return out, pull


def record(layers: Sequence[nn.Module], point: torch.Tensor) -> tuple[torch.Tensor, list[Pullback]]:
    """Run ``layers`` on ``point`` (no batch axis) and keep one pullback per layer.

    ReLU/LeakyReLU gates and max-pool picks are those of this input; the layers must be the
    ones :func:`kronlib.virtual.chain` accepts (or their linearised stand-ins).
    """
    pulls: list[Pullback] = []
    value = point[None]
    with torch.no_grad():
        for layer in layers:
            if isinstance(layer, nn.Conv2d):
                out = layer(value)
                pulls.append(_conv_pullback(layer, value, out))
            elif isinstance(layer, nn.Linear):
                out = layer(value)
                pulls.append(lambda cot, w=layer.weight: cot @ w)
            elif isinstance(layer, nn.Flatten):
                out = layer(value)
                pulls.append(lambda cot, shape=value.shape[1:]: cot.reshape(-1, *shape))
            elif isinstance(layer, nn.ReLU | nn.LeakyReLU):
                slope = layer.negative_slope if isinstance(layer, nn.LeakyReLU) else 0.0
                gate = torch.where(value > 0, 1.0, slope).to(value.dtype)
                out = value * gate
                pulls.append(lambda cot, gate=gate: cot * gate)
            elif isinstance(layer, nn.MaxPool2d):
                out, pull = _maxpool_pullback(layer, value)
                pulls.append(pull)
            elif isinstance(layer, nn.BatchNorm2d):
                out = layer(value)
                scale = (layer.weight / torch.sqrt(layer.running_var + layer.eps))[:, None, None]
                pulls.append(lambda cot, scale=scale: cot * scale)
            elif isinstance(layer, nn.Dropout | nn.Identity):
                out = value
                pulls.append(lambda cot: cot)
            else:
                out, pull = _generic_pullback(layer, value)
                pulls.append(pull)
            value = out
    return value[0], pulls


def pull_back(pulls: Sequence[Pullback], cotangents: torch.Tensor) -> torch.Tensor:
    """Send a batch of output-shaped cotangents ``(n, *out_shape)`` back to the input."""
    grad = cotangents
    for pull in reversed(pulls):
        grad = pull(grad)
    return grad
