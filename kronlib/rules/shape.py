"""Layers that move no value: reshapes and identities.

Flatten / ``torch.flatten`` / ``view`` / ``reshape``, and the identities (``nn.Identity``,
Dropout at inference, ``contiguous``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kronlib.rules.base import (
    Linearised,
    Policy,
    Rule,
    Stage,
    UnsupportedLayerError,
    identity_stage,
)

__all__ = ["Dropout", "Flatten", "Passthrough", "View"]


class _Reshape(Rule):
    """A row-major reshape of everything but the batch axis."""

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The reshape of one value (batch 1)."""
        raise NotImplementedError

    def linearise(self, inputs: Sequence[torch.Tensor], policy: Policy) -> Linearised:
        """Tangents and cotangents are reshaped like the value, batch axis kept."""
        (x,) = inputs
        value = self.apply(x)
        if value.ndim == 0 or value.shape[0] != 1:
            raise UnsupportedLayerError(
                f"it reshapes the batch axis ({tuple(x.shape)} → {tuple(value.shape)}); only "
                "reshapes that keep the leading batch axis are supported"
            )
        in_shape, out_shape = x.shape[1:], value.shape[1:]
        return Linearised(
            value,
            lambda tangents: tangents[0].reshape(tangents[0].shape[0], *out_shape),
            lambda cot: [cot.reshape(cot.shape[0], *in_shape)],
        )

    def stage(self, x: torch.Tensor, value: torch.Tensor, policy: Policy) -> Stage:
        """The reshape (checked once for the layout); rows reshaped back.

        The rows' reshape may be a view of them: rows this pass owns stay owned.
        """
        apply, in_shape = self.apply, x.shape[1:]
        return Stage(
            lambda x: (apply(x), None),
            lambda cot, saved, owned: (cot.reshape(cot.shape[0], *in_shape), owned),
        )


@dataclass(frozen=True, eq=False)
class Flatten(_Reshape):
    """``nn.Flatten``, ``torch.flatten`` and ``x.flatten``."""

    start_dim: int = 0
    end_dim: int = -1

    modules = (nn.Flatten,)
    functions = (torch.flatten,)
    methods = ("flatten",)

    @classmethod
    def from_module(cls, module: nn.Flatten) -> Flatten:
        """``nn.Flatten(start_dim=1, end_dim=-1)``."""
        return cls(module.start_dim, module.end_dim)

    @classmethod
    def from_call(cls, input, start_dim=0, end_dim=-1):
        """``torch.flatten(x, start_dim=0, end_dim=-1)``."""
        return [input], cls(start_dim, end_dim)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Flatten one value."""
        return torch.flatten(x, self.start_dim, self.end_dim)


@dataclass(frozen=True, eq=False)
class View(_Reshape):
    """``x.view(*shape)``, ``x.reshape(*shape)`` and ``torch.reshape(x, shape)``."""

    shape: tuple[Any, ...] = ()

    functions = (torch.reshape,)
    methods = ("view", "reshape")

    @classmethod
    def from_call(cls, input, *shape, **kwargs):
        """The shape as separate ints or one sequence."""
        if "shape" in kwargs:
            shape = (kwargs["shape"],)
        if len(shape) == 1 and not isinstance(shape[0], int):
            shape = tuple(shape[0])
        return [input], cls(tuple(shape))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Reshape one value."""
        return x.reshape(*self.shape)


@dataclass(frozen=True, eq=False)
class Passthrough(Rule):
    """The identity: ``nn.Identity`` and ``x.contiguous()``."""

    modules = (nn.Identity,)
    methods = ("contiguous",)

    @classmethod
    def from_module(cls, module: nn.Module) -> Passthrough:
        """``nn.Identity``."""
        return cls()

    @classmethod
    def from_call(cls, input, *args, **kwargs):
        """``x.contiguous(memory_format=…)``."""
        return [input], cls()

    def linearise(self, inputs: Sequence[torch.Tensor], policy: Policy) -> Linearised:
        """The identity."""
        return Linearised(inputs[0], lambda tangents: tangents[0], lambda cot: [cot])

    def stage(self, x: torch.Tensor, value: torch.Tensor, policy: Policy) -> Stage:
        """The identity."""
        return identity_stage()


@dataclass(frozen=True, eq=False)
class Dropout(Passthrough):
    """Dropout at inference: the identity. Active dropout (training mode) is random: refused."""

    active: bool = False

    modules = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
    functions = (F.dropout, F.dropout1d, F.dropout2d)
    methods = ()

    @classmethod
    def from_module(cls, module: nn.Module) -> Dropout:
        """A dropout module: off in eval mode (or with ``p = 0``)."""
        return cls(bool(module.training and module.p > 0))

    @classmethod
    def from_call(cls, input, p=0.5, training=True, inplace=False):
        """``F.dropout(x, p, training, inplace)``: off when ``training`` is False."""
        return [input], cls(bool(training and p > 0))

    def why_not(self) -> str | None:
        """Active dropout drops random units: no fixed virtual matrix."""
        if self.active:
            return "dropout is active (training mode), so it is random: call model.eval()"
        return None
