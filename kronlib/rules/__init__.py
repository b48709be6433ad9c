"""One rule per layer type: everything the virtual-matrix engine knows about a layer.

========================  ======================================================================
rule                      stands for
========================  ======================================================================
``conv.Conv``             ``nn.Conv2d``, ``F.conv2d``
``linear.Linear``         ``nn.Linear``, ``F.linear``
``activation.ReLU``       ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``x.relu()`` (in-place too)
``activation.LeakyReLU``  ``nn.LeakyReLU``, ``F.leaky_relu``
``pool.MaxPool``          ``nn.MaxPool2d``, ``F.max_pool2d``
``pool.AvgPool``          ``nn.AvgPool2d``, ``F.avg_pool2d``
``pool.AdaptiveAvgPool``  ``nn.AdaptiveAvgPool2d``, ``F.adaptive_avg_pool2d``
``batchnorm.BatchNorm``   ``nn.BatchNorm1d/2d`` and ``F.batch_norm`` in eval mode
``shape.Flatten``         ``nn.Flatten``, ``torch.flatten``, ``x.flatten``
``shape.View``            ``x.view``, ``x.reshape``, ``torch.reshape``
``shape.Passthrough``     ``nn.Identity``, ``x.contiguous()``; ``Dropout`` (off, eval mode)
``combine.Add``           ``a + b`` (residual connections), ``torch.add``; ``Subtract`` likewise
``combine.Multiply``      scaling by a constant; ``Divide`` likewise
``combine.Cat``           ``torch.cat`` along a non-batch axis
========================  ======================================================================

Adding a layer type means one :class:`~kronlib.rules.base.Rule` subclass in one module, listed
in :data:`RULES`, and one test of it against ``torch.func.vjp``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from torch import nn

from kronlib.rules.activation import (
    SMOOTH_FUNCTIONS,
    SMOOTH_METHODS,
    SMOOTH_MODULES,
    LeakyReLU,
    ReLU,
)
from kronlib.rules.base import (
    Field,
    Linearised,
    Policy,
    Rule,
    UnsupportedLayerError,
    Variable,
)
from kronlib.rules.batchnorm import BatchNorm
from kronlib.rules.combine import Add, Cat, Divide, Multiply, Subtract
from kronlib.rules.conv import Conv
from kronlib.rules.linear import Linear
from kronlib.rules.pool import AdaptiveAvgPool, AvgPool, MaxPool
from kronlib.rules.shape import Dropout, Flatten, Passthrough, View

__all__ = [
    "RULES",
    "Field",
    "Linearised",
    "Policy",
    "Rule",
    "UnsupportedLayerError",
    "Variable",
    "computes_attributes",
    "rule_for_function",
    "rule_for_method",
    "rule_for_module",
    "why_unsupported",
]

RULES: tuple[type[Rule], ...] = (
    Conv,
    Linear,
    ReLU,
    LeakyReLU,
    MaxPool,
    AvgPool,
    AdaptiveAvgPool,
    BatchNorm,
    Flatten,
    View,
    Passthrough,
    Dropout,
    Add,
    Subtract,
    Multiply,
    Divide,
    Cat,
)

_ALLOWED_OWN = {"reset_parameters", "extra_repr"}


def _keeps_behaviour(module: nn.Module, base: type[nn.Module]) -> bool:
    """Whether a subclass of ``base`` computes what ``base`` computes.

    A subclass that defines methods of its own (a ``forward``, a ``_conv_forward``, …) may
    compute something else (a weight-standardised convolution, a shifted ReLU): it is not taken
    for its base class; the engine traces into its ``forward`` instead. Properties (such as the
    ones ``torch.nn.utils.parametrize`` adds) are read through, so they are kept (and read again
    at every call: :func:`computes_attributes`).
    """
    for klass in type(module).__mro__:
        if klass is base:
            return True
        for name, member in vars(klass).items():
            if name.startswith("__") or name in _ALLOWED_OWN or isinstance(member, property):
                continue
            if callable(member) or isinstance(
                member, staticmethod | classmethod | functools.partialmethod
            ):
                return False
    return False


def computes_attributes(module: nn.Module) -> bool:
    """Whether reading the module's attributes runs code (properties of its class).

    A parametrization (``torch.nn.utils.parametrize``: ``weight_norm``, a standardised
    weight) makes ``module.weight`` a new tensor computed from the parameters at each read; a
    subclass may derive a slope from a parameter. A rule bound to such a module holds what the
    properties gave when it was bound, so the engine binds it again at every call (and compiles
    no plan through it). The supported base classes have no properties.
    """
    return any(
        isinstance(member, property | functools.cached_property)
        for klass in type(module).__mro__
        for member in vars(klass).values()
    )


def rule_for_module(module: nn.Module) -> type[Rule] | None:
    """The rule for ``module``'s type, or ``None`` (unsupported, or a subclass with own code)."""
    if "forward" in vars(module):  # a forward replaced on the instance: not the type's code
        return None
    for rule in RULES:
        for base in rule.modules:
            if type(module) is base or (
                isinstance(module, base) and _keeps_behaviour(module, base)
            ):
                return rule
    return None


def rule_for_function(function: Callable[..., Any]) -> type[Rule] | None:
    """The rule for a ``call_function`` target (``F.relu``, ``operator.add``, …), or ``None``."""
    for rule in RULES:
        if any(function is f for f in rule.functions):
            return rule
    return None


def rule_for_method(name: str) -> type[Rule] | None:
    """The rule for a ``call_method`` name (``"view"``, ``"relu_"``, …), or ``None``."""
    for rule in RULES:
        if name in rule.methods:
            return rule
    return None


def why_unsupported(kind: str, target: Any) -> str:
    """Why an operation with no rule is refused (``kind``: module, function or method)."""
    smooth = (
        (kind == "module" and isinstance(target, SMOOTH_MODULES))
        or (kind == "function" and target in SMOOTH_FUNCTIONS)
        or (kind == "method" and target in SMOOTH_METHODS)
    )
    if smooth:
        return (
            "it is a smooth activation: its derivative is not a 0/1 (or slope) mask, so the "
            "network is not piecewise linear and has no exact virtual matrix"
        )
    return "it is not an operation kronlib has a rule for (see kronlib.rules)"
