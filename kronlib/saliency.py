"""Gradient saliency and the Kronecker composition: three computations of one object.

For a ReLU network and a fixed input, a unit's value is ``J·x + b`` for its virtual-matrix row
``J`` (the composed, masked kernels) and an offset ``b`` carried by the biases. Gradient saliency
computes the same ``J`` backwards. This module lines the three up: the forward composition
(:func:`kronlib.virtual.virtual_matrix`), autograd saliency, and the network's own forward pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from kronlib._validate import (
    ArrayLike,
    as_conv_weight,
    as_float_tensor,
    as_int,
    as_int_in,
    as_shape,
)
from kronlib.virtual import affine_output, chain, prefix, virtual_matrix

__all__ = [
    "LayerCheck",
    "active_channels_by_layer",
    "active_counts",
    "index_formula_row",
    "saliency",
    "saliency_batch",
    "verify_layers",
]


def saliency(model: nn.Module, x: ArrayLike, output: int) -> torch.Tensor:
    """Gradient saliency: ``∂ model(x)[output] / ∂ x`` by one backward pass (no absolute value).

    Args:
        model: any differentiable model taking a batch.
        x: one input (no batch axis).
        output: flat index of the output, an int (Python, numpy or 0-d tensor) in
            ``0..n-1`` for a model with ``n`` outputs.

    Returns:
        A tensor shaped like ``x``.
    """
    point = as_float_tensor(x, "x").detach().clone().requires_grad_(True)
    as_int(output, "output")
    values = model(point[None])[0].flatten()
    n = values.numel()
    value = values[as_int_in(output, "output", 0, n - 1, f"the model gives {n} outputs")]
    (grad,) = torch.autograd.grad(value, point)
    return grad


def saliency_batch(model: nn.Module, images: ArrayLike, outputs: ArrayLike) -> torch.Tensor:
    """Saliency of many inputs at once: ``∂ model(images)[i, outputs[i]] / ∂ images[i]``.

    One backward pass for the whole batch: in eval mode the images of a batch do not interact,
    so the gradient of the sum of the chosen outputs splits into each image's own row of its
    exact virtual matrix.

    Args:
        model: a model in eval mode (no batch statistics), ``(N, *in) → (N, K)``.
        images: ``(N, *in)``.
        outputs: ``(N,)`` the output index for each image.

    Returns:
        ``(N, *in)``, detached.
    """
    batch = as_float_tensor(images, "images").detach().clone().requires_grad_(True)
    index = torch.as_tensor(outputs)
    if index.dtype in (torch.bool,) or index.dtype.is_floating_point:
        raise TypeError(f"outputs must hold ints, got dtype {index.dtype}")
    if index.shape != (batch.shape[0],):
        raise ValueError(
            f"outputs must have one index per image, shape ({batch.shape[0]},), got "
            f"{tuple(index.shape)}"
        )
    if any(m.training for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
        raise ValueError(
            "model has BatchNorm in training mode, which couples the images: call eval()"
        )
    scores = model(batch)
    if scores.ndim != 2:
        raise ValueError(f"model must return (N, K) scores, got shape {tuple(scores.shape)}")
    if int(index.min()) < 0 or int(index.max()) >= scores.shape[1]:
        raise ValueError(f"outputs must index the {scores.shape[1]} outputs, got {index.tolist()}")
    chosen = scores.gather(1, index.to(scores.device)[:, None]).sum()
    (grad,) = torch.autograd.grad(chosen, batch)
    return grad.detach()


@dataclass(frozen=True)
class LayerCheck:
    """One row of the verification table: a unit, and how far the three computations differ."""

    layer: str
    unit: tuple[int, ...]
    kronecker_vs_saliency: float
    kronecker_vs_forward: float
    saliency_vs_forward: float


def _check_layer_names(layers: object) -> list:
    """``layers`` as a list of names; one bare string (iterated letter by letter) is refused."""
    if isinstance(layers, str | bytes) or not isinstance(layers, Iterable):
        raise TypeError(
            f"layers must be a sequence of layer names such as ['conv1'], got "
            f"{type(layers).__name__} {layers!r}"
        )
    return list(layers)


def _centre(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(s // 2 for s in shape) if len(shape) == 1 else (0, *(s // 2 for s in shape[1:]))


def verify_layers(
    model: nn.Module, x: ArrayLike, layers: Sequence[str], channel: int = 0
) -> list[LayerCheck]:
    """Compare composition, saliency and the forward pass at the centre unit of each layer.

    For each named layer of :func:`kronlib.virtual.chain`, the unit is channel ``channel`` at the
    centre position (for a linear layer, the middle unit). Kronecker: the unit's row of the
    data-dependent virtual matrix, built forward, and its offset. Saliency: autograd's gradient of
    the unit. Forward: the unit's value in the network's own forward pass, against ``J·x + b``.

    Args:
        model: a model :func:`kronlib.virtual.chain` accepts.
        x: one input (no batch axis).
        layers: names of layers, a list or tuple (not one string).
        channel: an int (Python, numpy or 0-d tensor) below every named convolutional layer's
            channel count; ignored for linear layers.

    Returns:
        One :class:`LayerCheck` per layer: the max absolute differences.
    """
    point = as_float_tensor(x, "x").detach()
    layers = _check_layer_names(layers)
    channel = as_int(channel, "channel", minimum=0)
    rows = []
    for layer in layers:
        cut = prefix(model, layer)
        with torch.no_grad():
            value = cut(point[None])[0]
        unit = _centre(value.shape)
        if value.ndim > 1:
            as_int_in(
                channel,
                "channel",
                0,
                value.shape[0] - 1,
                f"layer {layer!r} has {value.shape[0]} channels",
            )
            unit = (channel, *unit[1:])
        flat = 0
        for size, index in zip(value.shape, unit, strict=True):
            flat = flat * size + index
        J, offset = virtual_matrix(cut, point, outputs=flat, bias=True, method="forward")
        grad = saliency(cut, point, flat)
        actual = value.flatten()[flat]
        rows.append(
            LayerCheck(
                layer,
                unit,
                float((J[0] - grad).abs().max()),
                float((affine_output(J[0], point, offset[0]) - actual).abs()),
                float((affine_output(grad, point, offset[0]) - actual).abs()),
            )
        )
    return rows


def index_formula_row(
    w1: ArrayLike,
    w2: ArrayLike,
    position: tuple[int, int, int],
    input_shape: tuple[int, int, int],
    stride1: int = 1,
    stride2: int = 1,
    mask: ArrayLike | None = None,
) -> torch.Tensor:
    """One row of the two-layer virtual matrix, written out from the index formula.

    ``J[o, c, r, s] = Σ_m Σ_{p,q} K2[o,m,p,q] · M[m, i·s2+p, j·s2+q] ·
    K1[m, c, r − (i·s2+p)·s1, s − (j·s2+q)·s1]`` for output ``(o, i, j)``, with the mask ``M``
    (all ones when ``mask`` is None) and ``K1`` taken as zero outside its support. Plain loops,
    independent of any convolution routine: a referee for the faster computations.

    Args:
        w1: ``(C1, C0, k1, k1)``, the first layer.
        w2: ``(C2, C1, k2, k2)``, the second layer.
        position: ``(o, i, j)``, the output unit: ``o < C2`` and ``(i, j)`` inside the
            ``(H2, W2)`` output map.
        input_shape: ``(C0, H, W)``.
        stride1: the first layer's stride, an int ``≥ 1``.
        stride2: the second layer's stride, an int ``≥ 1``.
        mask: ``(C1, H1, W1)`` on/off pattern of the intermediate units, or None.

    Ints may be Python, numpy or 0-d tensor ints; anything out of range raises ``ValueError``.

    Returns:
        ``(C0, H, W)``.
    """
    K1, K2 = as_conv_weight(w1, "w1"), as_conv_weight(w2, "w2")
    o, i, j, input_shape, stride1, stride2, mask = _check_index_formula_arguments(
        K1, K2, position, input_shape, stride1, stride2, mask
    )
    row = torch.zeros(input_shape, dtype=torch.promote_types(K1.dtype, K2.dtype))
    _, k1h, k1w = K1.shape[1:]
    for m in range(K2.shape[1]):
        for p in range(K2.shape[2]):
            for q in range(K2.shape[3]):
                u, v = i * stride2 + p, j * stride2 + q  # intermediate unit read
                gate = 1.0 if mask is None else float(mask[m, u, v])
                if gate == 0.0:
                    continue
                top, left = u * stride1, v * stride1  # where its window starts in the input
                row[:, top : top + k1h, left : left + k1w] += gate * K2[o, m, p, q] * K1[m]
    return row


def _check_index_formula_arguments(
    K1: torch.Tensor,
    K2: torch.Tensor,
    position: object,
    input_shape: object,
    stride1: object,
    stride2: object,
    mask: object,
) -> tuple[int, int, int, tuple[int, int, int], int, int, torch.Tensor | None]:
    """The arguments of :func:`index_formula_row` as ints and tensors, or raise."""
    if K2.shape[1] != K1.shape[0]:
        raise ValueError(
            f"w2 must take as many input channels as w1 gives out: w1 {tuple(K1.shape)} gives "
            f"{K1.shape[0]}, w2 {tuple(K2.shape)} takes {K2.shape[1]}"
        )
    shape = as_shape(input_shape, "input_shape")
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (C0, H, W), got {input_shape!r}")
    if shape[0] != K1.shape[1]:
        raise ValueError(
            f"input_shape has {shape[0]} channels but w1 {tuple(K1.shape)} expects {K1.shape[1]}"
        )
    s1, s2 = as_int(stride1, "stride1", minimum=1), as_int(stride2, "stride2", minimum=1)
    (k1h, k1w), (k2h, k2w) = K1.shape[2:], K2.shape[2:]
    mid = ((shape[1] - k1h) // s1 + 1, (shape[2] - k1w) // s1 + 1)
    out = ((mid[0] - k2h) // s2 + 1, (mid[1] - k2w) // s2 + 1)
    if min(shape[1] - k1h, shape[2] - k1w) < 0 or min(out) < 1:
        raise ValueError(
            f"input_shape {shape} is too small for a {k1h}×{k1w} kernel at stride {s1} "
            f"followed by a {k2h}×{k2w} kernel at stride {s2}: there is no output unit"
        )
    if isinstance(position, str | bytes) or not isinstance(
        position, Sequence | torch.Tensor | np.ndarray
    ):
        raise TypeError(f"position must be (o, i, j), got {type(position).__name__} {position!r}")
    if len(position) != 3:
        raise ValueError(f"position must be (o, i, j), got {position!r}")
    o = as_int_in(position[0], "position[0]", 0, K2.shape[0] - 1, "o, an output channel of w2")
    i = as_int_in(position[1], "position[1]", 0, out[0] - 1, f"i, a row of the {out} output")
    j = as_int_in(position[2], "position[2]", 0, out[1] - 1, f"j, a column of the {out} output")
    gates = None
    if mask is not None:
        gates = as_float_tensor(mask, "mask")
        expected = (K1.shape[0], *mid)
        if tuple(gates.shape) != expected:
            raise ValueError(
                f"mask must have shape {expected} (C1, H1, W1) of the intermediate map, got "
                f"{tuple(gates.shape)}"
            )
    return o, i, j, shape, s1, s2, gates


def active_channels_by_layer(model: nn.Module, x: ArrayLike, layers: Sequence[str]) -> list[int]:
    """For each named layer, how many channels have a positive activation somewhere for ``x``."""
    point = as_float_tensor(x, "x").detach()
    return [int(c) for c in active_counts(model, point[None], layers)[0]]


def active_counts(
    model: nn.Module,
    images: ArrayLike,
    layers: Sequence[str],
    *,
    per: str = "channel",
    batch_size: int = 500,
) -> torch.Tensor:
    """Active channels (or units) per named layer for a batch: ``(N, len(layers))`` int64.

    A channel is active for an input when it is positive at one position at least (for a
    linear layer's output, a channel is a unit); a unit when it is positive.

    Args:
        model: a chain (see :func:`kronlib.virtual.chain`).
        images: ``(N, *in_shape)``.
        layers: layer names of the chain.
        per: ``"channel"`` or ``"unit"``.
        batch_size: inputs per forward pass.
    """
    if per not in ("channel", "unit"):
        raise ValueError(f"per must be 'channel' or 'unit', got {per!r}")
    batch = as_float_tensor(images, "images").detach()
    layers = _check_layer_names(layers)
    steps = chain(model)
    names = [name for name, _ in steps]
    missing = set(layers) - set(names)
    if missing:
        raise ValueError(f"layers must be among {names}; got {sorted(missing)}")
    batch_size = as_int(batch_size, "batch_size", minimum=1)
    param = next(model.parameters(), None)
    if param is not None:
        batch = batch.to(param.dtype)
    counts = []
    with torch.no_grad():
        for start in range(0, len(batch), batch_size):
            out, found = batch[start : start + batch_size], {}
            for name, step in steps:
                out = step(out)
                if name in layers:
                    on = out > 0
                    if per == "channel" and out.ndim > 2:
                        on = on.flatten(2).any(2)
                    found[name] = on.flatten(1).sum(1)
            counts.append(torch.stack([found[name] for name in layers], dim=1))
    return torch.cat(counts)
