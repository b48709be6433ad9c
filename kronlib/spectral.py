"""Spectral views of convolution layers: the SVD of a layer, and the rank of composed kernels.

A conv weight ``(C_out, C_in, kh, kw)`` reshaped to the matrix ``W`` of shape
``(C_out, C_in·kh·kw)`` acts on each flattened input patch ``p`` as ``W p``; its SVD
``W = U diag(σ) Vᵀ`` splits that into projecting the patch onto *eigenfilters* (rows of ``Vᵀ``),
scaling, and rotating into the output channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kronlib._validate import ArrayLike, as_conv_weight, as_float_tensor
from kronlib.conv import kron_kernel
from kronlib.kron import rearrange

__all__ = [
    "LayerSVD",
    "count_relu_masks",
    "im2col_forward",
    "layer_svd",
    "numerical_rank",
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
        """Share of ``‖W‖_F² = Σ σ²`` in the first ``1, 2, …, r`` components: ``(r,)``."""
        squares = self.singular_values.square()
        return squares.cumsum(0) / squares.sum()

    def components_for(self, fraction: float) -> int:
        """Fewest leading components holding at least ``fraction`` of the energy."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        reached = self.energy() >= fraction - 1e-12
        return int(torch.nonzero(reached)[0]) + 1

    def low_rank(self, rank: int) -> torch.Tensor:
        """The layer's weight rebuilt from ``rank`` components: ``(C_out, C_in, kh, kw)``."""
        r = self.singular_values.shape[0]
        if not 1 <= rank <= r:
            raise ValueError(f"rank must be between 1 and {r}, got {rank}")
        W_k = (self.U[:, :rank] * self.singular_values[:rank]) @ self.Vh[:rank]
        return W_k.reshape(-1, *self.kernel_shape)

    def error(self, rank: int) -> float:
        """Relative Frobenius error of the rank-``rank`` weight: ``sqrt(Σ_{i>rank} σ²) / ‖W‖_F``."""
        W = self.matrix
        W_k = self.low_rank(rank).reshape(W.shape)
        return float(torch.linalg.matrix_norm(W - W_k) / torch.linalg.matrix_norm(W))


def layer_svd(weight: ArrayLike) -> LayerSVD:
    """SVD of a conv weight ``(C_out, C_in, kh, kw)`` reshaped to ``(C_out, C_in·kh·kw)``."""
    w = as_conv_weight(weight, "weight").detach()
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
    images = as_float_tensor(x, "x")
    if images.ndim != 4 or images.shape[1] != svd.kernel_shape[0]:
        raise ValueError(
            f"x must be (N, {svd.kernel_shape[0]}, H, W) for this layer, got {tuple(images.shape)}"
        )
    _, kh, kw = svd.kernel_shape
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
    masks = (p @ w.reshape(w.shape[0], -1).T) > 0
    return int(torch.unique(masks, dim=0).shape[0])


def rearranged_kernel_spectrum(
    w1: ArrayLike, w2: ArrayLike, out_channel: int = 0, in_channel: int = 0
) -> torch.Tensor:
    """Singular values of one composed kernel ``Σ_m W2[o, m] ⊗ W1[m, c]``, rearranged.

    By the rearrangement identity of chapter 1 the rearranged kernel is
    ``Σ_m vec(W2[o, m]) vec(W1[m, c])ᵀ``, a sum of ``C1`` outer products, so at most ``C1`` of
    these values are non-zero.

    Returns:
        ``(min(k2h·k2w, k1h·k1w),)``, descending.
    """
    a, b = as_conv_weight(w1, "w1").detach(), as_conv_weight(w2, "w2").detach()
    kernel = kron_kernel(a, b)[out_channel, in_channel]
    R = rearrange(kernel, tuple(a.shape[-2:]))
    return torch.linalg.svdvals(R)


def numerical_rank(singular_values: ArrayLike, rtol: float = 1e-10) -> int:
    """How many singular values exceed ``rtol`` times the largest (``0`` for an all-zero list).

    Args:
        singular_values: ``(r,)``, descending, as :func:`rearranged_kernel_spectrum` returns.
        rtol: the relative cut-off; 1e-10 suits float64 kernels.
    """
    values = as_float_tensor(singular_values, "singular_values")
    if values.ndim != 1:
        raise ValueError(f"singular_values must be 1-D, got shape {tuple(values.shape)}")
    if values.numel() == 0 or float(values.max()) == 0.0:
        return 0
    return int((values > rtol * values.max()).sum())
