"""ReLU makes the composed kernel data-dependent: masks carve it, position by position.

Between ``conv(w1)`` and ``conv(w2)`` a ReLU multiplies each intermediate activation by 0 or 1.
For one output position of the second layer, the composed kernel is then the composition of
``w1`` with ``w2`` *masked* by the part of the mask that position reads:
``conv_transpose2d(w2 ⊙ mask_window, w1, stride=s1)``; with stride equal to kernel size this is
``Σ_m (W2[:, m] ⊙ M_m) ⊗ W1[m, :]``, a masked Kronecker product.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from kronlib._validate import ArrayLike, as_conv_weight, as_float_tensor
from kronlib.conv import _check_chain, _pair
from kronlib.rules import Field, UnsupportedLayerError, rule_for_module, why_unsupported
from kronlib.virtual import prefix, virtual_matrix

__all__ = [
    "apply_carved",
    "carved_kernel",
    "kernel_extent",
    "layer_kernels",
    "pruned_on_stroke",
    "receptive_fields",
    "support_box",
]


def carved_kernel(
    w1: ArrayLike,
    w2: ArrayLike,
    mask: ArrayLike,
    position: tuple[int, int],
    stride1: int = 1,
    stride2: int = 1,
) -> torch.Tensor:
    """The composed kernel of ``conv(w1) → mask → conv(w2)`` at one output position.

    Args:
        w1: ``(C1, C0, k1, k1)``.
        w2: ``(C2, C1, k2, k2)``.
        mask: ``(C1, H1, W1)``, the ReLU's on/off pattern on the intermediate map (bool or 0/1).
        position: ``(Y, X)``, an output position of the second layer.
        stride1: stride of the first layer.
        stride2: stride of the second layer.

    Returns:
        ``(C2, C0, K, K)`` with ``K = stride1·(k2 − 1) + k1``; it acts on the input window whose
        corner is ``(Y·stride1·stride2, X·stride1·stride2)``.
    """
    a, b = as_conv_weight(w1, "w1"), as_conv_weight(w2, "w2")
    _check_chain(a, b)
    gate = as_float_tensor(mask, "mask").to(b.dtype)
    if gate.ndim != 3 or gate.shape[0] != a.shape[0]:
        raise ValueError(f"mask must be ({a.shape[0]}, H1, W1), got {tuple(gate.shape)}")
    s1, s2 = _pair(stride1, "stride1")[0], _pair(stride2, "stride2")[0]
    k2h, k2w = b.shape[-2:]
    y, x = position
    window = gate[:, y * s2 : y * s2 + k2h, x * s2 : x * s2 + k2w]
    if window.shape[-2:] != (k2h, k2w) or y < 0 or x < 0:
        raise ValueError(f"position {position} is outside the second layer's output")
    return F.conv_transpose2d(b * window[None], a.to(b.dtype), stride=s1)


def apply_carved(
    x: ArrayLike, w1: ArrayLike, w2: ArrayLike, mask: ArrayLike, stride1: int = 1, stride2: int = 1
) -> torch.Tensor:
    """Compute ``conv(w2, mask ⊙ conv(w1, x))`` one output at a time, with carved kernels.

    Each output is the dot product of its input window with :func:`carved_kernel`: a check that
    the masked composition reproduces the network (``x`` is ``(C0, H, W)``; no biases).

    Returns:
        ``(C2, H2, W2)``.
    """
    image = as_float_tensor(x, "x")
    a, b = as_conv_weight(w1, "w1"), as_conv_weight(w2, "w2")
    gate = as_float_tensor(mask, "mask")
    k2 = b.shape[-1]
    out_h = (gate.shape[1] - k2) // stride2 + 1
    out_w = (gate.shape[2] - k2) // stride2 + 1
    jump = stride1 * stride2
    out = image.new_zeros(b.shape[0], out_h, out_w)
    for y in range(out_h):
        for x_ in range(out_w):
            kernel = carved_kernel(a, b, gate, (y, x_), stride1, stride2)
            size = kernel.shape[-1]
            patch = image[:, y * jump : y * jump + size, x_ * jump : x_ * jump + size]
            out[:, y, x_] = (kernel * patch[None]).sum(dim=(1, 2, 3))
    return out


def receptive_fields(layers: Iterable[tuple[str, nn.Module]], input_size: int) -> dict[str, int]:
    """Side of the input region that one unit of each layer depends on.

    This is the size of the composite kernel up to that layer: ``K ← K + d·(k − 1)·J`` and
    ``J ← J·s`` for each convolution or pooling of kernel ``k``, dilation ``d`` and stride ``s``
    (``J`` is the distance, in input pixels, between neighbouring units). Each layer type says
    how it grows the field in its rule (:mod:`kronlib.rules`); activations keep it; a linear
    layer sees the whole input.

    Args:
        layers: ``(name, module)`` pairs in order, e.g. ``model.named_children()``.
        input_size: side of the (square) input.

    Returns:
        name -> receptive-field side, for every layer.

    Raises:
        UnsupportedLayerError: for a layer type kronlib has no rule for.
    """
    field, out = Field(), {}
    for name, layer in layers:
        rule = rule_for_module(layer)
        if rule is None:
            raise UnsupportedLayerError(
                f"layer {name!r} ({type(layer).__name__}) is not supported: "
                f"{why_unsupported('module', layer)}"
            )
        field = rule.from_module(layer).receptive_field(field, input_size)
        out[name] = min(field.size, input_size)
    return out


def layer_kernels(
    model: nn.Sequential, x: ArrayLike, layer: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every unit's effective kernel at one layer, for this input.

    The kernels are the rows of the data-dependent virtual matrix of the model cut after
    ``layer`` (:func:`kronlib.virtual.virtual_matrix`): masks and pool picks as they fell.

    Args:
        model: a plain chain (see :func:`kronlib.virtual.chain`).
        x: one input ``(C, H, W)``.
        layer: name of the layer whose output units are wanted.

    Returns:
        ``(values, kernels)``: the layer's output for ``x`` (no batch axis) and the kernels,
        shape ``(*values.shape, C, H, W)``; kernel ``[u]`` is ``∂ values[u] / ∂ x``.
    """
    cut = prefix(model, layer)
    image = as_float_tensor(x, "x").detach()
    with torch.no_grad():
        values = cut(image[None])[0]
    return values, virtual_matrix(cut, image)


def kernel_extent(kernels: ArrayLike) -> torch.Tensor:
    """Side of the bounding box of each kernel's non-zeros (0 for an all-zero kernel).

    Args:
        kernels: ``(..., C, H, W)``.

    Returns:
        ``(...)``: ``max(rows spanned, columns spanned)`` per kernel.
    """
    k = as_float_tensor(kernels, "kernels")
    support = (k != 0).any(dim=-3)  # (..., H, W)
    spans = []
    for axis in (-1, -2):  # rows, then columns
        hit = support.any(dim=axis)  # (..., n)
        n = hit.shape[-1]
        index = torch.arange(n, device=hit.device)
        first = torch.where(hit, index, n).min(dim=-1).values
        last = torch.where(hit, index, -1).max(dim=-1).values
        spans.append((last - first + 1).clamp_min(0))
    return torch.maximum(*spans)


def support_box(kernel: ArrayLike) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of the bounding box of a kernel's non-zeros.

    Args:
        kernel: ``(C, H, W)`` or ``(H, W)``, not all zero.

    Raises:
        ValueError: if the kernel is all zero (it has no support).
    """
    k = as_float_tensor(kernel, "kernel")
    support = (k != 0).any(dim=0) if k.ndim == 3 else k != 0
    rows = torch.nonzero(support.any(dim=1)).flatten()
    cols = torch.nonzero(support.any(dim=0)).flatten()
    if rows.numel() == 0:
        raise ValueError("kernel must have a non-zero entry, got an all-zero kernel")
    top, left = int(rows[0]), int(cols[0])
    return top, left, int(rows[-1]) - top + 1, int(cols[-1]) - left + 1


def pruned_on_stroke(values: ArrayLike, kernels: ArrayLike, x: ArrayLike) -> int:
    """The switched-off unit to show: largest kernel, and over as much of the input as possible.

    Among the units with a negative value (the ones a ReLU switches off) whose kernels have the
    largest extent (:func:`kernel_extent`), the one whose kernel's bounding box holds the most of
    ``x`` (its summed absolute value: for a digit, the most ink).

    Args:
        values: a layer's pre-activations, any shape ``S``.
        kernels: their effective kernels, ``(*S, C, H, W)``.
        x: the input ``(C, H, W)``.

    Returns:
        The flat index (into ``values.flatten()``) of that unit.

    Raises:
        ValueError: if no unit is switched off.
    """
    v = as_float_tensor(values, "values").flatten()
    image = as_float_tensor(x, "x")
    k = as_float_tensor(kernels, "kernels").reshape(v.numel(), *image.shape)
    extent = kernel_extent(k)
    off = v < 0
    if not bool(off.any()):
        raise ValueError("values must hold a negative (switched-off) unit, got none")
    widest = int(extent[off].max())
    best, best_ink = -1, -1.0
    for unit in torch.nonzero(off & (extent == widest)).flatten().tolist():
        top, left, height, width = support_box(k[unit])
        ink = float(image[:, top : top + height, left : left + width].abs().sum())
        if ink > best_ink:
            best, best_ink = unit, ink
    return best
