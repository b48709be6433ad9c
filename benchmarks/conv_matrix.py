"""Time three ways to the explicit matrix of a convolution layer, and check they agree.

* ``kronlib.conv.conv_matrix``: entries written from the index rule.
* ``torch.func.jacrev``: the Jacobian of ``F.conv2d`` by reverse-mode autodiff.
* identity probing: ``F.conv2d`` applied to every basis image at once.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from kronlib.conv import conv_matrix
from kronlib.timing import median_seconds

CASES = [  # (C_out, C_in, k, H, stride)
    (6, 1, 5, 32, 1),
    (16, 6, 5, 14, 1),
    (8, 3, 3, 32, 2),
    (32, 16, 3, 16, 1),
]


def by_index(weight: torch.Tensor, shape: tuple[int, int, int], stride: int) -> torch.Tensor:
    """The index rule of kronlib.conv.conv_matrix."""
    return conv_matrix(weight, shape, stride=stride)


def by_jacrev(weight: torch.Tensor, shape: tuple[int, int, int], stride: int) -> torch.Tensor:
    """Reverse-mode Jacobian of the convolution."""

    def layer(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x[None], weight, stride=stride).flatten()

    jacobian = torch.func.jacrev(layer)(torch.zeros(shape))
    return jacobian.reshape(jacobian.shape[0], -1)


def by_probing(weight: torch.Tensor, shape: tuple[int, int, int], stride: int) -> torch.Tensor:
    """The convolution of every basis image, as columns."""
    n = shape[0] * shape[1] * shape[2]
    basis = torch.eye(n).reshape(n, *shape)
    return F.conv2d(basis, weight, stride=stride).flatten(1).T


def main() -> None:
    """Print one row per layer shape: matrix size and the time of each method."""
    torch.manual_seed(0)
    torch.set_num_threads(2)
    header = f"{'layer':>22} {'matrix':>12} {'index rule':>11} {'jacrev':>9} {'probing':>9}"
    print(header)
    print("-" * len(header))
    for c_out, c_in, k, size, stride in CASES:
        args = (torch.randn(c_out, c_in, k, k), (c_in, size, size), stride)
        M = by_index(*args)
        torch.testing.assert_close(M, by_jacrev(*args))
        torch.testing.assert_close(M, by_probing(*args))
        t_index, t_jac, t_probe = (
            median_seconds(partial(f, *args), repeats=3) for f in (by_index, by_jacrev, by_probing)
        )
        name = f"{c_in}→{c_out}, {k}×{k}, {size}², s{stride}"
        dims = f"{M.shape[0]}×{M.shape[1]}"
        print(
            f"{name:>22} {dims:>12} {t_index * 1e3:>9.1f}ms {t_jac * 1e3:>7.1f}ms "
            f"{t_probe * 1e3:>7.1f}ms"
        )


if __name__ == "__main__":
    main()
