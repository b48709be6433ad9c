"""Linear and ``F.linear``: ``y = W x + b`` on the last axis."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kronlib.rules.base import Field, Linearised, Policy, Rule, parameter


@dataclass(frozen=True, eq=False)
class Linear(Rule):
    """Kernels are multiplied by ``Wᵀ`` going forward, rows by ``W`` going back."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    modules = (nn.Linear,)
    functions = (F.linear,)

    @classmethod
    def from_module(cls, module: nn.Linear) -> Linear:
        """The rule for one ``nn.Linear``."""
        return cls(module.weight, module.bias)

    @classmethod
    def from_call(cls, input, weight, bias=None):
        """``F.linear(input, weight, bias)``."""
        return [input], cls(weight, bias)

    def linearise(self, inputs: Sequence[torch.Tensor], policy: Policy) -> Linearised:
        """Linear: the same under either policy."""
        (x,) = inputs
        weight, bias = parameter(self.weight, x), parameter(self.bias, x)
        return Linearised(
            F.linear(x, weight, bias),
            lambda tangents: tangents[0] @ weight.T,
            lambda cot: [cot @ weight],
            fresh=True,
        )

    def receptive_field(self, field: Field, input_size: int) -> Field:
        """A linear layer sees the whole input."""
        return Field(input_size, field.jump)
