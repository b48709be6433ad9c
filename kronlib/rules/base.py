"""What every rule gives the engine: a layer linearised at one point, both ways.

A *rule* is one small class per layer type (``kronlib.rules.conv.Conv``, …). Bound to one call of
its layer (a module, or a functional call with its arguments) it says everything the
virtual-matrix engine needs:

* ``why_not()`` — why this call cannot be represented exactly (``None`` when it can);
* ``linearise(inputs, policy)`` — the layer at the point ``inputs``: its output there and its
  linear part as a :class:`Linearised` (forward composition of kernels, reverse pullback of rows);
  under the data-independent policy the layer is replaced by its stand-in (ReLU → identity,
  MaxPool → AvgPool) before linearising;
* ``receptive_field(field)`` — how the layer grows the input region one unit sees.

Tensors carry a leading batch axis: values have batch 1 (one image), tangents and cotangents have
batch ``n`` (input pixels for the forward composition, selected rows for the reverse one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = [
    "Field",
    "Linearised",
    "Policy",
    "Rule",
    "Stage",
    "StaleStageError",
    "UnsupportedLayerError",
    "Variable",
    "check_image",
    "identity_stage",
    "linear_pullback",
    "live",
    "parameter",
    "pointwise",
]


class UnsupportedLayerError(ValueError):
    """A model or layer that the virtual-matrix engine cannot represent exactly."""


@dataclass(frozen=True, eq=False)
class Variable:
    """An argument of a functional call that depends on the network's input.

    The engine hands these to :meth:`Rule.from_call` in place of input-dependent tensors, so that
    a rule can tell its inputs from its constants; every other argument is a constant.
    """

    value: torch.Tensor


@dataclass(frozen=True)
class Policy:
    """How to linearise: exactly at the input, or the data-independent stand-ins.

    Attributes:
        exact: ReLU masks and max-pool picks as they fall at the point (``True``), or the
            data-independent map (ReLU as the identity, MaxPool as AvgPool, ``False``).
        average_maxpool: with ``exact``, replace the max-pool selection by an average anyway
            (the blog's approximation, kept for comparison).
    """

    exact: bool
    average_maxpool: bool = False


@dataclass(frozen=True)
class Linearised:
    """One layer at one point: its output there and its linear part.

    Attributes:
        value: ``(1, *out_shape)``, the layer's output (of its stand-in under a data-independent
            policy).
        forward: tangents ``[(n, *in_shape_i)]``, one per variable input (``None`` for an input
            that carries none) → ``(n, *out_shape)``.
        pullback: cotangents ``(n, *out_shape)`` → ``[(n, *in_shape_i)]``, one per variable input.
        exact: whether ``value`` is ``forward(inputs)`` plus a constant (the layer's affine map
            at the point). ``False`` for an approximation (a max-pool read as an average) whose
            value is still the true one, so that later masks fall as in the model; its own
            affine map is ``forward`` with no constant.
        fresh: whether ``pullback`` returns new tensors (sharing no memory with its cotangent
            or anything else), which the engine may then overwrite.
        pullback_into: optionally, the pullback allowed to overwrite its cotangent (the engine
            calls it only with a tensor nothing else holds, saving an allocation); its result
            is as fresh as its cotangent.
    """

    value: torch.Tensor
    forward: Callable[[Sequence[torch.Tensor | None]], torch.Tensor]
    pullback: Callable[[torch.Tensor], list[torch.Tensor]]
    exact: bool = True
    fresh: bool = False
    pullback_into: Callable[[torch.Tensor], list[torch.Tensor]] | None = None

    def pull(self, cot: torch.Tensor, owned: bool) -> tuple[list[torch.Tensor], bool]:
        """``(rows, fresh)``: ``cot`` sent back, and whether the pass now owns what it got.

        Into ``cot`` itself when the pass owns it (a tensor it made, that nothing else holds)
        and the layer allows it; :attr:`pullback` otherwise.
        """
        if owned and self.pullback_into is not None:
            return self.pullback_into(cot), True
        return self.pullback(cot), self.fresh


class StaleStageError(RuntimeError):
    """A :class:`Stage` met a layer that no longer fits it (a weight of another shape)."""


@dataclass(frozen=True)
class Stage:
    """One layer of a compiled plain chain (:mod:`kronlib._plan`): its two halves, bound once.

    Everything that depends only on the layout of the input (its shape, dtype and device) is
    chosen when the stage is made; the layer's parameters are read at each call, so that a
    weight changed in place is seen. Each half computes what :meth:`Rule.linearise` and its
    :class:`Linearised` pullback compute, with the same operations (the same bits). Both are
    called under ``torch.no_grad()`` (parameters need no detach, see :func:`live`).

    Attributes:
        run: ``x`` ``(1, *in_shape)`` → ``(value, saved)``: the layer's output ``(1,
            *out_shape)`` and what ``back`` needs (a mask, the picked indices, the weight).
            Raises :class:`StaleStageError` when the layer no longer fits the stage.
        back: ``(cot, saved, owned)`` → ``(rows, owned)``: rows ``(n, *out_shape)`` →
            ``(n, *in_shape)``; ``owned`` says whether ``cot`` may be overwritten (a tensor only
            this pass holds), and the returned flag the same of ``rows``.
    """

    run: Callable[[torch.Tensor], tuple[torch.Tensor, Any]]
    back: Callable[[torch.Tensor, Any, bool], tuple[torch.Tensor, bool]]


def identity_stage() -> Stage:
    """The stage of a layer that passes its input on (its rows go back unchanged)."""
    return Stage(lambda x: (x, None), lambda cot, saved, owned: (cot, owned))


@dataclass(frozen=True)
class Field:
    """Receptive field along one axis: the side ``size`` one unit sees, ``jump`` between units."""

    size: int = 1
    jump: int = 1

    def grown(self, kernel: int, stride: int, dilation: int = 1) -> Field:
        """After a sliding window of ``kernel`` taps, ``stride`` and ``dilation``."""
        return Field(self.size + dilation * (kernel - 1) * self.jump, self.jump * stride)


class Rule:
    """One layer type: subclasses say which modules, functions and methods they stand for.

    Class attributes:
        modules: the ``nn.Module`` types (exact types, or subclasses without code of their own).
        functions: ``torch``/``F``/``operator`` callables met as ``call_function`` nodes.
        methods: tensor method names met as ``call_method``.
    """

    modules: ClassVar[tuple[type[nn.Module], ...]] = ()
    functions: ClassVar[tuple[Callable[..., Any], ...]] = ()
    methods: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_module(cls, module: nn.Module) -> Rule:
        """The rule bound to one module (its parameters and settings)."""
        raise NotImplementedError

    @classmethod
    def from_call(cls, *args: Any, **kwargs: Any) -> tuple[list[Any], Rule]:
        """The rule bound to a functional call: ``(variable arguments, bound rule)``.

        Input-dependent arguments arrive as :class:`Variable`; the rule returns those it treats
        as its inputs, in the order :meth:`linearise` receives them (their values). A
        :class:`Variable` it does not return (a weight that depends on the input, say) makes
        the engine refuse the call as not linear.
        """
        raise NotImplementedError

    def why_not(self) -> str | None:
        """Why this layer cannot be represented exactly, or ``None``."""
        return None

    def linearise(self, inputs: Sequence[torch.Tensor], policy: Policy) -> Linearised:
        """The layer at ``inputs`` (each ``(1, ...)``) under ``policy``."""
        raise NotImplementedError

    def receptive_field(self, field: Field, input_size: int) -> Field:
        """The receptive field after this layer (unchanged by default)."""
        return field

    def stage(self, x: torch.Tensor, value: torch.Tensor, policy: Policy) -> Stage | None:
        """This layer as a :class:`Stage` for inputs laid out like ``x``, or ``None``.

        Args:
            x: ``(1, *in_shape)``, an input the layer was linearised at (its layout counts).
            value: ``(1, *out_shape)``, the layer's output there.
            policy: the policy the stage linearises under.

        ``None`` (the default) lets the plan run :meth:`linearise` at each call instead.
        """
        return None


def linear_pullback(
    fn: Callable[[torch.Tensor], torch.Tensor], in_shape: Sequence[int]
) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """The pullback of a *linear* batched map ``fn`` on ``(n, *in_shape)``, by autograd.

    For a linear map the vector-Jacobian product does not depend on the point, so the batch of
    cotangents goes back in one call at the zero input.
    """

    def pull(cot: torch.Tensor) -> list[torch.Tensor]:
        zero = cot.new_zeros(cot.shape[0], *in_shape)
        _, vjp = torch.func.vjp(fn, zero)
        return [vjp(cot)[0]]

    return pull


def pointwise(value: torch.Tensor, factor: torch.Tensor) -> Linearised:
    """A layer whose linear part multiplies by ``factor`` (a ReLU gate, a BatchNorm scale).

    Args:
        value: ``(1, *out_shape)``, the layer's output at the point.
        factor: broadcastable to ``(n, *out_shape)``.
    """
    return Linearised(
        value,
        lambda tangents: tangents[0] * factor,
        lambda cot: [cot * factor],
        fresh=True,
        pullback_into=lambda cot: [cot.mul_(factor)],
    )


def check_image(x: torch.Tensor) -> None:
    """Require a batch of images ``(1, C, H, W)``: an input of ``(C, H, W)``, no batch axis."""
    if x.ndim != 4:
        raise ValueError(
            f"it takes images of shape (C, H, W) (no batch axis), got {tuple(x.shape[1:])}"
        )


def live(tensor: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """:func:`parameter` without the detach, for a :class:`Stage` (run under ``no_grad``).

    The tensor itself when its dtype and device are already ``like``'s (what ``.to`` would
    return, without its argument parsing).
    """
    if tensor is None or (tensor.dtype is like.dtype and tensor.device == like.device):
        return tensor
    return tensor.to(dtype=like.dtype, device=like.device)


def parameter(tensor: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """A layer constant in the computation's dtype and device (no float32 in float64 sums)."""
    return None if tensor is None else live(tensor.detach(), like)
