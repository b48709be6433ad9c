"""Operations with several inputs or constants: sums, scalings and concatenations.

``a + b`` (residual connections), ``a − b``, scaling by a constant, and ``torch.cat`` along
channels (Fire and Inception modules).

The sum is where the paths of a residual network meet: its pullback hands the same rows to each
input-dependent addend (summed back to an addend's shape where it was broadcast).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from kronlib.rules.base import Linearised, Policy, Rule, UnsupportedLayerError, Variable

__all__ = ["Add", "Cat", "Divide", "Multiply", "Subtract"]


def _sum_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum a batch ``(n, *broadcast)`` back to ``(n, *shape)`` (undo broadcasting)."""
    extra = t.ndim - 1 - len(shape)
    if extra:
        t = t.sum(dim=tuple(range(1, 1 + extra)))
    axes = tuple(1 + i for i, s in enumerate(shape) if s == 1 and t.shape[1 + i] != 1)
    return t.sum(dim=axes, keepdim=True) if axes else t


def _constant(value: Any, like: torch.Tensor) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to(dtype=like.dtype, device=like.device)
    return value


@dataclass(frozen=True, eq=False)
class Add(Rule):
    """``a + alpha·b``: the sum of the input-dependent addends (``signs``) plus constants."""

    signs: tuple[float, ...]
    constant: Any = 0.0

    functions = (operator.add, operator.iadd, torch.add)
    methods = ("add", "add_")
    sign_of_second: ClassVar[float] = 1.0

    @classmethod
    def from_call(cls, a, b, *, alpha=1):
        """``a + alpha·b`` (``a − alpha·b`` for :class:`Subtract`)."""
        variables, signs, constant = [], [], 0.0
        for operand, sign in ((a, 1.0), (b, cls.sign_of_second * float(alpha))):
            if isinstance(operand, Variable):
                variables.append(operand)
                signs.append(sign)
            else:
                constant = constant + sign * operand
        return variables, cls(tuple(signs), constant)

    def linearise(self, inputs: Sequence[torch.Tensor], policy: Policy) -> Linearised:
        """The signed sum of the inputs; the constants only shift the value."""
        value = _constant(self.constant, inputs[0])
        for sign, x in zip(self.signs, inputs, strict=True):
            value = value + (x if sign == 1.0 else sign * x)
        shapes = [x.shape[1:] for x in inputs]

        def forward(tangents):
            total = None
            for sign, t in zip(self.signs, tangents, strict=True):
                part = t if sign == 1.0 else sign * t
                total = part if total is None else total + part
            return total.expand(total.shape[0], *value.shape[1:])

        def pullback(cot):
            return [
                _sum_to(cot if sign == 1.0 else sign * cot, shape)
                for sign, shape in zip(self.signs, shapes, strict=True)
            ]

        return Linearised(value, forward, pullback)


@dataclass(frozen=True, eq=False)
class Subtract(Add):
    """``a − alpha·b``."""

    functions = (operator.sub, operator.isub, torch.sub)
    methods = ("sub", "sub_")
    sign_of_second: ClassVar[float] = -1.0


@dataclass(frozen=True, eq=False)
class Multiply(Rule):
    """``a · c`` for a constant ``c`` (a number or a broadcastable tensor)."""

    factor: Any
    reason: str | None = None

    functions = (operator.mul, operator.imul, torch.mul)
    methods = ("mul", "mul_")

    @classmethod
    def from_call(cls, a, b):
        """Exactly one factor may depend on the input."""
        if isinstance(a, Variable) and isinstance(b, Variable):
            return [a, b], cls(None, "it multiplies two input-dependent tensors (not linear)")
        return ([a], cls(b)) if isinstance(a, Variable) else ([b], cls(a))

    def why_not(self) -> str | None:
        """A product of two input-dependent tensors is not linear."""
        return self.reason

    def linearise(self, inputs: Sequence[torch.Tensor], policy: Policy) -> Linearised:
        """Multiply by the constant both ways (summed back where it broadcast)."""
        (x,) = inputs
        factor = _constant(self.factor, x)
        value = x * factor
        return Linearised(
            value,
            lambda tangents: (tangents[0] * factor).expand(-1, *value.shape[1:]),
            lambda cot: [_sum_to(cot * factor, x.shape[1:])],
        )


@dataclass(frozen=True, eq=False)
class Divide(Multiply):
    """``a / c`` for a constant ``c``."""

    functions = (operator.truediv, operator.itruediv, torch.div)
    methods = ("div", "div_")

    @classmethod
    def from_call(cls, a, b, *, rounding_mode=None):
        """Only the numerator may depend on the input, and no rounding."""
        if isinstance(b, Variable) or rounding_mode is not None:
            return [v for v in (a, b) if isinstance(v, Variable)], cls(
                None, "it divides by an input-dependent tensor or rounds (not linear)"
            )
        return [a], cls(1 / b)


@dataclass(frozen=True, eq=False)
class Cat(Rule):
    """``torch.cat(tensors, dim)`` along a non-batch axis: kernels stacked, rows split."""

    dim: int
    parts: tuple[Any, ...]  # None for an input-dependent part, the constant otherwise

    functions = (torch.cat, torch.concat)

    @classmethod
    def from_call(cls, tensors, dim=0, *, axis=None):
        """``torch.cat([a, b, …], dim)`` (``axis`` is numpy's name for ``dim``)."""
        dim = dim if axis is None else axis
        variables = [t for t in tensors if isinstance(t, Variable)]
        parts = tuple(None if isinstance(t, Variable) else t for t in tensors)
        return variables, cls(int(dim), parts)

    def why_not(self) -> str | None:
        """Concatenating along the batch axis mixes images."""
        if self.dim == 0:
            return "it concatenates along the batch axis (dim=0)"
        return None

    def linearise(self, inputs: Sequence[torch.Tensor], policy: Policy) -> Linearised:
        """Stack along ``dim``; split the cotangent back."""
        ndim = inputs[0].ndim
        dim = self.dim if self.dim > 0 else self.dim + ndim
        if dim <= 0:
            raise UnsupportedLayerError("it concatenates along the batch axis")
        values = iter(inputs)
        blocks = [next(values) if p is None else _constant(p, inputs[0]) for p in self.parts]
        value = torch.cat(blocks, dim)
        sizes = [b.shape[dim] for b in blocks]

        def forward(tangents):
            n = tangents[0].shape[0]
            given = iter(tangents)
            return torch.cat(
                [
                    next(given) if p is None else b.new_zeros(n, *b.shape[1:])
                    for p, b in zip(self.parts, blocks, strict=True)
                ],
                dim,
            )

        def pullback(cot):
            pieces = torch.split(cot, sizes, dim)
            return [piece for p, piece in zip(self.parts, pieces, strict=True) if p is None]

        return Linearised(value, forward, pullback)
