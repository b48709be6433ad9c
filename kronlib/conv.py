"""Convolutions as matrices, and two convolutions composed into one.

Conventions follow :func:`torch.nn.functional.conv2d` (cross-correlation, no bias): a weight
``w`` of shape ``(C_out, C_in, kh, kw)`` maps an input ``(C_in, H, W)`` to
``(C_out, H', W')``. Strides, paddings and dilations are ints or ``(rows, cols)`` pairs.

Composing ``conv(w1, stride1)`` followed by ``conv(w2, stride2)`` gives one convolution whose
kernel is ``conv_transpose2d(w2, w1, stride=stride1)`` at stride ``stride1 * stride2``; when
``stride1`` equals ``w1``'s kernel size the copies of ``w1`` do not overlap and that kernel is the
Kronecker product ``Σ_m w2[:, m] ⊗ w1[m, :]`` (:func:`kron_kernel`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from kronlib._validate import (
    ArrayLike,
    as_conv_weight,
    as_float_tensor,
    as_int,
    as_layer_sequence,
    as_pair,
    as_shape,
    check_not_empty,
)

__all__ = [
    "compose",
    "conv_matrix",
    "dilate_kernel",
    "exact_region",
    "flatten_filters",
    "full_conv",
    "is_doubly_block_toeplitz",
    "kron_kernel",
    "unflatten_filters",
    "windows",
]

Pair = tuple[int, int]


def _pair(value: Any, name: str, minimum: int = 1) -> Pair:
    """Return an int or an ``(rows, cols)`` pair as a pair of ints ``>= minimum``, or raise.

    Ints may be Python, numpy or 0-d integer torch ints; bools, floats and strings are refused.
    """
    return as_pair(value, name, minimum=minimum)


def _weight(value: Any, name: str) -> torch.Tensor:
    """A conv weight ``(C_out, C_in, kh, kw)`` with no zero-length axis, or raise."""
    w = as_conv_weight(value, name)
    check_not_empty(w, name)
    return w


def _check_chain(w1: torch.Tensor, w2: torch.Tensor) -> None:
    if w2.shape[1] != w1.shape[0]:
        raise ValueError(
            f"w2 must take as many input channels as w1 gives out: w1 {tuple(w1.shape)} gives "
            f"{w1.shape[0]}, w2 {tuple(w2.shape)} takes {w2.shape[1]}"
        )
    if w1.device != w2.device:
        raise ValueError(f"w1 and w2 must be on one device, got {w1.device} and {w2.device}")


def _output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_matrix(
    weight: ArrayLike,
    input_shape: Sequence[int],
    stride: int | Pair = 1,
    padding: int | Pair = 0,
    dilation: int | Pair = 1,
) -> torch.Tensor:
    """The dense matrix ``M`` with ``conv2d(x).flatten() == M @ x.flatten()`` for one image.

    Built entry by entry from the index rule (not by calling ``conv2d``): row
    ``(o, y, x)`` of ``M`` holds ``weight[o, c, a, b]`` in column
    ``(c, y·sh − ph + a·dh, x·sw − pw + b·dw)`` whenever that pixel lies inside the image
    (zero padding contributes nothing).

    Args:
        weight: ``(C_out, C_in, kh, kw)``.
        input_shape: ``(C_in, H, W)``, positive ints (a tuple, list, ``torch.Size``, 1-D array or
            tensor).
        stride: as in :func:`torch.nn.functional.conv2d`, an int or a pair.
        padding: zero padding, an int or a pair.
        dilation: spacing between kernel taps, an int or a pair.

    Returns:
        ``(C_out·H'·W', C_in·H·W)``, rows and columns flattened row-major (channel first), in
        the weight's dtype and on its device.

    Example:
        >>> w = torch.arange(1.0, 9.0).reshape(2, 1, 2, 2)
        >>> conv_matrix(w, (1, 3, 3)).shape
        torch.Size([8, 9])
    """
    w = _weight(weight, "weight")
    if isinstance(input_shape, torch.Tensor) and input_shape.ndim == 1:
        input_shape = list(input_shape)
    shape = as_shape(input_shape, "input_shape")
    if len(shape) != 3:
        raise TypeError(f"input_shape must be (C_in, H, W), got {input_shape!r}")
    channels, height, width = shape
    c_out, c_in, kh, kw = w.shape
    if channels != c_in:
        raise ValueError(
            f"input_shape has {channels} channels but weight {tuple(w.shape)} expects {c_in}"
        )
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding", minimum=0)
    dh, dw = _pair(dilation, "dilation")
    out_h = _output_size(height, kh, sh, ph, dh)
    out_w = _output_size(width, kw, sw, pw, dw)
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"input_shape {(channels, height, width)} is smaller than the kernel: a "
            f"{kh}×{kw} kernel with dilation {(dh, dw)} and padding {(ph, pw)} needs at least "
            f"{dh * (kh - 1) + 1 - 2 * ph}×{dw * (kw - 1) + 1 - 2 * pw} pixels"
        )
    device = w.device
    o, c, y, x, a, b = torch.meshgrid(
        *(torch.arange(n, device=device) for n in (c_out, c_in, out_h, out_w, kh, kw)),
        indexing="ij",
    )
    rows_in = y * sh - ph + a * dh
    cols_in = x * sw - pw + b * dw
    inside = (rows_in >= 0) & (rows_in < height) & (cols_in >= 0) & (cols_in < width)
    row = ((o * out_h + y) * out_w + x)[inside]
    col = ((c * height + rows_in) * width + cols_in)[inside]
    values = w[o[inside], c[inside], a[inside], b[inside]]
    M = torch.zeros(c_out * out_h * out_w, c_in * height * width, dtype=w.dtype, device=device)
    M.index_put_((row, col), values, accumulate=True)
    return M


def is_doubly_block_toeplitz(
    M: ArrayLike, input_size: tuple[int, int], output_size: tuple[int, int]
) -> bool:
    """Whether a one-channel convolution matrix has the doubly block Toeplitz structure.

    ``M`` of shape ``(H'·W', H·W)`` is cut into ``H' × H`` blocks of shape ``(W', W)`` (block
    ``(y, r)`` links output row ``y`` to input row ``r``). It is doubly block Toeplitz when each
    block depends only on ``r − y`` and each block is itself Toeplitz (constant along its
    diagonals).

    Args:
        M: ``(H'·W', H·W)``, for example from :func:`conv_matrix` with one input and one output
            channel.
        input_size: ``(H, W)`` of the input, or one int for a square one (the name
            :func:`exact_region` uses too).
        output_size: ``(H', W')`` of the output, or one int.
    """
    matrix = as_float_tensor(M, "M")
    h, w = _pair(input_size, "input_size")
    out_h, out_w = _pair(output_size, "output_size")
    if tuple(matrix.shape) != (out_h * out_w, h * w):
        raise ValueError(
            f"M must have shape {(out_h * out_w, h * w)} for input_size {(h, w)} and "
            f"output_size {(out_h, out_w)}, got {tuple(matrix.shape)}"
        )
    blocks = matrix.reshape(out_h, out_w, h, w).permute(0, 2, 1, 3)  # (y, r, i, j)
    same_along_block_diagonals = all(
        torch.equal(blocks[y, r], blocks[y + 1, r + 1])
        for y in range(out_h - 1)
        for r in range(h - 1)
    )
    toeplitz_blocks = torch.equal(blocks[:, :, :-1, :-1], blocks[:, :, 1:, 1:])
    return same_along_block_diagonals and toeplitz_blocks


def dilate_kernel(weight: ArrayLike, dilation: int | Pair) -> torch.Tensor:
    """Spell a dilated kernel out densely: ``dilation - 1`` zeros between neighbouring taps.

    ``(C_out, C_in, kh, kw)`` -> ``(C_out, C_in, d·(kh−1)+1, d·(kw−1)+1)``; a convolution with
    the result at dilation 1 equals the original at ``dilation``.
    """
    w = _weight(weight, "weight")
    dh, dw = _pair(dilation, "dilation")
    c_out, c_in, kh, kw = w.shape
    dense = w.new_zeros(c_out, c_in, dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    dense[:, :, ::dh, ::dw] = w
    return dense


def compose(
    w1: ArrayLike,
    w2: ArrayLike,
    stride1: int | Pair = 1,
    stride2: int | Pair = 1,
    padding1: int | Pair = 0,
    padding2: int | Pair = 0,
    dilation1: int | Pair = 1,
    dilation2: int | Pair = 1,
) -> tuple[torch.Tensor, Pair, Pair]:
    """The single convolution equal to ``conv(w1, …)`` followed by ``conv(w2, …)``.

    The kernel is ``conv_transpose2d(w2, w1, stride=stride1)`` (after spelling out dilations):
    copies of ``w1`` placed ``stride1`` apart and weighted by ``w2``, summed over the shared
    channels. Stride and padding are ``stride1·stride2`` and ``padding1 + padding2·stride1``.

    Exactness: without ``padding2`` the composition is exact everywhere. With ``padding2`` the
    second layer pads the intermediate map with zeros, whereas the composed convolution sees the
    first layer's response to the (zero-padded) input there, which is not zero where that
    response's window overlaps the image. Outputs whose window lies inside the unpadded
    intermediate map are exact; :func:`exact_region` says which.

    Args:
        w1: ``(C1, C0, k1h, k1w)``, the first layer.
        w2: ``(C2, C1, k2h, k2w)``, the second layer.
        stride1: stride of the first layer (int or pair), as in ``conv2d``.
        stride2: stride of the second layer.
        padding1: zero padding of the first layer's input.
        padding2: zero padding of the intermediate map (see Exactness).
        dilation1: dilation of ``w1``.
        dilation2: dilation of ``w2``.

    Returns:
        ``(w, stride, padding)`` with ``w`` of shape
        ``(C2, C0, s1·(K2h−1)+K1h, s1·(K2w−1)+K1w)``, ``K`` the dilated kernel sizes.

    Example:
        >>> w1, w2 = torch.randn(4, 3, 3, 3), torch.randn(2, 4, 3, 3)
        >>> w, stride, padding = compose(w1, w2, stride1=2)
        >>> tuple(w.shape), stride, padding
        ((2, 3, 7, 7), (2, 2), (0, 0))
    """
    a, b = _weight(w1, "w1"), _weight(w2, "w2")
    _check_chain(a, b)
    s1, s2 = _pair(stride1, "stride1"), _pair(stride2, "stride2")
    p1 = _pair(padding1, "padding1", minimum=0)
    p2 = _pair(padding2, "padding2", minimum=0)
    a = dilate_kernel(a, dilation1)
    b = dilate_kernel(b, dilation2)
    dtype = torch.promote_types(a.dtype, b.dtype)
    kernel = F.conv_transpose2d(b.to(dtype), a.to(dtype), stride=s1)
    stride = (s1[0] * s2[0], s1[1] * s2[1])
    padding = (p1[0] + p2[0] * s1[0], p1[1] + p2[1] * s1[1])
    return kernel, stride, padding


def exact_region(
    input_size: int | Pair,
    kernel_size1: int | Pair,
    kernel_size2: int | Pair,
    stride1: int | Pair = 1,
    stride2: int | Pair = 1,
    padding1: int | Pair = 0,
    padding2: int | Pair = 0,
) -> torch.Tensor:
    """Which outputs of the composed convolution equal the sequential ones exactly.

    Kernel sizes are the dilated ones. An output is exact when every position its
    ``kernel_size2`` window reads in the intermediate map is either a real position of that map,
    or a position of ``padding2`` whose layer-1 window misses the image entirely (so layer 1 would
    have computed zero there too, as the padding says).

    Args:
        input_size: ``(H, W)`` of the input (or one int for a square one).
        kernel_size1: the first layer's (dilated) kernel size, an int or a pair.
        kernel_size2: the second layer's (dilated) kernel size.
        stride1: the first layer's stride.
        stride2: the second layer's stride.
        padding1: zero padding of the input.
        padding2: zero padding of the intermediate map.

    Returns:
        A boolean mask of the sequential output's shape ``(H2, W2)``.
    """
    size = _pair(input_size, "input_size")
    k1, k2 = _pair(kernel_size1, "kernel_size1"), _pair(kernel_size2, "kernel_size2")
    s1, s2 = _pair(stride1, "stride1"), _pair(stride2, "stride2")
    p1 = _pair(padding1, "padding1", minimum=0)
    p2 = _pair(padding2, "padding2", minimum=0)
    mids = [_output_size(size[axis], k1[axis], s1[axis], p1[axis], 1) for axis in range(2)]
    outs = [_output_size(mids[axis], k2[axis], s2[axis], p2[axis], 1) for axis in range(2)]
    if min(mids) < 1 or min(outs) < 1:
        raise ValueError(
            f"input_size {size} is smaller than the kernel: with kernel_size1 {k1}, stride1 "
            f"{s1}, padding1 {p1} the intermediate map is {mids[0]}×{mids[1]}, and with "
            f"kernel_size2 {k2}, stride2 {s2}, padding2 {p2} the output is {outs[0]}×{outs[1]}; "
            "both need at least one pixel"
        )
    per_axis = []
    for axis in range(2):
        mid, out = mids[axis], outs[axis]

        def reads_zero(u: int, axis: int = axis) -> bool:
            start = u * s1[axis] - p1[axis]  # layer 1's window at intermediate position u
            return start + k1[axis] - 1 < 0 or start > size[axis] - 1

        per_axis.append(
            torch.tensor(
                [
                    all(
                        0 <= u < mid or reads_zero(u)
                        for u in range(y * s2[axis] - p2[axis], y * s2[axis] - p2[axis] + k2[axis])
                    )
                    for y in range(out)
                ],
                dtype=torch.bool,
            )
        )
    return per_axis[0][:, None] & per_axis[1][None, :]


def kron_kernel(w1: ArrayLike, w2: ArrayLike) -> torch.Tensor:
    """``Σ_m w2[:, m] ⊗ w1[m, :]``: the composed kernel as a sum of Kronecker products.

    Entry ``[o, c, i·k1h + a, j·k1w + b] = Σ_m w2[o, m, i, j] · w1[m, c, a, b]``: ``w2`` is the
    outer (coarse) factor, ``w1`` the inner (fine) one. It equals :func:`compose`'s kernel when
    ``stride1`` equals ``w1``'s kernel size, and a convolution with it at stride ``k1·k2`` on
    :func:`windows` of the input reproduces the two layers for any strides.

    Args:
        w1: ``(C1, C0, k1h, k1w)``.
        w2: ``(C2, C1, k2h, k2w)``.

    Returns:
        ``(C2, C0, k2h·k1h, k2w·k1w)``.

    Example:
        >>> w1, w2 = torch.randn(1, 1, 3, 3), torch.randn(1, 1, 2, 2)
        >>> torch.allclose(kron_kernel(w1, w2)[0, 0], torch.kron(w2[0, 0], w1[0, 0]))
        True
    """
    a, b = _weight(w1, "w1"), _weight(w2, "w2")
    _check_chain(a, b)
    dtype = torch.promote_types(a.dtype, b.dtype)
    c2, _, k2h, k2w = b.shape
    _, c0, k1h, k1w = a.shape
    product = torch.einsum("omij,mcab->ociajb", b.to(dtype), a.to(dtype))
    return product.reshape(c2, c0, k2h * k1h, k2w * k1w)


def windows(
    x: ArrayLike, kernel_sizes: Sequence[int | Pair], strides: Sequence[int | Pair]
) -> torch.Tensor:
    """Lay every receptive field of a stack of convolutions out as its own tile.

    For layers with kernel sizes ``k1, …, kL`` and strides ``s1, …, sL`` (innermost first), each
    output position of the last layer reads a ``(k1·…·kL)``-square region of layer-1 windows.
    The result places that region, in Kronecker order (last layer outermost), as a
    non-overlapping tile, so that a convolution with :func:`kron_kernel` at stride
    ``k1·…·kL`` reproduces the stack. Overlapping windows repeat input pixels, which makes the
    windowed input larger than ``x``.

    Args:
        x: ``(C, H, W)`` or ``(N, C, H, W)``.
        kernel_sizes: one kernel size per layer (int or pair), innermost first: a list, tuple,
            1-D array or ``(layers, 2)`` array. A bare int is refused: ``[5]`` is one layer, and
            ``(5, 5)`` is two layers, not one 5×5 kernel (write ``[(5, 5)]`` for that).
        strides: one stride per layer (int or pair), in the same forms.

    Returns:
        ``(C, HL·K_h, WL·K_w)`` (with ``N`` first if given), where ``HL × WL`` is the last
        layer's output size and ``K = k1·…·kL``.

    Example:
        >>> windows(torch.zeros(1, 13, 13), kernel_sizes=[5, 5], strides=[2, 2]).shape
        torch.Size([1, 50, 50])
    """
    image = as_float_tensor(x, "x")
    if image.ndim not in (3, 4):
        raise ValueError(f"x must be (C, H, W) or (N, C, H, W), got shape {tuple(image.shape)}")
    kernel_sizes = as_layer_sequence(kernel_sizes, "kernel_sizes")
    strides = as_layer_sequence(strides, "strides")
    if len(kernel_sizes) != len(strides) or not kernel_sizes:
        raise ValueError(
            f"kernel_sizes and strides must list the same, non-zero number of layers, got "
            f"{len(kernel_sizes)} and {len(strides)}"
        )
    batched = image if image.ndim == 4 else image[None]
    tiles = batched[:, :, :, :, None, None]  # (N, C, H, W, tile_h, tile_w) with 1×1 tiles
    for layer, (kernel, stride) in enumerate(zip(kernel_sizes, strides, strict=True)):
        kh, kw = _pair(kernel, f"kernel_sizes[{layer}]")
        sh, sw = _pair(stride, f"strides[{layer}]")
        if tiles.shape[2] < kh or tiles.shape[3] < kw:
            raise ValueError(
                f"layer {layer} has a {kh}×{kw} kernel but its input is only "
                f"{tiles.shape[2]}×{tiles.shape[3]}: x is smaller than the stack's kernel"
            )
        # (N, C, H', W', th, tw, kh, kw) -> tiles of shape (kh·th, kw·tw), this layer outermost
        grown = tiles.unfold(2, kh, sh).unfold(3, kw, sw)
        n, c, h, w, th, tw = grown.shape[:6]
        tiles = grown.permute(0, 1, 2, 3, 6, 4, 7, 5).reshape(n, c, h, w, kh * th, kw * tw)
    n, c, h, w, th, tw = tiles.shape
    laid_out = tiles.permute(0, 1, 2, 4, 3, 5).reshape(n, c, h * th, w * tw)
    return laid_out if image.ndim == 4 else laid_out[0]


def full_conv(x: ArrayLike, w: ArrayLike) -> torch.Tensor:
    """True 2-D convolution with full output: ``(H + kh − 1, W + kw − 1)`` for ``x`` ``(H, W)``.

    Unlike ``conv2d`` (a cross-correlation on the valid region), the kernel is flipped and every
    overlap counts, as in ``numpy.convolve(mode="full")`` along each axis. This is the
    "multiplication" of the layer equation ``y_i = Σ_j w_ij * x_j``: it is commutative and
    associative.

    Args:
        x: ``(H, W)``.
        w: ``(kh, kw)``.
    """
    a, b = as_float_tensor(x, "x"), as_float_tensor(w, "w")
    for name, t in (("x", a), ("w", b)):
        if t.ndim != 2:
            raise ValueError(f"{name} must be 2-D (H, W), got shape {tuple(t.shape)}")
        check_not_empty(t, name)
    dtype = torch.promote_types(a.dtype, b.dtype)
    kh, kw = b.shape
    flipped = b.to(dtype).flip(0, 1)[None, None]
    return F.conv2d(a.to(dtype)[None, None], flipped, padding=(kh - 1, kw - 1))[0, 0]


def flatten_filters(weight: ArrayLike) -> torch.Tensor:
    """Filters as the columns of a matrix: ``(C_out, C_in, kh, kw)`` -> ``(C_in·kh·kw, C_out)``."""
    w = _weight(weight, "weight")
    return w.reshape(w.shape[0], -1).T


def unflatten_filters(matrix: ArrayLike, in_channels: int, kernel_size: int | Pair) -> torch.Tensor:
    """Inverse of :func:`flatten_filters`: ``(C_in·kh·kw, C_out)`` -> ``(C_out, C_in, kh, kw)``."""
    m = as_float_tensor(matrix, "matrix")
    check_not_empty(m, "matrix")
    in_channels = as_int(in_channels, "in_channels", minimum=1)
    kh, kw = _pair(kernel_size, "kernel_size")
    if m.ndim != 2 or m.shape[0] != in_channels * kh * kw:
        raise ValueError(
            f"matrix must have shape ({in_channels * kh * kw}, C_out) for {in_channels} input "
            f"channels and a {kh}×{kw} kernel, got {tuple(m.shape)}"
        )
    return m.T.reshape(m.shape[1], in_channels, kh, kw)
