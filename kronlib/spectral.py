"""Spectral views of convolution layers: the SVD of a layer, and the rank of composed kernels.

A conv weight ``(C_out, C_in, kh, kw)`` reshaped to the matrix ``W`` of shape
``(C_out, C_in·kh·kw)`` acts on each flattened input patch ``p`` as ``W p``; its SVD
``W = U diag(σ) Vᵀ`` splits that into projecting the patch onto *eigenfilters* (rows of ``Vᵀ``),
scaling, and rotating into the output channels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kronlib._validate import (
    ArrayLike,
    as_conv_weight,
    as_float_tensor,
    as_int_in,
    as_real,
    check_finite,
    check_not_empty,
)
from kronlib.conv import kron_kernel
from kronlib.data import Digits
from kronlib.kron import rearrange

__all__ = [
    "LayerSVD",
    "count_relu_masks",
    "im2col_forward",
    "layer_svd",
    "low_rank_accuracy",
    "numerical_rank",
    "rank_enough",
    "rearranged_kernel_spectrum",
]


@dataclass(frozen=True)
class LayerSVD:
    """Thin SVD of a conv layer's matrix ``W`` ``(C_out, C_in·kh·kw) = U diag(σ) Vh``.

    Attributes:
        U: ``(C_out, r)``, output-channel directions.
        singular_values: ``(r,)``, the ``σ_i``, descending (the name
            :class:`kronlib.kron.KronFactorization` uses too).
        Vh: ``(r, C_in·kh·kw)``, eigenfilters as rows.
        kernel_shape: ``(C_in, kh, kw)``, to reshape eigenfilters.
    """

    U: torch.Tensor
    singular_values: torch.Tensor
    Vh: torch.Tensor
    kernel_shape: tuple[int, int, int]

    @property
    def matrix(self) -> torch.Tensor:
        """``U diag(σ) Vh``, which equals the layer's matrix ``W``."""
        return (self.U * self.singular_values) @ self.Vh

    def eigenfilters(self) -> torch.Tensor:
        """Rows of ``Vh`` as filters: ``(r, C_in, kh, kw)``."""
        return self.Vh.reshape(-1, *self.kernel_shape)

    def energy(self) -> torch.Tensor:
        """Share of ``‖W‖_F² = Σ σ²`` in the first ``1, 2, …, r`` components: ``(r,)``.

        Raises:
            ValueError: for an all-zero weight, whose energy (zero) has no shares.
        """
        squares = self.singular_values.square()
        total = squares.sum()
        if float(total) == 0.0:
            raise ValueError(
                "energy shares are undefined for an all-zero weight: ‖W‖_F² = Σ σ² = 0, so no "
                "component holds a share of it"
            )
        return squares.cumsum(0) / total

    def components_for(self, fraction: float) -> int:
        """Fewest leading components holding at least ``fraction`` of the energy.

        Args:
            fraction: a real number in ``(0, 1]`` (Python, numpy or a 0-d tensor; not a bool).

        Raises:
            ValueError: for a fraction outside ``(0, 1]``, NaN, or an all-zero weight.
            TypeError: if ``fraction`` is not a real number.
        """
        share = as_real(fraction, "fraction")
        if not 0 < share <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        reached = self.energy() >= share - 1e-12
        return int(torch.nonzero(reached)[0]) + 1

    def _rank(self, rank: object) -> int:
        return as_int_in(rank, "rank", 1, self.singular_values.shape[0])

    def low_rank(self, rank: int) -> torch.Tensor:
        """The layer's weight rebuilt from ``rank`` components: ``(C_out, C_in, kh, kw)``.

        ``rank`` is an int (Python, numpy or 0-d tensor) in ``1..r``.
        """
        keep = self._rank(rank)
        W_k = (self.U[:, :keep] * self.singular_values[:keep]) @ self.Vh[:keep]
        return W_k.reshape(-1, *self.kernel_shape)

    def error(self, rank: int) -> float:
        """Relative Frobenius error of the rank-``rank`` weight: ``sqrt(Σ_{i>rank} σ²) / ‖W‖_F``.

        For an all-zero weight the ratio would be ``0/0``; it is ``0.0`` there, since the
        rank-``rank`` weight (zero) is exact.
        """
        W = self.matrix
        W_k = self.low_rank(rank).reshape(W.shape)
        norm = torch.linalg.matrix_norm(W)
        if float(norm) == 0.0:
            return 0.0
        return float(torch.linalg.matrix_norm(W - W_k) / norm)


def layer_svd(weight: ArrayLike) -> LayerSVD:
    """SVD of a conv weight ``(C_out, C_in, kh, kw)`` reshaped to ``(C_out, C_in·kh·kw)``.

    The weight must be finite and non-empty (``ValueError`` naming ``weight`` otherwise).
    """
    w = as_conv_weight(weight, "weight").detach()
    check_not_empty(w, "weight")
    check_finite(w, "weight")
    U, S, Vh = torch.linalg.svd(w.reshape(w.shape[0], -1), full_matrices=False)
    return LayerSVD(U=U, singular_values=S, Vh=Vh, kernel_shape=tuple(w.shape[1:]))


def im2col_forward(x: ArrayLike, svd: LayerSVD) -> torch.Tensor:
    """A bias-free, stride-1 convolution computed in SVD coordinates, patch by patch.

    Every patch ``p`` (a column of ``unfold(x)``) goes through ``z = Vh p`` (coordinates in the
    eigenfilter basis), ``s = σ ⊙ z`` (scaling), ``y = U s`` (output channels).

    Args:
        x: ``(N, C_in, H, W)``.
        svd: from :func:`layer_svd`.

    Returns:
        ``(N, C_out, H − kh + 1, W − kw + 1)``, equal to ``conv2d(x, weight)``.
    """
    if not isinstance(svd, LayerSVD):
        raise TypeError(f"svd must be a LayerSVD from layer_svd, got {type(svd).__name__}")
    images = as_float_tensor(x, "x")
    if images.ndim != 4 or images.shape[1] != svd.kernel_shape[0]:
        raise ValueError(
            f"x must be (N, {svd.kernel_shape[0]}, H, W) for this layer, got {tuple(images.shape)}"
        )
    _, kh, kw = svd.kernel_shape
    if images.shape[2] < kh or images.shape[3] < kw:
        raise ValueError(
            f"x must be at least {kh}×{kw} pixels for this layer's {kh}×{kw} kernel, got "
            f"{images.shape[2]}×{images.shape[3]}"
        )
    patches = F.unfold(images, (kh, kw))  # (N, C_in·kh·kw, L)
    z = svd.Vh @ patches
    s = svd.singular_values[:, None] * z
    y = svd.U @ s
    out_h, out_w = images.shape[2] - kh + 1, images.shape[3] - kw + 1
    return y.reshape(images.shape[0], -1, out_h, out_w)


def count_relu_masks(weight: ArrayLike, patches: ArrayLike) -> int:
    """How many distinct on/off patterns ``W p > 0`` the given patches produce.

    Args:
        weight: ``(C_out, C_in, kh, kw)`` (bias-free layer).
        patches: ``(P, C_in·kh·kw)``, flattened input patches.

    Returns:
        The number of distinct masks, at most ``min(P, 2**C_out)``: each is one linear region of
        the layer that these patches visit.
    """
    w = as_conv_weight(weight, "weight").detach()
    p = as_float_tensor(patches, "patches").detach()
    if p.ndim != 2 or p.shape[1] != w[0].numel():
        raise ValueError(f"patches must be (P, {w[0].numel()}), got {tuple(p.shape)}")
    check_finite(w, "weight")  # NaN > 0 is False: a NaN would pass for "off" unseen
    check_finite(p, "patches")
    masks = (p @ w.reshape(w.shape[0], -1).T) > 0
    return int(torch.unique(masks, dim=0).shape[0])


def rearranged_kernel_spectrum(
    w1: ArrayLike, w2: ArrayLike, out_channel: int = 0, in_channel: int = 0
) -> torch.Tensor:
    """Singular values of one composed kernel ``Σ_m W2[o, m] ⊗ W1[m, c]``, rearranged.

    By the rearrangement identity of chapter 1 the rearranged kernel is
    ``Σ_m vec(W2[o, m]) vec(W1[m, c])ᵀ``, a sum of ``C1`` outer products, so at most ``C1`` of
    these values are non-zero.

    Args:
        w1: ``(C1, C0, k1h, k1w)``, finite.
        w2: ``(C2, C1, k2h, k2w)``, finite.
        out_channel: ``o``, an int in ``0..C2-1`` (Python, numpy or 0-d tensor).
        in_channel: ``c``, an int in ``0..C0-1``.

    Returns:
        ``(min(k2h·k2w, k1h·k1w),)``, descending.
    """
    a, b = as_conv_weight(w1, "w1").detach(), as_conv_weight(w2, "w2").detach()
    check_finite(a, "w1")
    check_finite(b, "w2")
    o = as_int_in(out_channel, "out_channel", 0, b.shape[0] - 1, f"w2 has {b.shape[0]} outputs")
    c = as_int_in(in_channel, "in_channel", 0, a.shape[1] - 1, f"w1 has {a.shape[1]} inputs")
    kernel = kron_kernel(a, b)[o, c]
    R = rearrange(kernel, tuple(a.shape[-2:]))
    return torch.linalg.svdvals(R)


def numerical_rank(singular_values: ArrayLike, rtol: float = 1e-10) -> int:
    """How many singular values exceed ``rtol`` times the largest (``0`` for an all-zero list).

    Args:
        singular_values: ``(r,)``, descending, as :func:`rearranged_kernel_spectrum` returns;
            finite and non-negative (NaN used to count as "not above the cut-off").
        rtol: the relative cut-off, a finite real number ``>= 0`` (not a bool); 1e-10 suits
            float64 kernels.
    """
    cutoff = as_real(rtol, "rtol")
    if cutoff < 0:
        raise ValueError(f"rtol must be a non-negative finite number, got {cutoff}")
    values = as_float_tensor(singular_values, "singular_values")
    if values.ndim != 1:
        raise ValueError(f"singular_values must be 1-D, got shape {tuple(values.shape)}")
    check_finite(values, "singular_values")
    if values.numel() and float(values.min()) < 0:
        raise ValueError(
            f"singular_values must be non-negative, got {float(values.min())} among them"
        )
    if values.numel() == 0 or float(values.max()) == 0.0:
        return 0
    return int((values > cutoff * values.max()).sum())


def low_rank_accuracy(
    model: nn.Module, layer: str, digits: Digits, ranks: Sequence[int]
) -> dict[int, float]:
    """Test accuracy with one conv layer's weight replaced by its best rank-``k`` approximation.

    The model is copied; for each ``k`` the copy's ``layer`` weight becomes
    :meth:`LayerSVD.low_rank` ``(k)`` (everything else, biases included, is kept).

    Args:
        model: a classifier with a convolution named ``layer``.
        layer: the name of that convolution among ``model.named_modules()``.
        digits: the images and labels to classify.
        ranks: the ranks ``k`` to try, each in ``1..min(C_out, C_in·kh·kw)``.

    Returns:
        ``{k: accuracy}``.
    """
    from kronlib.train import accuracy

    modules = dict(model.named_modules())
    if layer not in modules or not isinstance(modules[layer], nn.Conv2d):
        raise ValueError(f"layer must name a Conv2d of the model, got {layer!r}")
    copy = deepcopy(model).eval()
    conv = dict(copy.named_modules())[layer]
    svd = layer_svd(conv.weight)
    out = {}
    with torch.no_grad():
        for k in ranks:
            conv.weight.copy_(svd.low_rank(k).to(conv.weight.dtype))
            out[int(k)] = accuracy(copy, digits)
    return out


def rank_enough(accuracy_by_rank: Mapping[int, float], floor: float) -> int:
    """The smallest rank from which on every accuracy of :func:`low_rank_accuracy` is ≥ ``floor``.

    Args:
        accuracy_by_rank: ``{k: accuracy}`` for consecutive or scattered ranks ``k``.
        floor: the accuracy to stay at or above (a real number).

    Returns:
        The smallest ``k`` such that every rank ``j ≥ k`` given has accuracy ``≥ floor``.

    Raises:
        ValueError: if the highest rank given is itself below ``floor`` (no rank is enough), or
            no ranks are given.

    Example:
        >>> rank_enough({1: 0.5, 2: 0.95, 3: 0.9, 4: 0.96}, 0.9)
        2
    """
    floor = as_real(floor, "floor")
    if not accuracy_by_rank:
        raise ValueError("accuracy_by_rank must hold at least one rank, got none")
    enough = None
    for k in sorted(accuracy_by_rank, reverse=True):
        if as_real(accuracy_by_rank[k], f"accuracy_by_rank[{k!r}]") < floor:
            break
        enough = k
    if enough is None:
        top = max(accuracy_by_rank)
        raise ValueError(
            f"no rank is enough: the highest rank given, {top}, has accuracy "
            f"{accuracy_by_rank[top]} < floor {floor}"
        )
    return int(enough)
