"""Conv2d and ``F.conv2d``: a convolution of the kernels forward, its transpose backward."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kronlib.rules.base import (
    Field,
    Linearised,
    Policy,
    Rule,
    check_image,
    linear_pullback,
    parameter,
)


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _padding(padding, kernel, dilation, stride) -> tuple[int, int, int, int] | None:
    """``padding`` as (top, bottom, left, right), or ``None`` if it is not expressible."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        if stride != (1, 1):
            return None
        out = []
        for k, d in zip(kernel, dilation, strict=True):
            total = d * (k - 1)
            out += [total // 2, total - total // 2]
        return tuple(out)  # type: ignore[return-value]
    p = _pair(padding)
    return (p[0], p[0], p[1], p[1])


@dataclass(frozen=True, eq=False)
class Conv(Rule):
    """``y = w ⋆ x + b``: the composed kernels are convolved with ``w``.

    Rows go back through the transposed convolution (a flipped-kernel convolution when stride
    and dilation are 1). Zero, reflect, replicate and circular padding, groups and ``'same'``
    padding at stride 1 are supported.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: tuple[int, int]
    padding: tuple[int, int, int, int] | None  # (top, bottom, left, right)
    dilation: tuple[int, int]
    groups: int
    padding_mode: str = "zeros"
    given_padding: object = 0

    modules = (nn.Conv2d,)
    functions = (F.conv2d, torch.conv2d)

    @classmethod
    def _make(cls, weight, bias, stride, padding, dilation, groups, padding_mode="zeros") -> Conv:
        stride, dilation = _pair(stride), _pair(dilation)
        kernel = tuple(weight.shape[-2:])
        return cls(
            weight,
            bias,
            stride,
            _padding(padding, kernel, dilation, stride),
            dilation,
            int(groups),
            padding_mode,
            padding,
        )

    @classmethod
    def from_module(cls, module: nn.Conv2d) -> Conv:
        """The rule for one ``nn.Conv2d`` (its padding mode included)."""
        rule = cls._make(
            module.weight,
            module.bias,
            module.stride,
            module.padding,
            module.dilation,
            module.groups,
            module.padding_mode,
        )
        if module.padding_mode != "zeros":
            # what torch pads with in that mode: (left, right, top, bottom)
            left, right, top, bottom = module._reversed_padding_repeated_twice
            rule = dataclasses.replace(rule, padding=(top, bottom, left, right))
        return rule

    @classmethod
    def from_call(cls, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        """``F.conv2d(input, weight, bias, stride, padding, dilation, groups)``."""
        return [input], cls._make(weight, bias, stride, padding, dilation, groups)

    def why_not(self) -> str | None:
        """Refuses what has no exact transpose here (``'same'`` with a stride)."""
        if self.padding is None:
            return f"padding={self.given_padding!r} with stride {self.stride} is not supported"
        if self.weight.ndim != 4:
            return f"its weight must be 4-D (C_out, C_in, kh, kw), got {tuple(self.weight.shape)}"
        return None

    def _apply(self, t: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        top, bottom, left, right = self.padding
        if self.padding_mode != "zeros":
            t = F.pad(t, (left, right, top, bottom), mode=self.padding_mode)
            return F.conv2d(t, weight, bias, self.stride, 0, self.dilation, self.groups)
        if top == bottom and left == right:
            return F.conv2d(t, weight, bias, self.stride, (top, left), self.dilation, self.groups)
        t = F.pad(t, (left, right, top, bottom))
        return F.conv2d(t, weight, bias, self.stride, 0, self.dilation, self.groups)

    def linearise(self, inputs: Sequence[torch.Tensor], policy: Policy) -> Linearised:
        """The convolution is linear: the same everywhere, under either policy."""
        (x,) = inputs
        check_image(x)
        weight, bias = parameter(self.weight, x), parameter(self.bias, x)
        value = self._apply(x, weight, bias)

        def forward(tangents):
            return self._apply(tangents[0], weight, None)

        return Linearised(value, forward, self._pullback(weight, x.shape[1:], value.shape[1:]))

    def _pullback(self, weight, in_shape, out_shape):
        top, bottom, left, right = self.padding
        symmetric = top == bottom and left == right and self.padding_mode == "zeros"
        kernel = weight.shape[-2:]
        if not symmetric:
            return linear_pullback(lambda t: self._apply(t, weight, None), in_shape)
        padding = (top, left)
        if (
            self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.groups == 1
            and all(p <= k - 1 for p, k in zip(padding, kernel, strict=True))
        ):
            # the transpose of a stride-1 convolution is a convolution with the flipped kernel,
            # which runs faster on CPUs than conv_transpose2d
            pad = tuple(k - 1 - p for p, k in zip(padding, kernel, strict=True))
            return lambda cot: [F.conv2d(cot, weight.flip(2, 3).transpose(0, 1), None, 1, pad)]
        extra = tuple(
            in_shape[1 + axis]
            - (
                (out_shape[1 + axis] - 1) * self.stride[axis]
                - 2 * padding[axis]
                + self.dilation[axis] * (kernel[axis] - 1)
                + 1
            )
            for axis in range(2)
        )
        return lambda cot: [
            F.conv_transpose2d(
                cot, weight, None, self.stride, padding, extra, self.groups, self.dilation
            )
        ]

    def receptive_field(self, field: Field, input_size: int) -> Field:
        """Grows by ``dilation·(k − 1)`` steps of the current jump."""
        return field.grown(self.weight.shape[-1], self.stride[1], self.dilation[1])
