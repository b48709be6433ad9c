"""Conv2d and ``F.conv2d``: a convolution of the kernels forward, its transpose backward."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kronlib.rules.base import (
    Field,
    Linearised,
    Policy,
    Rule,
    Stage,
    StaleStageError,
    check_image,
    linear_pullback,
    live,
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
        rule = self._for_kernel(weight)
        value = rule._apply(x, weight, bias)

        def forward(tangents):
            return rule._apply(tangents[0], weight, None)

        pullback = rule._pullback(weight, x.shape[1:], value.shape[1:])
        return Linearised(value, forward, pullback, fresh=True)

    def _for_kernel(self, weight: torch.Tensor) -> Conv:
        """This rule for the kernel size ``weight`` has now.

        ``'same'`` zero padding is worked out from the weight at each call, as ``F.conv2d``
        does: a weight swapped for a larger one through ``.data`` (which changes no attribute
        the trace cache sees) gets its own padding, not the one bound with the layer.
        """
        if not (isinstance(self.given_padding, str) and self.padding_mode == "zeros"):
            return self
        padding = _padding(self.given_padding, tuple(weight.shape[-2:]), self.dilation, self.stride)
        return self if padding == self.padding else dataclasses.replace(self, padding=padding)

    def stage(self, x: torch.Tensor, value: torch.Tensor, policy: Policy) -> Stage | None:
        """Zero padding alike on both sides: the convolution and its transpose (see linearise)."""
        source, bias = self.weight, self.bias
        transpose = self.transposer(parameter(source, x), x.shape[1:], value.shape[1:])
        if transpose is None:
            return None
        shape = source.shape
        top, _, left, _ = self.padding
        settings = (self.stride, (top, left), self.dilation, self.groups)

        def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            weight = live(source, x)
            if weight.shape != shape:
                raise StaleStageError("the weight's shape changed")
            return F.conv2d(x, weight, live(bias, x), *settings), weight

        return Stage(run, lambda cot, weight, owned: (transpose(cot, weight), True))

    def _pullback(self, weight, in_shape, out_shape):
        """Rows ``(n, C_out, h, w)`` → ``[(n, C_in, H, W)]``: the transposed convolution."""
        transpose = self.transposer(weight, in_shape, out_shape)
        if transpose is None:
            return linear_pullback(lambda t: self._apply(t, weight, None), in_shape)
        return lambda cot: [transpose(cot, weight)]

    def transposer(
        self, weight: torch.Tensor, in_shape: Sequence[int], out_shape: Sequence[int]
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
        """``(rows, weight) → rows``: the transposed convolution for one layout, or ``None``.

        Rows ``(n, C_out, h, w)`` with a weight like ``weight`` (its shape, dtype and device)
        → ``(n, C_in, H, W)``. Everything that depends only on the shapes and dtype (the kernel
        branch, paddings) is chosen here; the weight's values are read at each call. ``None``
        for padding that is not zeros on both sides alike (autograd's vjp then).

        Every branch computes the same linear map (exactly, up to the order of float sums); the
        branch is the fastest measured on CPUs for the layer's shape and dtype (see
        :func:`transpose_kernel`).
        """
        top, bottom, left, right = self.padding
        if not (top == bottom and left == right and self.padding_mode == "zeros"):
            return None
        padding = (top, left)
        kernel = tuple(weight.shape[-2:])
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
        kind = transpose_kernel(weight, self.stride, self.dilation, self.groups, padding)
        pad = tuple(k - 1 - p for p, k in zip(padding, kernel, strict=True))
        stride, dilation, groups = self.stride, self.dilation, self.groups
        if kind == "depthwise":
            # one input channel: every row's C_out maps are convolved with their own flipped
            # kernel (a depthwise convolution, vectorised over rows·channels) and summed
            c_out = weight.shape[0]

            def depthwise(cot: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
                n = cot.shape[0]
                # each row's copy of the kernels, flipped: one copy (flip of the expanded view;
                # repeat is slower for these small kernels)
                flipped = weight.reshape(1, c_out, 1, *kernel).expand(n, -1, -1, -1, -1)
                planes = F.conv2d(
                    cot.reshape(1, n * c_out, *cot.shape[2:]),
                    flipped.flip(3, 4).reshape(n * c_out, 1, *kernel),
                    None,
                    1,
                    pad,
                    1,
                    n * c_out,
                )
                return planes.reshape(n, c_out, *planes.shape[2:]).sum(1, keepdim=True)

            return depthwise
        if kind == "flipped":
            # the transpose of a stride-1 convolution is a convolution with the flipped kernel
            return lambda cot, weight: F.conv2d(
                cot, weight.flip(2, 3).transpose(0, 1), None, 1, pad
            )
        if kind == "columns":
            # im2col's transpose: one matrix product per row, then the columns folded back
            sizes = (list(kernel), list(stride), list(padding), list(extra))
            return lambda cot, weight: torch.ops.aten.slow_conv_transpose2d(
                cot, weight, sizes[0], None, sizes[1], sizes[2], sizes[3]
            )
        return lambda cot, weight: F.conv_transpose2d(
            cot, weight, None, stride, padding, extra, groups, dilation
        )

    def receptive_field(self, field: Field, input_size: int) -> Field:
        """Grows by ``dilation·(k − 1)`` steps of the current jump."""
        return field.grown(self.weight.shape[-1], self.stride[1], self.dilation[1])


def transpose_kernel(
    weight: torch.Tensor,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    padding: tuple[int, int],
) -> str:
    """How to run a convolution's transpose on CPUs: the fastest of equal maps, by shape.

    Measured with torch 2.x on x86 CPUs (oneDNN for float32, none for float64):

    * ``"depthwise"`` — float32, one input channel, stride 1: a depthwise convolution of the
      rows' channels, summed (oneDNN's dense kernels cannot vectorise over one output channel;
      LeNet's first layer: 4× faster for 120 rows);
    * ``"columns"`` — float32, two to four input channels (RGB), stride 1: a matrix product
      and col2im per row (VGG's first layer: 3× faster than oneDNN);
    * ``"flipped"`` — float32, stride 1, no dilation or groups: a oneDNN convolution with the
      flipped kernel;
    * ``"transposed"`` — otherwise ``conv_transpose2d`` (float64 has no oneDNN kernels, and
      its native transpose is far faster than its native convolution).
    """
    kernel = weight.shape[-2:]
    plain = (
        stride == (1, 1)
        and dilation == (1, 1)
        and groups == 1
        and all(p <= k - 1 for p, k in zip(padding, kernel, strict=True))
    )
    if not plain or weight.dtype != torch.float32 or weight.device.type != "cpu":
        return "transposed"
    if weight.shape[1] == 1:
        return "depthwise"
    if weight.shape[1] <= 4:
        return "columns"
    return "flipped"
