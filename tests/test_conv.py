"""kronlib.conv against torch's own convolutions (the referee), on random shapes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st

from kronlib.conv import (
    compose,
    conv_matrix,
    dilate_kernel,
    exact_region,
    flatten_filters,
    full_conv,
    is_doubly_block_toeplitz,
    kron_kernel,
    unflatten_filters,
    windows,
)

channels = st.integers(1, 3)
kernels = st.integers(1, 4)
strides = st.integers(1, 4)
paddings = st.integers(0, 2)
dilations = st.integers(1, 3)


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _sequential(x, w1, w2, s1, s2, p1=0, p2=0, d1=1, d2=1):
    y1 = F.conv2d(x[None], w1, stride=s1, padding=p1, dilation=d1)
    return F.conv2d(y1, w2, stride=s2, padding=p2, dilation=d2)[0]


# -- conv_matrix ---------------------------------------------------------------------------------
@given(channels, channels, kernels, kernels, strides, paddings, dilations, st.integers(1, 9))
def test_conv_matrix_matches_conv2d(c_in, c_out, kh, kw, stride, padding, dilation, extra):
    size = dilation * (max(kh, kw) - 1) + extra
    weight = _randn(c_out, c_in, kh, kw, seed=size * 31 + kh)
    x = _randn(c_in, size, size + 1, seed=extra)
    M = conv_matrix(weight, x.shape, stride, padding, dilation)
    expected = F.conv2d(x[None], weight, stride=stride, padding=padding, dilation=dilation)
    assert M.shape == (expected.numel(), x.numel())
    torch.testing.assert_close(M @ x.flatten(), expected.flatten())


def test_conv_matrix_of_the_seed_example():
    # two 2×2 filters a..h on a 1×3×3 input: the 8×9 matrix written out by hand
    weight = torch.arange(1.0, 9.0).reshape(2, 1, 2, 2)
    M = conv_matrix(weight, (1, 3, 3))
    assert M[0].tolist() == [1, 2, 0, 3, 4, 0, 0, 0, 0]
    assert M[3].tolist() == [0, 0, 0, 0, 1, 2, 0, 3, 4]
    assert M[6].tolist() == [0, 0, 0, 5, 6, 0, 7, 8, 0]


def test_conv_matrix_pair_arguments():
    weight = _randn(2, 1, 3, 2, seed=0)
    x = _randn(1, 7, 8, seed=1)
    M = conv_matrix(weight, x.shape, stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    expected = F.conv2d(x[None], weight, stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    torch.testing.assert_close(M @ x.flatten(), expected.flatten())


# -- compose ------------------------------------------------------------------------------------
@given(channels, channels, channels, kernels, kernels, strides, strides, st.integers(0, 12))
def test_compose_equals_two_convolutions(c0, c1, c2, k1, k2, s1, s2, extra):
    # includes kernel 1 and strides larger than the kernel (windows that skip pixels)
    size = k1 + s1 * (k2 - 1) + extra
    w1, w2 = _randn(c1, c0, k1, k1, seed=extra), _randn(c2, c1, k2, k2, seed=extra + 1)
    x = _randn(c0, size, size, seed=k1 * 10 + k2)
    w, stride, padding = compose(w1, w2, s1, s2)
    assert stride == (s1 * s2, s1 * s2) and padding == (0, 0)
    assert w.shape == (c2, c0, s1 * (k2 - 1) + k1, s1 * (k2 - 1) + k1)
    composed = F.conv2d(x[None], w, stride=stride)[0]
    torch.testing.assert_close(composed, _sequential(x, w1, w2, s1, s2))


@given(
    kernels, kernels, strides, strides, paddings, paddings, dilations, dilations, st.integers(1, 14)
)
def test_compose_with_padding_and_dilation_is_exact_where_promised(
    k1, k2, s1, s2, p1, p2, d1, d2, size
):
    w1, w2 = _randn(2, 2, k1, k1, seed=size), _randn(2, 2, k2, k2, seed=size + 1)
    x = _randn(2, size, size, seed=size + 2)
    try:
        expected = _sequential(x, w1, w2, s1, s2, p1, p2, d1, d2)
    except RuntimeError:
        assume(False)  # the input is too small for this stack
    w, stride, padding = compose(w1, w2, s1, s2, p1, p2, d1, d2)
    composed = F.conv2d(x[None], w, stride=stride, padding=padding)[0]
    assert composed.shape == expected.shape
    exact = exact_region(size, d1 * (k1 - 1) + 1, d2 * (k2 - 1) + 1, s1, s2, p1, p2)
    torch.testing.assert_close(composed[:, exact], expected[:, exact])
    if p2 == 0:
        assert exact.all()


def test_padding_of_the_second_layer_changes_the_border_only():
    w1, w2 = _randn(1, 1, 3, 3, seed=0), _randn(1, 1, 3, 3, seed=1)
    x = _randn(1, 12, 12, seed=2)
    w, stride, padding = compose(w1, w2, padding2=1)
    gap = (
        F.conv2d(x[None], w, stride=stride, padding=padding)[0] - _sequential(x, w1, w2, 1, 1, p2=1)
    ).abs()[0]
    exact = exact_region(12, 3, 3, padding2=1)
    assert exact[1:-1, 1:-1].all() and not exact[0].any() and not exact[:, -1].any()
    assert gap[exact].max() < 1e-12 and gap[~exact].min() > 1e-6


def test_dilate_kernel():
    w = torch.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    assert dilate_kernel(w, 2)[0, 0].tolist() == [[1, 0, 2], [0, 0, 0], [3, 0, 4]]


# -- kron_kernel and windows ----------------------------------------------------------------------
@given(channels, channels, channels, kernels, kernels, strides)
def test_kron_kernel_is_compose_when_stride_equals_kernel(c0, c1, c2, k1, k2, s2):
    w1, w2 = _randn(c1, c0, k1, k1, seed=k1), _randn(c2, c1, k2, k2, seed=k2 + 7)
    torch.testing.assert_close(kron_kernel(w1, w2), compose(w1, w2, stride1=k1, stride2=s2)[0])


def test_kron_kernel_factor_order():
    # w2 is the outer factor: block (i, j) of the kernel is w2[i, j] times w1
    w1 = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    w2 = torch.tensor([[[[10.0, 0.0], [0.0, -1.0]]]])
    k = kron_kernel(w1, w2)[0, 0]
    assert torch.equal(k, torch.kron(w2[0, 0], w1[0, 0]))
    assert not torch.equal(k, torch.kron(w1[0, 0], w2[0, 0]))
    assert torch.equal(k[:2, :2], 10 * w1[0, 0]) and torch.equal(k[2:, 2:], -w1[0, 0])


def test_kron_kernel_sums_over_shared_channels():
    w1, w2 = _randn(3, 1, 2, 2, seed=0), _randn(1, 3, 2, 2, seed=1)
    expected = sum(torch.kron(w2[0, m], w1[m, 0]) for m in range(3))
    torch.testing.assert_close(kron_kernel(w1, w2)[0, 0], expected)


@given(channels, kernels, kernels, strides, strides, st.integers(0, 10))
def test_kron_kernel_on_windows_reproduces_the_stack(c0, k1, k2, s1, s2, extra):
    size = k1 + s1 * (k2 - 1) + extra
    w1, w2 = _randn(2, c0, k1, k1, seed=extra), _randn(3, 2, k2, k2, seed=extra + 5)
    x = _randn(c0, size, size, seed=size)
    tiled = windows(x, [k1, k2], [s1, s2])
    out = F.conv2d(tiled[None], kron_kernel(w1, w2), stride=k1 * k2)[0]
    torch.testing.assert_close(out, _sequential(x, w1, w2, s1, s2))


def test_windows_of_three_layers_and_a_batch():
    ws = [_randn(2, 1, 3, 3, seed=0), _randn(2, 2, 3, 3, seed=1), _randn(1, 2, 3, 3, seed=2)]
    x = _randn(2, 1, 30, 30, seed=3)
    expected = F.conv2d(F.conv2d(F.conv2d(x, ws[0], stride=2), ws[1]), ws[2], stride=2)
    tiled = windows(x, [3, 3, 3], [2, 1, 2])
    kernel = kron_kernel(kron_kernel(ws[0], ws[1]), ws[2])
    assert kernel.shape[-1] == 27
    torch.testing.assert_close(F.conv2d(tiled, kernel, stride=27), expected)


# -- full convolution and filter matrices ---------------------------------------------------------
@given(st.integers(1, 6), st.integers(1, 6), kernels, kernels, kernels, kernels)
def test_full_convolution_sizes_and_associativity(h, w, a, b, c, d):
    x, w1, w2 = _randn(h, w, seed=h), _randn(a, b, seed=a + 10), _randn(c, d, seed=c + 20)
    assert full_conv(x, w1).shape == (h + a - 1, w + b - 1)
    torch.testing.assert_close(full_conv(full_conv(x, w1), w2), full_conv(x, full_conv(w1, w2)))
    torch.testing.assert_close(full_conv(w1, w2), full_conv(w2, w1))


def test_full_conv_matches_numpy_convolve_in_one_dimension():
    import numpy as np

    x, w = np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 0.5])
    out = full_conv(torch.tensor(x)[None], torch.tensor(w)[None])[0].numpy()
    np.testing.assert_allclose(out, np.convolve(x, w, mode="full"))


def test_stride_one_composition_is_full_convolution_of_the_kernels():
    w1, w2 = _randn(1, 1, 3, 2, seed=0), _randn(1, 1, 2, 4, seed=1)
    torch.testing.assert_close(compose(w1, w2)[0][0, 0], full_conv(w1[0, 0], w2[0, 0]))


def test_flatten_and_unflatten_filters():
    w = _randn(5, 3, 2, 2, seed=0)
    assert flatten_filters(w).shape == (12, 5)
    assert torch.equal(unflatten_filters(flatten_filters(w), 3, 2), w)


# -- bad input -----------------------------------------------------------------------------------
def test_errors_name_the_argument_and_the_fix():
    w = torch.zeros(2, 3, 3, 3)
    with pytest.raises(ValueError, match=r"w2 must take as many input channels as w1 gives out"):
        compose(w, torch.zeros(1, 4, 3, 3))
    with pytest.raises(ValueError, match=r"w2 must take as many input channels"):
        kron_kernel(w, torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"w1 must be a 4-D conv weight .* got a 2-D array"):
        compose(torch.zeros(3, 3), w)
    with pytest.raises(ValueError, match=r"weight must be a 4-D conv weight"):
        conv_matrix(torch.zeros(3, 3, 3), (3, 5, 5))
    with pytest.raises(ValueError, match=r"input_shape \(3, 2, 2\) is smaller than the kernel"):
        conv_matrix(w, (3, 2, 2))
    with pytest.raises(ValueError, match="input_shape has 1 channels but weight"):
        conv_matrix(w, (1, 5, 5))
    with pytest.raises(ValueError, match="stride1 must be at least 1, got 0"):
        compose(w, torch.zeros(1, 2, 1, 1), stride1=0)
    with pytest.raises(TypeError, match="padding2 must be an int or a pair of ints"):
        compose(w, torch.zeros(1, 2, 1, 1), padding2=1.5)
    with pytest.raises(ValueError, match="x is smaller than the stack's kernel"):
        windows(torch.zeros(1, 4, 4), [5], [1])
    with pytest.raises(ValueError, match="the same, non-zero number of layers"):
        windows(torch.zeros(1, 9, 9), [3, 3], [1])


def test_convolution_matrices_are_doubly_block_toeplitz():
    M = conv_matrix(_randn(1, 1, 3, 3, seed=0), (1, 6, 7))
    assert is_doubly_block_toeplitz(M, (6, 7), (4, 5))
    # with stride 2 the blocks shift by two columns per row: no longer Toeplitz
    strided = conv_matrix(_randn(1, 1, 3, 3, seed=0), (1, 7, 7), stride=2)
    assert not is_doubly_block_toeplitz(strided, (7, 7), (3, 3))
    # a random matrix is not
    assert not is_doubly_block_toeplitz(_randn(20, 42, seed=1), (6, 7), (4, 5))
    with pytest.raises(ValueError, match=r"M must have shape \(20, 42\)"):
        is_doubly_block_toeplitz(torch.zeros(3, 3), (6, 7), (4, 5))


# -- ints from numpy and torch; refusals (validation issue) --------------------------------------
@pytest.mark.parametrize(
    "two",
    [2, np.int64(2), np.int32(2), torch.tensor(2), (np.int64(2), 2), (torch.tensor(2), 2)],
    ids=repr,
)
def test_pair_arguments_accept_numpy_and_0d_torch_ints(two):
    w = _randn(2, 1, 3, 3, seed=0)
    expected = conv_matrix(w, (1, 7, 7), stride=2)
    torch.testing.assert_close(conv_matrix(w, (1, 7, 7), stride=two), expected)
    assert dilate_kernel(w, two).shape == (2, 1, 5, 5)
    assert exact_region(8, 3, 3, stride2=two).shape == (2, 2)
    _, stride, padding = compose(w, _randn(1, 2, 2, 2, seed=1), stride1=two, padding2=two)
    assert stride == (2, 2) and padding == (4, 4)
    assert all(type(v) is int for v in (*stride, *padding))


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (True, TypeError, "stride must be an int or a pair of ints"),
        ((2, False), TypeError, "stride must be an int or a pair of ints"),
        (2.0, TypeError, "stride must be an int or a pair of ints"),
        (np.float64(2), TypeError, "stride must be an int or a pair of ints"),
        (torch.tensor(2.0), TypeError, "stride must be an int or a pair of ints"),
        ("2", TypeError, "stride must be an int or a pair of ints"),
        ((1, 2, 3), TypeError, r"stride must be an int or a pair of ints \(rows, cols\), got"),
        (0, ValueError, "stride must be at least 1, got 0"),
        ((2, np.int64(-1)), ValueError, "stride must be at least 1"),
    ],
    ids=repr,
)
def test_pair_arguments_refuse_bools_floats_strings_and_negatives(bad, error, message):
    with pytest.raises(error, match=message):
        conv_matrix(torch.zeros(1, 1, 2, 2), (1, 5, 5), stride=bad)


def test_windows_wants_one_kernel_size_and_stride_per_layer():
    x = _randn(1, 13, 13, seed=0)
    # the docstring promises sequences (one entry per layer); a bare int is refused, not guessed
    with pytest.raises(TypeError, match=r"kernel_sizes must be a sequence .* \[5\] for one layer"):
        windows(x, 2, 1)
    with pytest.raises(TypeError, match=r"strides must be a sequence .* got int 1"):
        windows(x, [2], 1)
    with pytest.raises(TypeError, match="kernel_sizes must be a sequence"):
        windows(x, "55", "11")
    with pytest.raises(TypeError, match=r"kernel_sizes\[0\] must be an int or a pair"):
        windows(x, [True], [1])
    # numpy arrays and tensors of ints are sequences of layers; pairs per layer still work
    expected = windows(x, [5, 5], [2, 2])
    torch.testing.assert_close(windows(x, np.array([5, 5]), torch.tensor([2, 2])), expected)
    torch.testing.assert_close(windows(x, [(5, 5), np.int64(5)], [2, (2, 2)]), expected)
    torch.testing.assert_close(windows(x, np.array([[5, 5], [5, 5]]), [2, 2]), expected)
    with pytest.raises(ValueError, match=r"kernel_sizes must list one entry per layer"):
        windows(x, np.ones((1, 1, 2), dtype=int), [1])


def test_spatial_sizes_and_kernel_sizes_have_one_name_each():
    M = conv_matrix(_randn(1, 1, 3, 3, seed=0), (1, 6, 7))
    assert is_doubly_block_toeplitz(M, input_size=(6, 7), output_size=(4, 5))
    mask = exact_region(input_size=9, kernel_size1=3, kernel_size2=3, padding2=1)
    assert mask.shape == (7, 7)


def test_shapes_and_counts_refuse_bools_floats_and_empty_arrays():
    w = _randn(2, 1, 3, 3, seed=0)
    with pytest.raises(TypeError, match=r"input_shape \(each size\) must be an int, got float"):
        conv_matrix(w, (1, 5.7, 5))
    with pytest.raises(TypeError, match=r"input_shape \(each size\) must be an int, got bool"):
        conv_matrix(w, (True, 5, 5))
    with pytest.raises(ValueError, match=r"input_shape \(each size\) must be an int ≥ 1, got 0"):
        conv_matrix(w, (1, 0, 5))
    torch.testing.assert_close(conv_matrix(w, torch.tensor([1, 5, 5])), conv_matrix(w, (1, 5, 5)))
    torch.testing.assert_close(conv_matrix(w, np.array([1, 5, 5])), conv_matrix(w, (1, 5, 5)))
    for empty in (torch.zeros(0, 1, 3, 3), torch.zeros(2, 1, 0, 3)):
        with pytest.raises(ValueError, match="weight must not be empty"):
            conv_matrix(empty, (1, 5, 5))
        with pytest.raises(ValueError, match="weight must not be empty"):
            flatten_filters(empty)
    with pytest.raises(ValueError, match="w1 must not be empty"):
        kron_kernel(torch.zeros(0, 1, 2, 2), torch.zeros(1, 0, 2, 2))
    with pytest.raises(TypeError, match=r"input_size must be an int or a pair .* got \(6\.0, 7\)"):
        is_doubly_block_toeplitz(torch.zeros(20, 42), (6.0, 7), (4, 5))
    with pytest.raises(TypeError, match="output_size must be an int or a pair"):
        is_doubly_block_toeplitz(torch.zeros(1, 1), (1, 1), (True, 1))
    assert is_doubly_block_toeplitz(conv_matrix(w[:1], (1, 5, 5)), 5, 3)
    with pytest.raises(ValueError, match=r"input_size \(2, 2\) is smaller than the kernel"):
        exact_region(2, 3, 3)
    with pytest.raises(ValueError, match=r"input_size \(4, 4\) is smaller than the kernel"):
        exact_region(4, 3, 3)  # the intermediate map is 2×2, smaller than kernel_size2
    with pytest.raises(ValueError, match=r"x must not be empty"):
        full_conv(torch.zeros(0, 3), torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"w must not be empty"):
        full_conv(torch.ones(3, 3), torch.ones(0, 2))


def test_unflatten_filters_checks_in_channels():
    matrix = flatten_filters(_randn(5, 2, 3, 3, seed=0))
    with pytest.raises(TypeError, match="in_channels must be an int, got bool True"):
        unflatten_filters(matrix, True, 3)
    with pytest.raises(TypeError, match=r"in_channels must be an int, got float 2\.0"):
        unflatten_filters(matrix, 2.0, 3)
    with pytest.raises(TypeError, match="in_channels must be an int, got str"):
        unflatten_filters(matrix, "2", 3)
    with pytest.raises(ValueError, match="in_channels must be an int ≥ 1, got -2"):
        unflatten_filters(matrix, -2, 3)
    with pytest.raises(ValueError, match="matrix must not be empty"):
        unflatten_filters(torch.zeros(18, 0), 2, 3)
    expected = unflatten_filters(matrix, 2, 3)
    torch.testing.assert_close(unflatten_filters(matrix, np.int64(2), torch.tensor(3)), expected)
