"""ReLU and LeakyReLU (modules, functional and in-place forms): a gate on each unit.

Exactly at a point the layer is ``y = g ⊙ x`` with ``g = 1`` where ``x > 0`` and ``g = slope``
elsewhere (0 for ReLU): a data-dependent mask that carves the composed kernels. The
data-independent stand-in is the identity.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kronlib.rules.base import Linearised, Policy, Rule, Stage, identity_stage, pointwise

__all__ = ["SMOOTH_FUNCTIONS", "SMOOTH_MODULES", "Gate", "LeakyReLU", "ReLU"]


@dataclass(frozen=True, eq=False)
class Gate(Rule):
    """A 0/1 (ReLU) or 1/slope (LeakyReLU) mask at the point; the identity without one."""

    slope: float = 0.0

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """``(1, ...)``: 1 where ``x > 0``, the slope elsewhere (a bool mask for ReLU).

        A LeakyReLU's slope is a Python float made a tensor of ``x``'s dtype, so it is not
        rounded to float32 in a float64 computation.
        """
        on = x > 0
        if self.slope == 0.0:
            return on
        return torch.where(
            on, torch.ones((), dtype=x.dtype), torch.tensor(self.slope, dtype=x.dtype)
        )

    def linearise(self, inputs: Sequence[torch.Tensor], policy: Policy) -> Linearised:
        """The gate of this point, or the identity (data-independent)."""
        (x,) = inputs
        if not policy.exact:
            return Linearised(x, lambda tangents: tangents[0], lambda cot: [cot])
        value, gate = self.gated(x)
        return pointwise(value, gate)

    def gated(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's output at ``x`` ``(1, ...)`` and its gate there (see :meth:`gate`)."""
        # the value as the model computes it, so that later masks fall as they do there
        value = torch.relu(x) if self.slope == 0.0 else F.leaky_relu(x, self.slope)
        return value, self.gate(x)

    def stage(self, x: torch.Tensor, value: torch.Tensor, policy: Policy) -> Stage:
        """The gate at each call's point (the rows multiplied by it), or the identity."""
        if not policy.exact:
            return identity_stage()

        def back(cot: torch.Tensor, gate: torch.Tensor, owned: bool) -> tuple[torch.Tensor, bool]:
            return (cot.mul_(gate) if owned else cot * gate), True

        return Stage(self.gated, back)


@dataclass(frozen=True, eq=False)
class ReLU(Gate):
    """``max(x, 0)``: ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``x.relu()`` and in-place forms."""

    modules = (nn.ReLU,)
    functions = (F.relu, F.relu_, torch.relu, torch.relu_)
    methods = ("relu", "relu_")

    @classmethod
    def from_module(cls, module: nn.Module) -> ReLU:
        """``nn.ReLU`` (``inplace`` or not: the engine never writes into its inputs)."""
        return cls(0.0)

    @classmethod
    def from_call(cls, input, inplace=False):
        """``F.relu(x, inplace)``, ``torch.relu(x)``, ``x.relu_()``."""
        return [input], cls(0.0)


@dataclass(frozen=True, eq=False)
class LeakyReLU(Gate):
    """``x`` where ``x > 0``, ``slope·x`` elsewhere: ``nn.LeakyReLU`` and ``F.leaky_relu``."""

    modules = (nn.LeakyReLU,)
    functions = (F.leaky_relu, F.leaky_relu_)

    @classmethod
    def from_module(cls, module: nn.Module) -> LeakyReLU:
        """``nn.LeakyReLU``, its slope kept as a Python float (no float32 rounding)."""
        return cls(float(module.negative_slope))

    @classmethod
    def from_call(cls, input, negative_slope=0.01, inplace=False):
        """``F.leaky_relu(x, negative_slope=0.01, inplace=False)``."""
        return [input], cls(float(negative_slope))


_SMOOTH_NAMES = [
    "GELU",
    "ELU",
    "SELU",
    "CELU",
    "SiLU",
    "Mish",
    "Sigmoid",
    "Tanh",
    "Softplus",
    "Softsign",
    "Hardswish",
    "Hardsigmoid",
    "LogSigmoid",
    "Softmax",
    "LogSoftmax",
    "Softmin",
    "Tanhshrink",
]
SMOOTH_MODULES = tuple(getattr(nn, name) for name in _SMOOTH_NAMES if hasattr(nn, name))
SMOOTH_FUNCTIONS = {
    getattr(F, name)
    for name in [
        "gelu",
        "elu",
        "selu",
        "celu",
        "silu",
        "mish",
        "sigmoid",
        "tanh",
        "softplus",
        "softsign",
        "hardswish",
        "hardsigmoid",
        "logsigmoid",
        "softmax",
        "log_softmax",
        "softmin",
        "tanhshrink",
    ]
    if hasattr(F, name)
} | {torch.sigmoid, torch.tanh, torch.exp, torch.softmax, torch.log_softmax, operator.pow}
SMOOTH_METHODS = {"sigmoid", "tanh", "exp", "softmax", "log_softmax", "pow", "sqrt", "log"}
