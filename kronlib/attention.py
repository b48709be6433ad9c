"""A tiny softmax attention layer, to ask whether attention has a virtual matrix (chapter 7).

``Y = softmax(Q Kᵀ / √d) V`` with ``Q, K, V = X W_q, X W_k, X W_v`` for tokens ``X`` ``(n, d)``.
Holding the attention weights ``A = softmax(…)`` fixed, ``Y = A X W_v`` is linear in ``X``: the
Jacobian's *frozen part* ``A ⊗ W_vᵀ`` is weights times data-dependent factors, like a ReLU
network's — but the factors ``A`` are not 0/1 masks, they move with ``X``, and the rest of the
Jacobian (through the softmax) is not zero.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kronlib._validate import as_float_tensor, as_int

__all__ = ["SoftmaxAttention"]


class SoftmaxAttention(nn.Module):
    """One head of softmax self-attention, no bias: tokens ``(N, n, d)`` → ``(N, n, d)``.

    Args:
        dim: token dimension ``d``.
        seed: seed of the random weights (entries ``N(0, 1/d)``), in float64.
    """

    def __init__(self, dim: int, seed: int = 0) -> None:
        super().__init__()
        dim = as_int(dim, "dim", minimum=1)
        generator = torch.Generator().manual_seed(as_int(seed, "seed", minimum=0))
        for name in ("w_q", "w_k", "w_v"):
            weight = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
            setattr(self, name, nn.Parameter(weight / math.sqrt(dim)))
        self.dim = dim

    def weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """The attention matrix ``A`` ``(N, n, n)`` (rows sum to 1) for tokens ``(N, n, d)``."""
        q, k = tokens @ self.w_q, tokens @ self.w_k
        return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dim), dim=-1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(N, n, d)`` → ``(N, n, d)``."""
        return self.weights(tokens) @ (tokens @ self.w_v)

    def frozen_jacobian(self, tokens: torch.Tensor) -> torch.Tensor:
        """``∂Y/∂X`` with ``A`` held fixed, ``A[i, j] W_v[b, a]``, shape ``(n, d, n, d)``.

        Args:
            tokens: one input ``(n, d)`` (no batch axis).
        """
        point = as_float_tensor(tokens, "tokens").to(self.w_v.dtype)
        if point.ndim != 2 or point.shape[1] != self.dim:
            raise ValueError(f"tokens must be (n, {self.dim}), got {tuple(point.shape)}")
        with torch.no_grad():
            A = self.weights(point[None])[0]
            return torch.einsum("ij,ba->iajb", A, self.w_v)
