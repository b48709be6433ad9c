"""Nearest Kronecker products: the Van Loan–Pitsianis rearrangement and its SVD.

An image ``A`` of shape ``(m1*m2, n1*n2)`` is cut into an ``m1 × n1`` grid of blocks, each of
shape ``(m2, n2)``. Flattening every block into a row gives the *rearranged* matrix ``R`` of shape
``(m1*n1, m2*n2)``, and the rearrangement turns Kronecker products into outer products::

    rearrange(kron(B, C), C.shape) == outer(vec(B), vec(C))

so the best sum of ``r`` Kronecker products is the best rank-``r`` approximation of ``R``, read
off its SVD.

Colour images ``(H, W, 3)`` carry their channels in one factor: with ``color="B"`` the coarse
factor ``B`` has shape ``(m1, n1, 3)`` and ``C`` is grayscale; with ``color="C"`` it is the other
way round. Throughout, ``vec`` flattens row-major (C order), channels last.

All functions take torch tensors (any device, float32 or float64; integer images become float32)
or numpy arrays; ``rearrange``, ``unrearrange`` and ``kron`` return the type they were given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kronlib._validate import (
    ArrayLike,
    as_float_tensor,
    as_int,
    as_pair,
    check_color,
    check_finite,
    check_ndim,
    check_not_empty,
    check_rank,
    like_input,
)

__all__ = [
    "BudgetPoint",
    "KronFactorization",
    "errors_at_budget",
    "kron",
    "nkp",
    "rearrange",
    "unrearrange",
]

_IMAGE_LAYOUT = "(H, W) or (H, W, 3)"


def _channel_split(color: str | None, channels: int) -> tuple[int, int]:
    """How the ``channels`` of an image split between B and C: ``(channels_B, channels_C)``."""
    return (1, channels) if color == "C" else (channels, 1)


def _check_image(A: torch.Tensor, name: str, color: str | None) -> None:
    check_ndim(A, name, (2, 3), _IMAGE_LAYOUT)
    check_not_empty(A, name)
    if A.ndim == 3 and A.shape[2] != 3:
        raise ValueError(
            f"{name} must have 3 colour channels last, shape (H, W, 3), got shape {tuple(A.shape)}"
        )
    check_color(color, A.ndim)


def _shape_pair(value: object, name: str) -> tuple[int, int]:
    """``grid_shape`` or ``block_shape`` as two positive ints (numpy and 0-d torch ints too)."""
    return as_pair(value, name, minimum=1, single=False)


def _split_shape(image_shape: tuple[int, int], part: tuple[int, int], name: str) -> tuple[int, int]:
    """Return ``image_shape / part`` per axis, or raise if ``part`` does not divide it."""
    for axis, (whole, piece) in enumerate(zip(image_shape, part, strict=True)):
        if whole % piece:
            raise ValueError(
                f"{name} {part} must divide the image shape {image_shape}: axis {axis} has "
                f"{whole} pixels, which is not a multiple of {piece}"
            )
    return image_shape[0] // part[0], image_shape[1] // part[1]


def rearrange(A: ArrayLike, block_shape: tuple[int, int], color: str | None = None) -> ArrayLike:
    """Stack the flattened ``block_shape`` blocks of ``A`` as the rows of a matrix.

    Args:
        A: image of shape ``(m1*m2, n1*n2)``, or ``(m1*m2, n1*n2, 3)`` with ``color`` given.
        block_shape: ``(m2, n2)``, the shape of one block (the shape of ``C``).
        color: ``None`` for a grayscale ``A``; ``"B"`` or ``"C"`` for the factor that carries
            the colour channels of a colour ``A``.

    Returns:
        ``R`` of shape ``(m1*n1, m2*n2)``; row ``i*n1 + j`` is block ``(i, j)`` flattened
        row-major. With ``color="B"`` the shape is ``(m1*n1*3, m2*n2)`` (the row index runs over
        ``(i, j, channel)``), with ``color="C"`` it is ``(m1*n1, m2*n2*3)``.

    Example:
        >>> B, C = torch.randn(4, 6), torch.randn(3, 2)
        >>> R = rearrange(torch.kron(B, C), C.shape)
        >>> torch.allclose(R, torch.outer(B.flatten(), C.flatten()))
        True

    """
    image = as_float_tensor(A, "A")
    _check_image(image, "A", color)
    m2, n2 = _shape_pair(block_shape, "block_shape")
    m1, n1 = _split_shape(tuple(image.shape[:2]), (m2, n2), "block_shape")
    channels = image.shape[2] if image.ndim == 3 else 1
    cb, cc = _channel_split(color, channels)
    R = (
        image.reshape(m1, m2, n1, n2, cb, cc)
        .permute(0, 2, 4, 1, 3, 5)
        .reshape(m1 * n1 * cb, m2 * n2 * cc)
    )
    return like_input(R, A)


def unrearrange(
    R: ArrayLike,
    grid_shape: tuple[int, int],
    block_shape: tuple[int, int],
    color: str | None = None,
) -> ArrayLike:
    """Invert :func:`rearrange`: put each row of ``R`` back as a block of the image.

    Args:
        R: rearranged matrix of shape ``(m1*n1, m2*n2)`` (times 3 on the B side for
            ``color="B"``, on the C side for ``color="C"``).
        grid_shape: ``(m1, n1)``, the number of blocks per axis (the shape of ``B``).
        block_shape: ``(m2, n2)``, the shape of one block (the shape of ``C``).
        color: as in :func:`rearrange`.

    Returns:
        ``A`` of shape ``(m1*m2, n1*n2)``, or ``(m1*m2, n1*n2, 3)`` with ``color`` given.

    Example:
        >>> A = torch.arange(24.0).reshape(4, 6)
        >>> torch.equal(unrearrange(rearrange(A, (2, 3)), (2, 2), (2, 3)), A)
        True

    """
    matrix = as_float_tensor(R, "R")
    check_ndim(matrix, "R", (2,), "(blocks, pixels per block)")
    if color not in (None, "B", "C"):
        raise ValueError(f"color must be None, 'B' or 'C', got {color!r}")
    m1, n1 = _shape_pair(grid_shape, "grid_shape")
    m2, n2 = _shape_pair(block_shape, "block_shape")
    cb, cc = _channel_split(color, 3 if color else 1)
    expected = (m1 * n1 * cb, m2 * n2 * cc)
    if tuple(matrix.shape) != expected:
        raise ValueError(
            f"R must have shape {expected} for grid_shape {(m1, n1)}, block_shape {(m2, n2)} "
            f"and color {color!r}, got {tuple(matrix.shape)}"
        )
    image = (
        matrix.reshape(m1, n1, cb, m2, n2, cc)
        .permute(0, 3, 1, 4, 2, 5)
        .reshape(m1 * m2, n1 * n2, cb * cc)
    )
    if color is None:
        image = image[..., 0]
    return like_input(image, R)


def _kron_modes(B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Kronecker products of matching modes, channels broadcast.

    ``B`` ``(r, m1, n1, cb)`` and ``C`` ``(r, m2, n2, cc)`` with ``cb``, ``cc`` equal or 1 give
    ``(r, m1*m2, n1*n2, max(cb, cc))``.
    """
    r, m1, n1, _ = B.shape
    _, m2, n2, _ = C.shape
    product = B[:, :, None, :, None, :] * C[:, None, :, None, :, :]
    return product.reshape(r, m1 * m2, n1 * n2, -1)


def kron(B: ArrayLike, C: ArrayLike) -> ArrayLike:
    """Kronecker product of two images, with a colour axis on either (or both) factors.

    Args:
        B: ``(m1, n1)`` or ``(m1, n1, c)``.
        C: ``(m2, n2)`` or ``(m2, n2, c)``; if both have a channel axis the counts must match
            (the product is then taken channel by channel).

    Returns:
        ``(m1*m2, n1*n2)`` for two grayscale factors, else ``(m1*m2, n1*n2, c)`` with
        ``out[i*m2 + k, j*n2 + l, ch] = B[i, j, ch] * C[k, l, ch]`` (a missing channel axis
        broadcasts). For 2-D inputs this is ``torch.kron``.

    Example:
        >>> kron(torch.eye(2), torch.ones(1, 2))
        tensor([[1., 1., 0., 0.],
                [0., 0., 1., 1.]])

    """
    b, c = as_float_tensor(B, "B"), as_float_tensor(C, "C")
    check_ndim(b, "B", (2, 3), "(m1, n1) or (m1, n1, channels)")
    check_ndim(c, "C", (2, 3), "(m2, n2) or (m2, n2, channels)")
    check_not_empty(b, "B")
    check_not_empty(c, "C")
    if b.ndim == 3 and c.ndim == 3 and b.shape[2] != c.shape[2]:
        raise ValueError(
            f"B and C must have the same number of channels when both have a channel axis, got "
            f"B {tuple(b.shape)} and C {tuple(c.shape)}"
        )
    if b.device != c.device:
        raise ValueError(f"B and C must be on one device, got {b.device} and {c.device}")
    dtype = torch.promote_types(b.dtype, c.dtype)
    b3 = b.to(dtype) if b.ndim == 3 else b.to(dtype)[..., None]
    c3 = c.to(dtype) if c.ndim == 3 else c.to(dtype)[..., None]
    out = _kron_modes(b3[None], c3[None])[0]
    if b.ndim == 2 and c.ndim == 2:
        out = out[..., 0]
    return like_input(out, B)


@dataclass(frozen=True, eq=False)
class KronFactorization:
    """The result of :func:`nkp`: ``A ≈ Σ_i B[i] ⊗ C[i]``, modes ordered by singular value.

    Attributes:
        B: coarse factors, ``(r, m1, n1)``, or ``(r, m1, n1, 3)`` when ``color == "B"``.
        C: fine factors, ``(r, m2, n2)``, or ``(r, m2, n2, 3)`` when ``color == "C"``.
        singular_values: the *full* spectrum of the rearranged matrix, descending, of length
            ``max_rank`` (also beyond the ``r`` modes kept).
        color: ``None``, ``"B"`` or ``"C"``.
        target: the image that was factorized, ``(H, W)`` or ``(H, W, 3)``.

    Each mode is scaled by ``sqrt(σ_i)`` on both sides, and its sign is chosen so that ``B[i]``
    sums to a non-negative number (the SVD leaves the sign free); the products do not depend on
    either choice.

    """

    B: torch.Tensor
    C: torch.Tensor
    singular_values: torch.Tensor
    color: str | None
    target: torch.Tensor

    @property
    def rank(self) -> int:
        """Number of modes kept."""
        return self.B.shape[0]

    @property
    def max_rank(self) -> int:
        """The most modes there can be (the rank of the rearranged matrix's SVD)."""
        return self.singular_values.shape[0]

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(m1, n1)``: the shape of each ``B[i]`` without channels."""
        return tuple(self.B.shape[1:3])

    @property
    def block_shape(self) -> tuple[int, int]:
        """``(m2, n2)``: the shape of each ``C[i]`` without channels."""
        return tuple(self.C.shape[1:3])

    def _modes(self, rank: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
        r = self.rank if rank is None else check_rank(rank, self.rank)
        b, c = self.B[:r], self.C[:r]
        return (b if b.ndim == 4 else b[..., None]), (c if c.ndim == 4 else c[..., None]), r

    def terms(self, rank: int | None = None) -> torch.Tensor:
        """Each mode's Kronecker product ``B[i] ⊗ C[i]``: ``(r, H, W)`` or ``(r, H, W, 3)``."""
        b, c, _ = self._modes(rank)
        products = _kron_modes(b, c)
        return products[..., 0] if self.color is None else products

    def reconstruct(self, rank: int | None = None) -> torch.Tensor:
        """``Σ_{i<rank} B[i] ⊗ C[i]``, shape of the target; ``rank=None`` uses every kept mode."""
        b, c, r = self._modes(rank)
        R = b.reshape(r, -1).T @ c.reshape(r, -1)
        return unrearrange(R, self.grid_shape, self.block_shape, self.color)

    def error(self, rank: int | None = None) -> float:
        """Relative Frobenius error ``‖A − reconstruct(rank)‖_F / ‖A‖_F`` measured on the image.

        By Eckart–Young it equals ``sqrt(Σ_{i>rank} σ_i²) / ‖A‖_F``. For an all-zero target the
        ratio would be ``0/0``; it is defined as ``0.0`` there, because the factors are zero and
        the reconstruction is exact.
        """
        residual = self.target - self.reconstruct(rank)
        norm = torch.linalg.vector_norm(self.target)
        if float(norm) == 0.0:
            return 0.0
        return float(torch.linalg.vector_norm(residual) / norm)

    def __repr__(self) -> str:
        shape = "×".join(map(str, self.target.shape))
        m1, n1 = self.grid_shape
        m2, n2 = self.block_shape
        return (
            f"KronFactorization(image {shape}, B {m1}×{n1}, C {m2}×{n2}, color={self.color!r}, "
            f"rank {self.rank} of {self.max_rank})"
        )


def nkp(
    A: ArrayLike,
    grid_shape: tuple[int, int],
    rank: int | None = None,
    color: str | None = None,
) -> KronFactorization:
    """Nearest sum of Kronecker products ``A ≈ Σ_{i<rank} B_i ⊗ C_i`` (Van Loan & Pitsianis).

    Args:
        A: image ``(H, W)``, or ``(H, W, 3)`` with ``color`` given. Tensor (any device) or numpy
            array; float32/float64 are kept, integer images become float32. Finite, not empty.
        grid_shape: ``(m1, n1)``, the shape of each ``B_i``; it must divide ``(H, W)``, and ``C_i``
            then has shape ``(H // m1, W // n1)``. Ints may be Python, numpy or 0-d tensor ints.
        rank: number of modes to keep, an int in ``1..max_rank`` where ``max_rank`` is the
            smaller side of the rearranged matrix; ``None`` keeps them all.
        color: ``None`` for grayscale; ``"B"`` or ``"C"``: which factor carries the channels.

    Returns:
        A :class:`KronFactorization` whose tensors share ``A``'s device and dtype. An all-zero
        ``A`` is a valid input: every factor and singular value is zero, and ``error()`` is
        ``0.0`` (the reconstruction is exact) rather than ``0/0``.

    Raises:
        ValueError: if ``A`` holds NaN or an infinity (the SVD has no meaning there), is empty,
            or if a shape, ``rank`` or ``color`` does not fit.
        TypeError: if ``A`` is not an array or a shape or ``rank`` is not made of ints.

    Example:
        >>> A = torch.kron(torch.rand(4, 6), torch.rand(8, 5))
        >>> fac = nkp(A, (4, 6), rank=1)
        >>> fac.error(1) < 1e-5
        True

    """
    image = as_float_tensor(A, "A")
    _check_image(image, "A", color)
    check_finite(image, "A")
    grid = _shape_pair(grid_shape, "grid_shape")
    block = _split_shape(tuple(image.shape[:2]), grid, "grid_shape")
    R = rearrange(image, block, color)
    U, S, Vh = torch.linalg.svd(R, full_matrices=False)
    keep = S.shape[0] if rank is None else check_rank(rank, S.shape[0])
    U, Vh = U[:, :keep], Vh[:keep]
    signs = torch.where(U.sum(dim=0) < 0, -1.0, 1.0).to(U.dtype)
    root = S[:keep].sqrt() * signs
    cb, cc = _channel_split(color, 3 if color else 1)
    B = (U * root).T.reshape(keep, *grid, cb)
    C = (Vh * root[:, None]).reshape(keep, *block, cc)
    if color != "B":
        B = B[..., 0]
    if color != "C":
        C = C[..., 0]
    return KronFactorization(B=B, C=C, singular_values=S, color=color, target=image)


@dataclass(frozen=True)
class BudgetPoint:
    """One factor shape at one storage budget (see :func:`errors_at_budget`).

    Attributes:
        grid_shape: ``(m1, n1)``, the shape of each ``B_i``.
        block_shape: ``(m2, n2)``, the shape of each ``C_i``.
        budget: the numbers that may be stored.
        per_term: numbers one term stores, ``m1·n1 + m2·n2`` (times 3 for the colour factor).
        rank: terms that fit, ``min(budget // per_term, max_rank)``; 0 when none fits.
        error: relative Frobenius error of the best sum of ``rank`` terms (1 for no term).
    """

    grid_shape: tuple[int, int]
    block_shape: tuple[int, int]
    budget: int
    per_term: int
    rank: int
    error: float


def errors_at_budget(
    A: ArrayLike,
    grid_shapes: list[tuple[int, int]],
    budgets: list[int],
    color: str | None = None,
) -> list[BudgetPoint]:
    """The error of the best Kronecker sum of each factor shape that fits a storage budget.

    One term ``B_i ⊗ C_i`` stores ``m1·n1 + m2·n2`` numbers, so at a fixed budget a shape with
    small factors affords more terms. For every shape and budget this keeps as many terms as fit
    and measures the relative error (by Eckart–Young, from the singular values).

    Args:
        A: image ``(H, W)`` or ``(H, W, 3)``, as for :func:`nkp`.
        grid_shapes: shapes ``(m1, n1)`` of ``B``, each dividing ``(H, W)``.
        budgets: numbers that may be stored, positive ints.
        color: as for :func:`nkp`.

    Returns:
        One :class:`BudgetPoint` per budget and shape, budgets outer, shapes inner.

    Example:
        >>> A = torch.rand(8, 8)
        >>> points = errors_at_budget(A, [(2, 2), (4, 4)], [40])
        >>> [(p.per_term, p.rank) for p in points]
        [(20, 2), (20, 2)]
    """
    image = as_float_tensor(A, "A")
    sizes = [as_int(b, "budgets", minimum=1) for b in budgets]
    if not sizes:
        raise ValueError("budgets must hold at least one budget, got none")
    factorizations = [nkp(image, shape, color=color) for shape in grid_shapes]
    if not factorizations:
        raise ValueError("grid_shapes must hold at least one shape, got none")
    points = []
    for budget in sizes:
        for fac in factorizations:
            channels_b = 3 if color == "B" else 1
            channels_c = 3 if color == "C" else 1
            m1, n1 = fac.grid_shape
            m2, n2 = fac.block_shape
            per_term = channels_b * m1 * n1 + channels_c * m2 * n2
            rank = min(budget // per_term, fac.max_rank)
            S = fac.singular_values.to(torch.float64)
            total = float(S.square().sum())
            error = float((S[rank:].square().sum() / total).sqrt()) if total > 0 else 0.0
            points.append(
                BudgetPoint(fac.grid_shape, fac.block_shape, budget, per_term, rank, error)
            )
    return points
