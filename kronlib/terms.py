"""Saliency rows split by channel, over many inputs at once (chapter 7).

:func:`kronlib.virtual.kronecker_terms` splits the rows of one input's virtual matrix by the
channel of a cut they pass through. Chapter 7 asks questions about thousands of inputs: how many
channels carry a row, how concentrated the row is in a few of them, what rank it has in the
representation where "rank ≤ active channels" holds. This module answers them for chain models
(``nn.Sequential``), batched with autograd, and is checked against ``kronecker_terms``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import nn

from kronlib._validate import as_float_tensor, as_index, as_int, is_int
from kronlib.virtual import chain

__all__ = [
    "WindowedRows",
    "effective_term_count",
    "fold_windowed",
    "projection_shares",
    "term_norms",
    "windowed_rows",
]


def check_eval(model: nn.Module) -> None:
    """Refuse BatchNorm and Dropout layers in training mode (they mix or randomise inputs)."""
    moody = (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd)
    training = [
        name or type(model).__name__
        for name, m in model.named_modules()
        if m.training and isinstance(m, moody)
    ]
    if training:
        raise ValueError(
            f"model must be in eval mode (call model.eval()): {training[0]!r} is in training "
            "mode, where BatchNorm mixes the inputs of a batch and Dropout is random"
        )


def _split(model: nn.Module, cut: str) -> tuple[nn.Sequential, nn.Sequential]:
    """A chain cut after ``cut``: (head, tail) with ``tail(head(x)) == model(x)``."""
    if not isinstance(cut, str):
        raise TypeError(f"cut must be a layer name (str), got {type(cut).__name__}")
    layers = chain(model)
    names = [name for name, _ in layers]
    if cut not in names:
        raise ValueError(f"cut must be one of {names}, got {cut!r}")
    at = names.index(cut) + 1
    return (
        nn.Sequential(*[layer for _, layer in layers[:at]]),
        nn.Sequential(*[layer for _, layer in layers[at:]]),
    )


def _outputs_per_input(outputs: object, n_inputs: int, n_outputs: int) -> torch.Tensor:
    """One output index per input, shape ``(N,)``; a single index is used for every input."""
    if isinstance(outputs, (bool, float, str)):
        raise TypeError(f"outputs must be integer indices, got {outputs!r}")
    if is_int(outputs) or (isinstance(outputs, torch.Tensor | np.ndarray) and outputs.ndim == 0):
        index = as_index(outputs, "outputs", n_outputs)
        return index.reshape(1).expand(n_inputs)
    index = as_index(outputs, "outputs", n_outputs).reshape(-1)
    if len(index) != n_inputs:
        raise ValueError(
            f"outputs must give one index per input ({n_inputs}) or a single index, "
            f"got {len(index)}"
        )
    return index


def term_norms(
    model: nn.Module,
    images: ArrayLike,
    *,
    cut: str,
    outputs: int | Sequence[int] | ArrayLike,
    batch_size: int = 250,
) -> torch.Tensor:
    """Norms of the Kronecker terms of one row per input, for a batch of inputs.

    For input ``n`` and its selected output ``outputs[n]``, the row ``J(x_n)[outputs[n]]``
    splits over the channels ``m`` of ``cut`` as ``Σ_m T_m`` (:func:`kronecker_terms`);
    this returns ``‖T_m‖_F``. Computed with autograd in batches (the model must be a chain
    in eval mode, so inputs do not interact).

    Args:
        model: a chain (see :func:`kronlib.virtual.chain`) in eval mode.
        images: ``(N, *in_shape)``.
        cut: the name of a layer of the chain.
        outputs: one flat output index per input ``(N,)``, or one index for all.
        batch_size: inputs per autograd pass.

    Returns:
        ``(N, C_cut)`` in the model's dtype.
    """
    head, tail = _split(model, cut)
    check_eval(model)
    batch = as_float_tensor(images, "images")
    if batch.ndim < 2:
        raise ValueError(f"images must be (N, *in_shape), got shape {tuple(batch.shape)}")
    batch_size = as_int(batch_size, "batch_size", minimum=1)
    dtype = next(model.parameters()).dtype
    batch = batch.to(dtype)
    with torch.no_grad():
        n_outputs = model(batch[:1]).reshape(1, -1).shape[1]
    picks = _outputs_per_input(outputs, len(batch), n_outputs)
    norms = []
    for start in range(0, len(batch), batch_size):
        x = batch[start : start + batch_size].clone().requires_grad_(True)
        h = head(x)
        if h.ndim < 2:
            raise ValueError(f"cut {cut!r} has no channel axis (shape {tuple(h.shape)})")
        y = tail(h).reshape(len(x), -1)
        selected = y.gather(1, picks[start : start + len(x), None]).sum()
        (g,) = torch.autograd.grad(selected, h, retain_graph=True)
        per_channel = []
        for m in range(h.shape[1]):
            (term,) = torch.autograd.grad((h[:, m] * g[:, m]).sum(), x, retain_graph=True)
            per_channel.append(term.flatten(1).norm(dim=1))
        norms.append(torch.stack(per_channel, dim=1).detach())
    return torch.cat(norms)


def effective_term_count(norms: ArrayLike) -> torch.Tensor:
    """How many terms a row is spread over: ``(Σ_m ‖T_m‖)² / Σ_m ‖T_m‖²``.

    1 when one term carries the row, ``k`` when ``k`` terms carry equal norms; 0 for a zero row.

    Args:
        norms: ``(..., C)`` term norms (non-negative).

    Returns:
        ``(...)``.
    """
    values = as_float_tensor(norms, "norms")
    if values.ndim < 1 or (values < 0).any() or not torch.isfinite(values).all():
        raise ValueError("norms must be finite, non-negative, with the channels last")
    squares = (values**2).sum(-1)
    total = values.sum(-1) ** 2
    return torch.where(squares > 0, total / squares.clamp_min(torch.finfo(values.dtype).tiny), 0)


@dataclass(frozen=True)
class WindowedRows:
    """Rows of ``J`` in the windowed representation of the first convolution.

    The first layer ``K`` (``C`` output channels, kernel ``(C_in, kh, kw)``) sees the input
    through windows, one per output position ``p``. With ``G[m, p] = ∂y/∂(K x)[m, p]``, the row
    is the sum over windows of ``M[p] = Σ_m G[m, p] K[m]`` placed at window ``p``, so
    ``M = Gᵀ K`` has rank at most the number of channels with ``G[m] ≠ 0``.

    Attributes:
        matrix: ``(N, P, C_in·kh·kw)``: ``M`` for each input's selected output.
        active: ``(N, C)`` bool: channels with a nonzero ``G[m]`` (they carry the row).
        conv: the first convolution (for :func:`fold_windowed`).
        in_shape: the input shape ``(C_in, H, W)``.
    """

    matrix: torch.Tensor
    active: torch.Tensor
    conv: nn.Conv2d
    in_shape: tuple[int, ...]

    def ranks(self, rtol: float = 1e-10) -> torch.Tensor:
        """Numerical rank of each ``M``: singular values above ``rtol·σ_max``, ``(N,)``."""
        values = torch.linalg.svdvals(self.matrix)
        floor = rtol * values[:, :1]
        return ((values > floor) & (values > 0)).sum(1)


def windowed_rows(
    model: nn.Module,
    images: ArrayLike,
    *,
    outputs: int | Sequence[int] | ArrayLike,
    batch_size: int = 250,
) -> WindowedRows:
    """Rows of the exact virtual matrices at ``images``, as windowed matrices ``M = Gᵀ K``.

    The bound "rank ≤ active channels" of chapter 4 holds here, in the first convolution's
    windowed representation, and not for the row on the pixel grid (where windows overlap).
    :func:`fold_windowed` gives the rows back (equal to :func:`kronlib.virtual.virtual_matrix`'s).

    Args:
        model: a chain in eval mode whose first layer is a ``Conv2d`` (groups 1).
        images: ``(N, C_in, H, W)``.
        outputs: one flat output index per input ``(N,)``, or one index for all.
        batch_size: inputs per autograd pass.

    Returns:
        :class:`WindowedRows`.
    """
    name, conv = chain(model)[0]
    if type(conv) is not nn.Conv2d or conv.groups != 1:
        raise ValueError(
            f"model's first layer must be a Conv2d with groups=1, got {name}: {conv!r}"
        )
    head, tail = _split(model, name)
    check_eval(model)
    batch = as_float_tensor(images, "images")
    if batch.ndim != 4:
        raise ValueError(f"images must be (N, C_in, H, W), got shape {tuple(batch.shape)}")
    weight = conv.weight.detach()
    batch = batch.to(weight.dtype)
    batch_size = as_int(batch_size, "batch_size", minimum=1)
    with torch.no_grad():
        n_outputs = model(batch[:1]).reshape(1, -1).shape[1]
    picks = _outputs_per_input(outputs, len(batch), n_outputs)
    grads = []
    for start in range(0, len(batch), batch_size):
        with torch.no_grad():
            h = head(batch[start : start + batch_size])
        h.requires_grad_(True)
        y = tail(h).reshape(len(h), -1)
        selected = y.gather(1, picks[start : start + len(h), None]).sum()
        grads.append(torch.autograd.grad(selected, h)[0].detach())
    G = torch.cat(grads)  # (N, C, Ho, Wo)
    n, channels = G.shape[:2]
    by_position = G.reshape(n, channels, -1).transpose(1, 2)  # (N, P, C)
    matrix = by_position @ weight.reshape(channels, -1)  # (N, P, C_in·kh·kw)
    active = G.reshape(n, channels, -1).ne(0).any(dim=2)
    return WindowedRows(matrix, active, conv, tuple(batch.shape[1:]))


def fold_windowed(rows: WindowedRows) -> torch.Tensor:
    """The rows on the input grid: each window's ``M[p]`` added at its place, ``(n, *in_shape)``."""
    conv = rows.conv
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        raise ValueError("fold_windowed needs a numeric zero padding of the first convolution")
    folded = F.fold(
        rows.matrix.transpose(1, 2),
        output_size=rows.in_shape[1:],
        kernel_size=conv.kernel_size,
        dilation=conv.dilation,
        padding=conv.padding,
        stride=conv.stride,
    )
    return folded.reshape(len(rows.matrix), *rows.in_shape)


def projection_shares(parts: Sequence[ArrayLike] | ArrayLike) -> torch.Tensor:
    """``⟨J_k, J⟩ / ‖J‖²`` for each part ``J_k`` of ``J = Σ_k J_k``: what each part carries.

    The shares sum to 1; a part orthogonal to the rest has the share ``‖J_k‖² / ‖J‖²``, and a
    share is negative where a part points against the whole (parts that partly cancel).

    Args:
        parts: ``(K, ...)`` the parts, stacked or as a sequence of equal shapes (e.g. the
            values of :func:`kronlib.virtual.path_terms` in order of their keys).

    Returns:
        ``(K,)`` the shares, in the parts' dtype.

    Raises:
        ValueError: for no parts, parts of different shapes, or parts that sum to zero (no
            direction to project on).

    Example:
        >>> projection_shares(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        tensor([0.2000, 0.8000])
    """
    if isinstance(parts, Sequence) and not isinstance(parts, str):
        if len(parts) == 0:
            raise ValueError("parts must hold at least one part, got none")
        tensors = [as_float_tensor(p, f"parts[{i}]") for i, p in enumerate(parts)]
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise ValueError(f"parts must all have one shape, got {sorted(shapes)}")
        stacked = torch.stack(tensors)
    else:
        stacked = as_float_tensor(parts, "parts")
        if stacked.ndim == 0 or stacked.shape[0] == 0:
            raise ValueError(f"parts must be (K, ...) with K ≥ 1, got {tuple(stacked.shape)}")
    flat = stacked.reshape(stacked.shape[0], -1)
    whole = flat.sum(0)
    energy = whole.dot(whole)
    if not energy > 0:
        raise ValueError("the parts sum to zero (or not to a finite J): no share to give")
    return flat @ whole / energy
