"""Linear and ``F.linear``: ``y = W x + b`` on the last axis."""

from __future__ import annotations

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
    Stage,
    StaleStageError,
    live,
    parameter,
)

# a weight this large is read from memory, not cache: a few rows go back through it in slabs of
# _SLAB rows of W, each slab's product added up, so that the whole of W is read once (a single
# matrix product of a few rows first copies all of W into the layout its kernel wants: three
# passes over memory instead of one; 2× faster for AlexNet's and VGG's first linear layers)
_SLAB_BYTES = 16 << 20
_SLAB = 16
_FEW_ROWS = 16


def rows_times_weight(cot: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``cot @ weight``: rows ``(n, …, out)`` back through ``W`` ``(out, in)`` → ``(n, …, in)``.

    The same sums (in another order for a large ``W`` and 2 to 16 rows, see ``_SLAB_BYTES``).
    """
    n, out = cot.shape[0], weight.shape[0]
    large = weight.numel() * weight.element_size() >= _SLAB_BYTES
    if not (large and cot.ndim == 2 and 2 <= n <= _FEW_ROWS and out > _SLAB):
        return cot @ weight
    rows = cot[:, :_SLAB] @ weight[:_SLAB]
    for start in range(_SLAB, out, _SLAB):
        rows.addmm_(cot[:, start : start + _SLAB], weight[start : start + _SLAB])
    return rows


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
            lambda cot: [rows_times_weight(cot, weight)],
            fresh=True,
        )

    def stage(self, x: torch.Tensor, value: torch.Tensor, policy: Policy) -> Stage:
        """``F.linear`` forward, :func:`rows_times_weight` back (as :meth:`linearise`)."""
        source, bias, shape = self.weight, self.bias, self.weight.shape

        def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            weight = live(source, x)
            if weight.shape != shape:
                raise StaleStageError("the weight's shape changed")
            return F.linear(x, weight, live(bias, x)), weight

        return Stage(run, lambda cot, weight, owned: (rows_times_weight(cot, weight), True))

    def receptive_field(self, field: Field, input_size: int) -> Field:
        """A linear layer sees the whole input."""
        return Field(input_size, field.jump)
