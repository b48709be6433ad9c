"""How far a virtual matrix holds: the linear region of a ReLU network around an input.

Fix an input ``x``. Every ReLU is on or off and every max-pool has picked one entry per window
(its *activation pattern*); while the pattern stays, the network is the affine map
``x' ↦ J x' + b``. Along a direction ``d`` every pre-activation and every pooled candidate is an
affine function of the step ``s`` (``z + s ż``, with ``ż`` pushed forwards by ``torch.func.jvp``),
so the first step at which the pattern changes is the smallest positive crossing among them:
:func:`region_radius` computes it exactly, in float64, in one forward pass per batch of
directions. Chains (``nn.Sequential``) of Conv2d, Linear, BatchNorm2d (eval), ReLU, LeakyReLU,
MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, Identity and Dropout (eval) are supported.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import nn

from kronlib._validate import as_float_tensor, as_real
from kronlib.terms import check_eval
from kronlib.testing import jacobian
from kronlib.virtual import chain

__all__ = ["activation_pattern", "linearisation_error", "region_radius", "same_pattern"]

_AFFINE = (
    nn.Conv2d,
    nn.Linear,
    nn.BatchNorm2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Identity,
    nn.Dropout,
)


def _layers(model: nn.Module) -> list[nn.Module]:
    """The chain's layers in float64, checked: affine ones, ReLU/LeakyReLU, plain MaxPool2d."""
    check_eval(model)
    layers = []
    for name, layer in chain(model):
        kind = type(layer)
        if kind in (nn.ReLU, nn.LeakyReLU):
            pass
        elif kind is nn.MaxPool2d:
            if layer.dilation not in (1, (1, 1)) or layer.ceil_mode:
                raise ValueError(f"{name}: MaxPool2d with dilation or ceil_mode is not supported")
        elif kind is nn.BatchNorm2d and layer.running_var is None:
            raise ValueError(
                f"{name}: BatchNorm2d without running statistics (track_running_stats=False) "
                "normalises by the batch, so inputs would interact"
            )
        elif kind not in _AFFINE:
            raise ValueError(
                f"{name}: {kind.__name__} is not supported by region_radius (supported: "
                f"ReLU, LeakyReLU, MaxPool2d and {', '.join(k.__name__ for k in _AFFINE)})"
            )
        layers.append(copy.deepcopy(layer).double())
    return layers


def _push(layer: nn.Module, v: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An affine layer's value at ``v`` and derivative along ``t`` (``torch.func.jvp``)."""
    with warnings.catch_warnings():  # torch's first jvp registers decompositions noisily
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        return torch.func.jvp(layer, (v,), (t,))


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _pool_candidates(
    layer: nn.MaxPool2d, v: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidates and winners of a max-pool at ``v`` along ``t``.

    Returns window entries ``(K, C, Ho, Wo, kh·kw)`` of values and tangents (strided views,
    no copies), and the winners' values and tangents ``(K, C, Ho, Wo, 1)``.
    """
    kernel, stride, padding = _pair(layer.kernel_size), _pair(layer.stride), _pair(layer.padding)
    indices = F.max_pool2d(v, kernel, stride, padding, return_indices=True)[1]
    flat = indices.flatten(2)
    win_v = v.flatten(2).gather(2, flat).reshape(*indices.shape, 1)
    win_t = t.flatten(2).gather(2, flat).reshape(*indices.shape, 1)
    pad = (padding[1], padding[1], padding[0], padding[0])
    padded_v = F.pad(v, pad, value=-torch.inf) if any(pad) else v
    padded_t = F.pad(t, pad, value=0.0) if any(pad) else t

    def windows(x: torch.Tensor) -> torch.Tensor:
        view = x.unfold(2, kernel[0], stride[0]).unfold(3, kernel[1], stride[1])
        return view[:, :, : indices.shape[2], : indices.shape[3]].flatten(4)

    return windows(padded_v), windows(padded_t), win_v, win_t


def region_radius(model: nn.Module, x: ArrayLike, directions: ArrayLike) -> torch.Tensor:
    """The largest step along each direction before the activation pattern at ``x`` changes.

    For a direction ``d`` the result is ``s* = sup{s : pattern(x + s'd) = pattern(x) for all
    0 ≤ s' < s}``: ``0`` when ``x`` lies on a border (a unit exactly at zero that ``d`` turns on,
    or a max-pool tie that ``d`` breaks the other way), ``inf`` when no unit ever changes.
    The step is in the units of ``d`` (normalise ``d`` for a distance).

    Args:
        model: a chain in eval mode (see the module docstring for the layer types).
        x: one input ``in_shape``, or one input per direction ``(K, *in_shape)``.
        directions: ``(K, *in_shape)``.

    Returns:
        ``(K,)`` float64.
    """
    layers = _layers(model)
    point = as_float_tensor(x, "x").double()
    ways = as_float_tensor(directions, "directions").double()
    if point.ndim == ways.ndim - 1 and tuple(point.shape) == tuple(ways.shape[1:]):
        point = point[None].expand_as(ways)
    if ways.ndim < 2 or tuple(point.shape) != tuple(ways.shape):
        raise ValueError(
            f"directions must be (K, *in_shape) and x in_shape or (K, *in_shape), got "
            f"directions {tuple(ways.shape)} and x {tuple(point.shape)}"
        )
    v, t = point.contiguous(), ways
    radius = torch.full((len(ways),), torch.inf, dtype=torch.float64)
    with torch.no_grad():
        for layer in layers:
            if isinstance(layer, nn.ReLU | nn.LeakyReLU):
                on = v > 0
                flips = (on & (t < 0)) | (~on & (t > 0))
                cross = torch.where(flips, -v / torch.where(flips, t, 1.0), torch.inf)
                radius = torch.minimum(radius, cross.flatten(1).amin(1))
                slope = 0.0 if isinstance(layer, nn.ReLU) else float(layer.negative_slope)
                gate = torch.where(on, 1.0, slope).to(v)
                v, t = v * gate, t * gate
            elif isinstance(layer, nn.MaxPool2d):
                entries_v, entries_t, win_v, win_t = _pool_candidates(layer, v, t)
                overtakes = entries_t > win_t
                gap = torch.where(overtakes, (win_v - entries_v) / (entries_t - win_t), torch.inf)
                radius = torch.minimum(radius, gap.flatten(1).amin(1).clamp_min(0))
                v, t = win_v[..., 0], win_t[..., 0]
            else:
                v, t = _push(layer, v, t)
    return radius


def activation_pattern(model: nn.Module, x: ArrayLike) -> list[torch.Tensor]:
    """The on/off masks of every ReLU/LeakyReLU and the picks of every max-pool at ``x``.

    Args:
        model: a chain in eval mode.
        x: a batch ``(N, *in_shape)``.

    Returns:
        one tensor per ReLU (bool, ``v > 0``) and max-pool (int64 indices), in order.
    """
    layers = _layers(model)
    v = as_float_tensor(x, "x").double()
    pattern = []
    with torch.no_grad():
        for layer in layers:
            if isinstance(layer, nn.ReLU | nn.LeakyReLU):
                pattern.append(v > 0)
            elif isinstance(layer, nn.MaxPool2d):
                kernel, stride = _pair(layer.kernel_size), _pair(layer.stride)
                padding = _pair(layer.padding)
                pattern.append(F.max_pool2d(v, kernel, stride, padding, return_indices=True)[1])
            v = layer(v)
    return pattern


def same_pattern(first: list[torch.Tensor], second: list[torch.Tensor]) -> torch.Tensor:
    """Per input of two batches' patterns (:func:`activation_pattern`): are they equal? ``(N,)``.

    A batch of one is compared with every input of the other.
    """
    if len(first) != len(second):
        raise ValueError("patterns must come from the same model")
    equal = torch.ones(max(len(first[0]), len(second[0])), dtype=torch.bool)
    for a, b in zip(first, second, strict=True):
        equal &= (a == b).flatten(1).all(1)
    return equal


def linearisation_error(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: ArrayLike,
    direction: ArrayLike,
    steps: Sequence[float],
) -> list[float]:
    """How far the affine map at ``x`` is from the model at ``x + s·d``, for each step ``s``.

    ``max |f(x + s d) − f(x) − J (s d)|`` with ``J = ∂f/∂x`` at ``x`` (by ``torch.func.jacrev``,
    so any differentiable model works: ReLU networks, GELU networks, attention).

    Args:
        model: takes a batch ``(N, *in_shape)``.
        x: one input ``in_shape``.
        direction: ``in_shape``.
        steps: step sizes.

    Returns:
        one error per step.
    """
    point = as_float_tensor(x, "x")
    way = as_float_tensor(direction, "direction").to(point.dtype)
    if way.shape != point.shape:
        raise ValueError(
            f"direction must have x's shape {tuple(point.shape)}, got {tuple(way.shape)}"
        )
    J = jacobian(model, point)
    lead = J.ndim - point.ndim
    errors = []
    with torch.no_grad():
        base = model(point[None])[0]
        for step in steps:
            s = as_real(step, "steps (each)")
            moved = model((point + s * way)[None])[0]
            predicted = base + (J * (s * way)).flatten(lead).sum(-1).reshape(base.shape)
            errors.append(float((moved - predicted).abs().max()))
    return errors
