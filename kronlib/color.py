"""Measures of where colour lives in a factor ``(..., H, W, 3)``."""

from __future__ import annotations

import torch

from kronlib._validate import ArrayLike, as_float_tensor, as_pair, check_ndim

__all__ = ["block_means", "chroma_fraction", "uniform_fraction"]


def _colour_image(x: ArrayLike, name: str) -> torch.Tensor:
    image = as_float_tensor(x, name)
    check_ndim(image, name, (3,), "(H, W, 3)")
    if image.shape[-1] != 3:
        raise ValueError(f"{name} must have 3 channels last, got shape {tuple(image.shape)}")
    return image


def chroma_fraction(x: ArrayLike) -> float:
    """Share of ``x``'s energy off the gray axis: ``‖x − gray(x)‖² / ‖x‖²`` for ``x`` ``(H, W, 3)``.

    ``gray(x)`` repeats each pixel's channel mean in all three channels. 0 for a gray image, 1 for
    an image whose channels sum to zero at every pixel (a pure colour contrast, such as orange
    against blue).
    """
    image = _colour_image(x, "x")
    off_gray = image - image.mean(dim=-1, keepdim=True)
    return float(off_gray.square().sum() / image.square().sum())


def uniform_fraction(x: ArrayLike) -> float:
    """Share of ``x``'s energy in its mean colour: ``H·W·‖mean(x)‖² / ‖x‖²``, ``x`` ``(H, W, 3)``.

    1 for a solid colour (a single tint repeated everywhere), near 0 for a pattern that averages
    out.
    """
    image = _colour_image(x, "x")
    mean = image.mean(dim=(0, 1))
    return float(image.shape[0] * image.shape[1] * mean.square().sum() / image.square().sum())


def block_means(A: ArrayLike, grid_shape: tuple[int, int]) -> torch.Tensor:
    """Average of each block of a ``grid_shape`` grid: ``(H, W[, 3])`` -> ``(m1, n1[, 3])``."""
    image = as_float_tensor(A, "A")
    check_ndim(image, "A", (2, 3), "(H, W) or (H, W, 3)")
    m1, n1 = as_pair(grid_shape, "grid_shape", single=False)
    H, W = image.shape[:2]
    if H % m1 or W % n1:
        raise ValueError(f"grid_shape {(m1, n1)} must divide the image shape {(H, W)}")
    blocks = image.reshape(m1, H // m1, n1, W // n1, *image.shape[2:])
    return blocks.mean(dim=(1, 3))
