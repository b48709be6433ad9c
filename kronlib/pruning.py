"""Removing channels at a cut of a chain, and the accuracy that remains (chapter 7).

Removing channel ``m`` at a cut sets its values to zero for every input, so the Kronecker term
``T_m`` of every row (:func:`kronlib.virtual.kronecker_terms`) is gone. The order in which
channels are removed is the experiment: by their contribution to the virtual matrix, by the
norm of their weights, or at random.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kronlib._validate import as_index, as_int
from kronlib.data import Digits
from kronlib.terms import _split
from kronlib.train import accuracy

__all__ = ["ChannelMask", "prune_channels", "pruning_curve"]


class ChannelMask(nn.Module):
    """Multiplies channel ``m`` of its input by ``keep[m]`` (0 or 1): ``(N, C, *S)`` → same.

    Args:
        keep: ``(C,)``.
        spatial_dims: the number of axes after the channel axis (2 for images, 0 for vectors).
    """

    def __init__(self, keep: torch.Tensor, spatial_dims: int = 2) -> None:
        super().__init__()
        spatial_dims = as_int(spatial_dims, "spatial_dims", minimum=0)
        self.register_buffer("keep", keep.detach().clone().reshape(-1, *(1,) * spatial_dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, *S)`` → ``(N, C, *S)`` with the removed channels zero."""
        return x * self.keep


def prune_channels(
    model: nn.Module, cut: str, channels: int | Sequence[int] | torch.Tensor
) -> nn.Sequential:
    """A copy of a chain with the given channels of ``cut``'s output set to zero.

    The model itself is not changed (the copy shares its layers, which it only reads).

    Args:
        model: a chain (see :func:`kronlib.virtual.chain`).
        cut: the name of a layer whose output has a channel axis (axis 1).
        channels: channel indices to remove (may be empty).

    Returns:
        ``nn.Sequential(head, ChannelMask, tail)``.
    """
    head, tail = _split(model, cut)
    param = next(model.parameters())
    probe_shape, spatial_dims = _channels_of(head)
    keep = torch.ones(probe_shape, dtype=param.dtype, device=param.device)
    if not (hasattr(channels, "__len__") and len(channels) == 0):
        index = as_index(channels, "channels", probe_shape).reshape(-1)
        if len(set(index.tolist())) != len(index):
            raise ValueError(f"channels must not repeat, got {index.tolist()}")
        keep[index] = 0
    return nn.Sequential(head, ChannelMask(keep, spatial_dims), tail).eval()


def _channels_of(head: nn.Sequential) -> tuple[int, int]:
    """Output channels of ``head`` and the axes after them (the last layer that says)."""
    for layer in reversed(list(head)):
        if isinstance(layer, nn.Flatten):
            break
        for attribute, spatial in (("out_channels", 2), ("num_features", 2), ("out_features", 0)):
            if hasattr(layer, attribute):
                return int(getattr(layer, attribute)), spatial
    raise ValueError("cut must come after a layer with a known channel count (Conv2d, Linear, BN)")


def pruning_curve(
    model: nn.Module, cut: str, order: Sequence[int] | torch.Tensor, digits: Digits
) -> list[float]:
    """Test accuracy after removing the first ``k`` channels of ``order``, for ``k = 0..len``.

    Args:
        model: a chain in eval mode.
        cut: the layer whose output channels are removed.
        order: channel indices, in the order of removal (a permutation or a prefix of one).
        digits: the digits to measure accuracy on.

    Returns:
        ``len(order) + 1`` accuracies in [0, 1]; the first is the unpruned model's.
    """
    sequence = [as_int(c, "order (each)", minimum=0) for c in order]
    return [
        accuracy(prune_channels(model, cut, sequence[:k]), digits) for k in range(len(sequence) + 1)
    ]
