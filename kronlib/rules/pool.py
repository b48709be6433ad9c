"""MaxPool2d, AvgPool2d and AdaptiveAvgPool2d (modules and functional forms).

Average pools are linear. A max-pool is, at a point, the selection of the entry each window
picked; its data-independent stand-in is the average pool of the same windows (as the blog does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kronlib.rules.base import (
    Field,
    Linearised,
    Policy,
    Rule,
    Stage,
    UnsupportedLayerError,
    check_image,
    linear_pullback,
)

__all__ = ["AdaptiveAvgPool", "AvgPool", "MaxPool"]


def _first(value: Any) -> int:
    return int(value if isinstance(value, int) else value[0])


def _linear(fn, x: torch.Tensor) -> Linearised:
    """A linear batched map ``fn`` at ``x``."""
    check_image(x)
    return Linearised(fn(x), lambda tangents: fn(tangents[0]), linear_pullback(fn, x.shape[1:]))


@dataclass(frozen=True, eq=False)
class AvgPool(Rule):
    """``F.avg_pool2d`` with its settings: linear."""

    kernel_size: Any
    stride: Any = None
    padding: Any = 0
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None

    modules = (nn.AvgPool2d,)
    functions = (F.avg_pool2d,)

    @classmethod
    def from_module(cls, module: nn.AvgPool2d) -> AvgPool:
        """One ``nn.AvgPool2d``."""
        return cls(
            module.kernel_size,
            module.stride,
            module.padding,
            module.ceil_mode,
            module.count_include_pad,
            module.divisor_override,
        )

    @classmethod
    def from_call(cls, input, *args, **kwargs):
        """``F.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, …)``."""
        return [input], cls(*args, **kwargs)

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        """The pool on a batch."""
        stride = self.stride if self.stride not in (None, []) else self.kernel_size
        return F.avg_pool2d(
            t,
            self.kernel_size,
            stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )

    def linearise(self, inputs: Sequence[torch.Tensor], policy: Policy) -> Linearised:
        """Linear: the same under either policy."""
        return _linear(self.apply, inputs[0])

    def receptive_field(self, field: Field, input_size: int) -> Field:
        """A window of ``kernel_size`` taps."""
        stride = self.stride if self.stride not in (None, []) else self.kernel_size
        return field.grown(_first(self.kernel_size), _first(stride))


@dataclass(frozen=True, eq=False)
class MaxPool(Rule):
    """``F.max_pool2d``: at a point, the entry each window picked; else its average pool."""

    kernel_size: Any
    stride: Any = None
    padding: Any = 0
    dilation: Any = 1
    ceil_mode: bool = False
    return_indices: bool = False

    modules = (nn.MaxPool2d,)
    functions = (F.max_pool2d, torch.max_pool2d)

    @classmethod
    def from_module(cls, module: nn.MaxPool2d) -> MaxPool:
        """One ``nn.MaxPool2d``."""
        return cls(
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            module.ceil_mode,
            module.return_indices,
        )

    @classmethod
    def from_call(cls, input, *args, **kwargs):
        """``F.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, …)``."""
        return [input], cls(*args, **kwargs)

    def _stride(self):
        return self.stride if self.stride not in (None, []) else self.kernel_size

    def why_not(self) -> str | None:
        """``return_indices`` changes the output type."""
        if self.return_indices:
            return "return_indices=True makes it return a pair, not a tensor"
        return None

    def stand_in(self) -> AvgPool:
        """The data-independent stand-in: the average over the same windows."""
        if self.dilation not in (1, (1, 1), [1, 1]):
            raise UnsupportedLayerError(
                "a dilated MaxPool2d has no AvgPool2d stand-in for the data-independent matrix"
            )
        return AvgPool(self.kernel_size, self._stride(), self.padding, self.ceil_mode)

    def picks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pool's output for ``x`` ``(N, C, H, W)`` and the flat index each output picked."""
        # F.max_pool2d(…, return_indices=True) without its dispatch on return_indices
        return F.max_pool2d_with_indices(
            x, self.kernel_size, self._stride(), self.padding, self.dilation, self.ceil_mode
        )

    def linearise(self, inputs: Sequence[torch.Tensor], policy: Policy) -> Linearised:
        """The selection made at the point, or the average-pool stand-in."""
        (x,) = inputs
        check_image(x)
        if not policy.exact or policy.average_maxpool:
            stand_in = self.stand_in()
            if policy.exact:  # the blog's approximation: the exact value, averaged kernels
                averaged = _linear(stand_in.apply, x)
                value = self.picks(x)[0]
                return Linearised(value, averaged.forward, averaged.pullback, exact=False)
            return _linear(stand_in.apply, x)
        value, index = self.picks(x)
        flat_index = index.flatten(2)  # (1, C, h·w)

        def forward(tangents):
            t = tangents[0]
            picked = t.flatten(2).gather(2, flat_index.expand(t.shape[0], -1, -1))
            return picked.reshape(t.shape[0], *value.shape[1:])

        in_shape = x.shape[1:]
        return Linearised(
            value, forward, lambda cot: [_picked_back(cot, flat_index, in_shape)], fresh=True
        )

    def stage(self, x: torch.Tensor, value: torch.Tensor, policy: Policy) -> Stage | None:
        """The picks at each call's point (the exact policy only; else ``linearise``)."""
        if not policy.exact or policy.average_maxpool:
            return None
        in_shape = x.shape[1:]

        def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            value, index = self.picks(x)
            return value, index.flatten(2)

        return Stage(run, lambda cot, index, owned: (_picked_back(cot, index, in_shape), True))

    def receptive_field(self, field: Field, input_size: int) -> Field:
        """A window of ``kernel_size`` taps."""
        return field.grown(_first(self.kernel_size), _first(self._stride()), _first(self.dilation))


def _picked_back(cot: torch.Tensor, flat_index: torch.Tensor, in_shape: torch.Size) -> torch.Tensor:
    """Rows ``(n, C, h, w)`` back to ``(n, *in_shape)`` through the picks ``(1, C, h·w)``.

    Each row's entries go back to the inputs their windows picked (added up where overlapping
    windows picked the same one): a scatter-add into zeros, as autograd's max-pool backward
    computes it, with fewer passes on CPUs.
    """
    n = cot.shape[0]
    rows = cot.new_zeros(n, in_shape[0], in_shape[1] * in_shape[2])
    rows.scatter_add_(2, flat_index.expand(n, -1, -1), cot.reshape(n, *flat_index.shape[1:]))
    return rows.view(n, *in_shape)


@dataclass(frozen=True, eq=False)
class AdaptiveAvgPool(Rule):
    """``F.adaptive_avg_pool2d``: linear (averages over windows fixed by the input size)."""

    output_size: Any

    modules = (nn.AdaptiveAvgPool2d,)
    functions = (F.adaptive_avg_pool2d,)

    @classmethod
    def from_module(cls, module: nn.AdaptiveAvgPool2d) -> AdaptiveAvgPool:
        """One ``nn.AdaptiveAvgPool2d``."""
        return cls(module.output_size)

    @classmethod
    def from_call(cls, input, output_size):
        """``F.adaptive_avg_pool2d(input, output_size)``."""
        return [input], cls(output_size)

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        """The pool on a batch."""
        return F.adaptive_avg_pool2d(t, self.output_size)

    def linearise(self, inputs: Sequence[torch.Tensor], policy: Policy) -> Linearised:
        """Linear: the same under either policy."""
        return _linear(self.apply, inputs[0])
