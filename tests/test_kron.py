"""Unit, property and error tests of kronlib.kron (nearest Kronecker products)."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kronlib import KronFactorization, nkp, rearrange, unrearrange
from kronlib.kron import kron
from kronlib.testing import assert_relative_close

small = st.integers(min_value=1, max_value=5)
dtypes = st.sampled_from([torch.float32, torch.float64])
colors = st.sampled_from([None, "B", "C"])
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _image(m1, n1, m2, n2, color, dtype, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    shape = (m1 * m2, n1 * n2) + ((3,) if color else ())
    return torch.rand(shape, generator=g, dtype=dtype).to(device)


# -- rearrange / unrearrange ---------------------------------------------------------------------
def test_rearrange_rows_are_flattened_blocks():
    A = torch.arange(24.0).reshape(4, 6)
    R = rearrange(A, (2, 3))
    assert R.shape == (4, 6)
    # block (0, 1) is rows 0..1, cols 3..5; it is row 0*2 + 1 = 1 of R
    assert R[1].tolist() == [3.0, 4.0, 5.0, 9.0, 10.0, 11.0]
    assert R[2].tolist() == A[2:4, 0:3].flatten().tolist()


@given(small, small, small, small, dtypes)
def test_rearranged_kron_is_outer_product(m1, n1, m2, n2, dtype):
    g = torch.Generator().manual_seed(m1 * 1000 + n1 * 100 + m2 * 10 + n2)
    B = torch.randn(m1, n1, generator=g, dtype=dtype)
    C = torch.randn(m2, n2, generator=g, dtype=dtype)
    R = rearrange(torch.kron(B, C), C.shape)
    torch.testing.assert_close(R, torch.outer(B.flatten(), C.flatten()))


@given(small, small, small, small, colors, dtypes)
def test_unrearrange_inverts_rearrange(m1, n1, m2, n2, color, dtype):
    A = _image(m1, n1, m2, n2, color, dtype)
    R = rearrange(A, (m2, n2), color)
    assert torch.equal(unrearrange(R, (m1, n1), (m2, n2), color), A)


@pytest.mark.parametrize("color", ["B", "C"])
def test_colour_rearrangement_is_outer_product_of_the_colour_factor(color):
    g = torch.Generator().manual_seed(1)
    B = torch.randn(3, 4, *((3,) if color == "B" else ()), generator=g)
    C = torch.randn(2, 5, *((3,) if color == "C" else ()), generator=g)
    R = rearrange(kron(B, C), (2, 5), color)
    torch.testing.assert_close(R, torch.outer(B.flatten(), C.flatten()))


def test_numpy_in_numpy_out():
    A = np.arange(36.0).reshape(6, 6)
    R = rearrange(A, (3, 2))
    assert isinstance(R, np.ndarray) and R.shape == (6, 6)
    np.testing.assert_array_equal(unrearrange(R, (2, 3), (3, 2)), A)


# -- kron -----------------------------------------------------------------------------------------
def test_kron_matches_torch_kron_for_matrices():
    B, C = torch.randn(3, 2), torch.randn(4, 5)
    torch.testing.assert_close(kron(B, C), torch.kron(B, C))


def test_kron_broadcasts_channels():
    B, C = torch.randn(2, 2, 3), torch.randn(3, 3)
    out = kron(B, C)
    assert out.shape == (6, 6, 3)
    for ch in range(3):
        torch.testing.assert_close(out[..., ch], torch.kron(B[..., ch], C))


def test_kron_rejects_mismatched_channels():
    with pytest.raises(ValueError, match="same number of channels"):
        kron(torch.randn(2, 2, 3), torch.randn(2, 2, 2))


# -- nkp -----------------------------------------------------------------------------------------
@given(small, small, small, small, colors, dtypes)
def test_full_rank_reconstruction_is_exact(m1, n1, m2, n2, color, dtype):
    A = _image(m1, n1, m2, n2, color, dtype)
    fac = nkp(A, (m1, n1), color=color)
    assert fac.B.dtype == dtype and fac.C.dtype == dtype
    assert_relative_close(fac.reconstruct(), A, what="full-rank reconstruction")


@given(small, small, small, small, colors, dtypes, st.data())
def test_eckart_young(m1, n1, m2, n2, color, dtype, data):
    A = _image(m1, n1, m2, n2, color, dtype, seed=7)
    fac = nkp(A, (m1, n1), color=color)
    r = data.draw(st.integers(1, fac.max_rank), label="rank")
    S = fac.singular_values.double()
    predicted = float(S[r:].square().sum().sqrt() / S.square().sum().sqrt())
    atol = 1e-5 if dtype == torch.float32 else 1e-12
    assert abs(fac.error(r) - predicted) <= atol
    # more modes never hurt
    if r > 1:
        assert fac.error(r) <= fac.error(r - 1) + atol


@given(small, small, small, small, colors, st.data())
def test_terms_sum_to_reconstruction(m1, n1, m2, n2, color, data):
    A = _image(m1, n1, m2, n2, color, torch.float64, seed=3)
    fac = nkp(A, (m1, n1), color=color)
    r = data.draw(st.integers(1, fac.max_rank), label="rank")
    assert_relative_close(fac.terms(r).sum(0), fac.reconstruct(r))


def test_factor_shapes_and_kept_rank():
    A = _image(4, 6, 5, 2, "B", torch.float32)
    fac = nkp(A, (4, 6), rank=3, color="B")
    assert isinstance(fac, KronFactorization)
    assert fac.B.shape == (3, 4, 6, 3) and fac.C.shape == (3, 5, 2)
    assert fac.rank == 3 and fac.max_rank == 10 and fac.singular_values.shape == (10,)
    assert fac.grid_shape == (4, 6) and fac.block_shape == (5, 2)
    fac_c = nkp(A, (4, 6), rank=2, color="C")
    assert fac_c.B.shape == (2, 4, 6) and fac_c.C.shape == (2, 5, 2, 3)
    assert "rank 3 of 10" in repr(fac)


def test_exact_kronecker_product_is_rank_one():
    g = torch.Generator().manual_seed(0)
    B, C = (
        torch.rand(6, 4, generator=g, dtype=torch.float64),
        torch.rand(5, 7, generator=g, dtype=torch.float64),
    )
    fac = nkp(torch.kron(B, C), (6, 4), rank=1)
    assert fac.error(1) < 1e-12
    assert float(fac.singular_values[1] / fac.singular_values[0]) < 1e-12
    # sign convention: B sums to a non-negative number, and B ⊗ C is recovered
    assert fac.B[0].sum() >= 0
    torch.testing.assert_close(fac.terms(1)[0], torch.kron(B, C))


def test_rank_one_sign_is_deterministic_for_positive_images():
    A = _image(4, 4, 4, 4, None, torch.float64)
    fac = nkp(A, (4, 4), rank=1)
    assert (fac.B[0] > 0).all() and (fac.C[0] > 0).all()


def test_uint8_and_numpy_inputs_become_float32_tensors():
    A = (np.arange(64).reshape(8, 8) % 256).astype(np.uint8)
    fac = nkp(A, (2, 4))
    assert fac.B.dtype == torch.float32 and isinstance(fac.B, torch.Tensor)
    assert_relative_close(fac.reconstruct(), torch.from_numpy(A).float())


@pytest.mark.parametrize("device", DEVICES)
def test_device_is_kept(device):
    A = _image(2, 2, 3, 3, None, torch.float32, device=device)
    fac = nkp(A, (2, 2))
    assert fac.B.device.type == device and fac.reconstruct().device.type == device


# -- bad input -----------------------------------------------------------------------------------
def test_block_shape_must_divide_the_image():
    with pytest.raises(ValueError, match=r"block_shape \(7, 5\) must divide the image shape"):
        rearrange(torch.zeros(20, 30), (7, 5))
    with pytest.raises(ValueError, match=r"grid_shape \(3, 4\) must divide .* 20 pixels"):
        nkp(torch.zeros(20, 30), (3, 4))


def test_rank_above_the_maximum():
    with pytest.raises(ValueError, match="rank must be between 1 and 4 here, got 5"):
        nkp(torch.rand(4, 4), (2, 2), rank=5)
    fac = nkp(torch.rand(4, 4), (2, 2), rank=2)
    with pytest.raises(ValueError, match="rank must be between 1 and 2 here, got 3"):
        fac.reconstruct(3)
    with pytest.raises(TypeError, match="rank must be an int"):
        nkp(torch.rand(4, 4), (2, 2), rank=1.5)


@pytest.mark.parametrize(
    "bad", [torch.zeros(2, 2, 2, 2), torch.zeros(4), np.zeros((2, 2, 2, 2))], ids=str
)
def test_wrong_number_of_dimensions(bad):
    with pytest.raises(ValueError, match=r"A must have shape \(H, W\) or \(H, W, 3\), got a"):
        nkp(bad, (1, 1))


def test_colour_argument():
    with pytest.raises(ValueError, match="color must be None, 'B' or 'C', got 'rgb'"):
        nkp(torch.zeros(4, 4, 3), (2, 2), color="rgb")
    with pytest.raises(ValueError, match="color must be 'B' or 'C' for a colour image"):
        nkp(torch.zeros(4, 4, 3), (2, 2))
    with pytest.raises(ValueError, match="color must be None for a grayscale"):
        nkp(torch.zeros(4, 4), (2, 2), color="B")
    with pytest.raises(ValueError, match="3 colour channels last"):
        nkp(torch.zeros(4, 4, 4), (2, 2), color="B")


def test_other_bad_arguments():
    with pytest.raises(TypeError, match=r"A must be a torch\.Tensor or a numpy\.ndarray, got list"):
        nkp([[1.0, 2.0]], (1, 1))
    with pytest.raises(TypeError, match="A must be real"):
        nkp(torch.zeros(2, 2, dtype=torch.complex64), (1, 1))
    with pytest.raises(TypeError, match=r"grid_shape must be a pair \(rows, cols\), got 3"):
        nkp(torch.zeros(3, 3), 3)
    with pytest.raises(ValueError, match="grid_shape must hold two positive ints"):
        nkp(torch.zeros(3, 3), (0, 3))
    with pytest.raises(ValueError, match=r"R must have shape \(4, 9\)"):
        unrearrange(torch.zeros(4, 8), (2, 2), (3, 3))


# -- validation: non-finite, empty and all-zero images; ints from numpy and torch ------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=str)
@pytest.mark.parametrize("as_numpy", [False, True], ids=["tensor", "numpy"])
def test_nkp_refuses_non_finite_images(bad, as_numpy):
    A = torch.rand(4, 6, dtype=torch.float64)
    A[1, 2] = bad
    with pytest.raises(
        ValueError, match=r"A must be finite, got .* \(the first at index \(1, 2\)\)"
    ):
        nkp(A.numpy() if as_numpy else A, (2, 3))


def test_nkp_of_an_all_zero_image_is_zero_with_error_zero():
    fac = nkp(torch.zeros(4, 6), (2, 3), color=None)
    assert bool((fac.B == 0).all()) and bool((fac.C == 0).all())
    assert bool((fac.singular_values == 0).all())
    # 0/0 is defined as 0.0: the (zero) reconstruction is exact
    for rank in (None, 1, fac.max_rank):
        assert fac.error(rank) == 0.0
    colour = nkp(np.zeros((4, 6, 3)), (2, 3), rank=2, color="C")
    assert colour.error() == 0.0 and colour.error(1) == 0.0


def test_nkp_refuses_empty_images():
    with pytest.raises(ValueError, match=r"A must not be empty, got shape \(0, 4\)"):
        nkp(torch.zeros(0, 4), (1, 1))
    with pytest.raises(ValueError, match=r"A must not be empty"):
        rearrange(torch.zeros(4, 0), (1, 1))


def test_the_shape_of_b_is_called_grid_shape_everywhere():
    A = torch.rand(4, 6, dtype=torch.float64)
    fac = nkp(A, grid_shape=(2, 3), rank=1)
    assert fac.grid_shape == (2, 3) and fac.block_shape == (2, 2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'b_shape'"):
        nkp(A, b_shape=(2, 3))


@pytest.mark.parametrize("two", [np.int64(2), np.int32(2), torch.tensor(2)], ids=repr)
def test_shapes_and_ranks_accept_numpy_and_0d_torch_ints(two):
    A = torch.rand(4, 6, dtype=torch.float64)
    fac = nkp(A, (two, 3), rank=two)
    assert fac.grid_shape == (2, 3) and fac.rank == 2
    assert fac.error(two) == fac.error(2)
    torch.testing.assert_close(fac.reconstruct(two), fac.reconstruct(2))
    torch.testing.assert_close(rearrange(A, (two, 3)), rearrange(A, (2, 3)))
    torch.testing.assert_close(unrearrange(rearrange(A, (2, 3)), (two, 2), (2, 3)), A)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda A: nkp(A, (True, 3)), TypeError, "grid_shape must be a pair .* of ints"),
        (lambda A: nkp(A, (2.0, 3)), TypeError, "grid_shape must be a pair .* of ints"),
        (lambda A: nkp(A, "23"), TypeError, "grid_shape must be a pair"),
        (lambda A: nkp(A, (2, 3, 1)), TypeError, r"grid_shape must be a pair \(rows, cols\)"),
        (lambda A: nkp(A, (2, 3), rank=True), TypeError, "rank must be an int, got bool"),
        (lambda A: nkp(A, (2, 3), rank=torch.tensor(1.0)), TypeError, "rank must be an int"),
        (lambda A: nkp(A, (2, 3), rank=-1), ValueError, "rank must be between 1 and 4 here"),
        (lambda A: nkp(A, (2, 3)).error(0), ValueError, "rank must be between 1 and 4 here"),
        (lambda A: nkp(A, (2, 3)).terms(2.0), TypeError, "rank must be an int, got float"),
        (lambda A: rearrange(A, (np.float64(2), 3)), TypeError, "block_shape must be a pair"),
        (lambda A: kron(A[:0], A), ValueError, r"B must not be empty, got shape \(0, 6\)"),
        (lambda A: kron(A, torch.ones(2, 0)), ValueError, "C must not be empty"),
    ],
)
def test_kron_arguments_refuse_bools_floats_and_empty_arrays(call, error, message):
    with pytest.raises(error, match=message):
        call(torch.rand(4, 6))


def test_errors_at_budget_keeps_as_many_terms_as_fit():
    from kronlib.kron import errors_at_budget

    g = torch.Generator().manual_seed(0)
    A = torch.rand(12, 12, generator=g, dtype=torch.float64)
    points = errors_at_budget(A, [(2, 2), (3, 3), (6, 6)], [100, 1000])
    assert [(p.budget, p.grid_shape) for p in points][:3] == [
        (100, (2, 2)),
        (100, (3, 3)),
        (100, (6, 6)),
    ]
    for p in points:
        m1, n1 = p.grid_shape
        m2, n2 = p.block_shape
        assert p.per_term == m1 * n1 + m2 * n2
        fac = nkp(A, p.grid_shape)
        assert p.rank == min(p.budget // p.per_term, fac.max_rank)
        expected = fac.error(p.rank) if p.rank else 1.0
        assert abs(p.error - expected) < 1e-9
    # a budget large enough for every term reproduces the image
    assert all(p.error < 1e-9 for p in points if p.budget == 1000)
    with pytest.raises(ValueError, match="budgets"):
        errors_at_budget(A, [(2, 2)], [])
