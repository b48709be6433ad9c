"""Assertions the book and the tests use to check its claims numerically."""

from __future__ import annotations

from collections.abc import Callable

import torch

from kronlib._validate import ArrayLike, as_float_tensor

__all__ = ["assert_relative_close", "default_rtol", "jacobian", "relative_error"]


def default_rtol(dtype: torch.dtype) -> float:
    """Relative tolerance for results computed in ``dtype``: ``1e-5`` (float32), ``1e-12`` else."""
    return 1e-5 if dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-12


def relative_error(actual: ArrayLike, expected: ArrayLike) -> float:
    """``‖actual − expected‖_F / ‖expected‖_F`` (the plain norm of the difference if that is 0)."""
    a = as_float_tensor(actual, "actual").detach()
    e = as_float_tensor(expected, "expected").detach()
    if a.shape != e.shape:
        raise ValueError(
            f"actual and expected must have one shape, got {tuple(a.shape)} and {tuple(e.shape)}"
        )
    dtype = torch.promote_types(a.dtype, e.dtype)
    difference = torch.linalg.vector_norm(a.to(dtype) - e.to(dtype).to(a.device))
    scale = torch.linalg.vector_norm(e.to(dtype))
    return float(difference / scale) if scale > 0 else float(difference)


def assert_relative_close(
    actual: ArrayLike, expected: ArrayLike, rtol: float | None = None, what: str = "result"
) -> None:
    """Assert that ``actual`` matches ``expected`` in relative Frobenius norm.

    ``rtol`` defaults to :func:`default_rtol` of the less precise of the two dtypes; the message
    names ``what`` was compared and by how much it missed. Use :func:`relative_error` for the
    number itself.
    """
    error = relative_error(actual, expected)
    if rtol is None:
        a, e = as_float_tensor(actual, "actual"), as_float_tensor(expected, "expected")
        rtol = max(default_rtol(a.dtype), default_rtol(e.dtype))
    if not error <= rtol:
        raise AssertionError(f"{what}: relative error {error:.3e} exceeds the tolerance {rtol:.1e}")


def jacobian(model: Callable[[torch.Tensor], torch.Tensor], x: ArrayLike) -> torch.Tensor:
    """The referee: ``∂ model(x) / ∂ x`` for one input, by ``torch.func.jacrev``.

    Independent of :mod:`kronlib.virtual`: autograd differentiates ``model`` as it is.

    Args:
        model: takes a batch ``(N, *in_shape)``.
        x: one input ``in_shape`` (no batch axis).

    Returns:
        ``(*out_shape, *in_shape)``, detached.
    """
    point = as_float_tensor(x, "x").detach()
    return torch.func.jacrev(lambda inp: model(inp[None])[0])(point).detach()
