"""kronlib.relu (masks carve the composed kernel) and kronlib.spectral (SVD of layers, rank)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from kronlib.conv import kron_kernel
from kronlib.models import LeNet5, TinyConvNet
from kronlib.relu import apply_carved, carved_kernel, receptive_fields
from kronlib.saliency import saliency
from kronlib.spectral import (
    count_relu_masks,
    im2col_forward,
    layer_svd,
    numerical_rank,
    rearranged_kernel_spectrum,
)
from kronlib.virtual import prefix


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@given(
    st.integers(1, 3),
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(0, 4),
)
def test_carved_composition_reproduces_conv_relu_conv(c0, c1, k1, k2, s1, s2, extra):
    size = k1 + s1 * (k2 - 1) + s1 * s2 * extra
    w1, w2 = _randn(c1, c0, k1, k1, seed=size), _randn(2, c1, k2, k2, seed=size + 1)
    x = _randn(c0, size, size, seed=extra)
    hidden = F.conv2d(x[None], w1, stride=s1)[0]
    network = F.conv2d(F.relu(hidden)[None], w2, stride=s2)[0]
    torch.testing.assert_close(apply_carved(x, w1, w2, hidden > 0, s1, s2), network)


def test_carved_kernel_is_a_masked_kronecker_product_when_stride_equals_kernel():
    w1, w2 = _randn(3, 1, 2, 2, seed=0), _randn(1, 3, 2, 2, seed=1)
    mask = _randn(3, 4, 4, seed=2) > 0
    kernel = carved_kernel(w1, w2, mask, (1, 0), stride1=2, stride2=2)
    masked_w2 = w2 * mask[:, 2:4, 0:2][None]
    torch.testing.assert_close(kernel, kron_kernel(w1, masked_w2))
    # an all-off mask carves the kernel away entirely
    assert not carved_kernel(w1, w2, torch.zeros(3, 4, 4), (0, 0), 2, 2).any()


def test_carved_kernel_errors():
    w1, w2 = _randn(3, 1, 2, 2, seed=0), _randn(1, 3, 2, 2, seed=1)
    with pytest.raises(ValueError, match=r"mask must be \(3, H1, W1\)"):
        carved_kernel(w1, w2, torch.ones(2, 4, 4), (0, 0))
    with pytest.raises(ValueError, match=r"position \(3, 3\) is outside"):
        carved_kernel(w1, w2, torch.ones(3, 4, 4), (3, 3))


def test_receptive_fields_of_lenet():
    sizes = receptive_fields(LeNet5().named_children(), 32)
    assert [sizes[n] for n in ("conv1", "pool1", "conv2", "pool2", "fc1")] == [5, 6, 14, 16, 32]


def test_first_layer_unit_kernel_is_its_filter():
    from kronlib.relu import layer_kernels

    model = LeNet5()
    x = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(0))
    _, kernels = layer_kernels(model, x, "conv1")
    kernel = kernels[2, 10, 7]
    torch.testing.assert_close(kernel[0, 10:15, 7:12], model.conv1.weight[2, 0].detach())
    outside = kernel.clone()
    outside[0, 10:15, 7:12] = 0
    assert not outside.any()  # nothing outside the unit's 5×5 receptive field
    with pytest.raises(ValueError, match="layer must be one of"):
        layer_kernels(model, x, "conv9")


def test_layer_svd_identities():
    w = TinyConvNet().conv2.weight.detach().double()
    svd = layer_svd(w)
    torch.testing.assert_close(svd.matrix, w.reshape(16, -1))
    assert torch.isclose(svd.singular_values.square().sum(), w.square().sum())  # Frobenius identity
    assert svd.eigenfilters().shape == (16, 8, 3, 3)
    assert svd.energy()[-1] == pytest.approx(1.0)
    assert svd.components_for(1.0) == 16 and svd.components_for(1e-9) == 1
    for k in (1, 5, 16):
        sigma = svd.singular_values
        tail = float(sigma[k:].square().sum().sqrt() / sigma.square().sum().sqrt())
        assert svd.error(k) == pytest.approx(tail, abs=1e-12)
    with pytest.raises(ValueError, match="rank must be between 1 and 16, got 17"):
        svd.low_rank(17)


def test_im2col_forward_in_svd_coordinates_equals_conv():
    w = _randn(8, 2, 3, 3, seed=0)
    x = _randn(2, 2, 9, 11, seed=1)
    torch.testing.assert_close(im2col_forward(x, layer_svd(w)), F.conv2d(x, w))
    with pytest.raises(ValueError, match=r"x must be \(N, 2, H, W\)"):
        im2col_forward(x[:, :1], layer_svd(w))


def test_count_relu_masks():
    w = torch.tensor([[[[1.0]]], [[[-1.0]]]])  # two opposite channels on 1-pixel patches
    patches = torch.tensor([[1.0], [2.0], [-1.0], [0.0]])
    assert count_relu_masks(w, patches) == 3  # (on, off), (off, on), (off, off)
    with pytest.raises(ValueError, match=r"patches must be \(P, 1\)"):
        count_relu_masks(w, torch.zeros(3, 2))


@given(st.integers(1, 6), st.integers(2, 4), st.integers(2, 4), st.integers(0, 50))
def test_rank_of_a_composed_kernel_is_at_most_the_shared_channels(p, k1, k2, seed):
    w1, w2 = _randn(p, 2, k1, k1, seed=seed), _randn(3, p, k2, k2, seed=seed + 1)
    spectrum = rearranged_kernel_spectrum(w1, w2, out_channel=1, in_channel=1)
    rank = int((spectrum > 1e-10 * spectrum[0]).sum())
    assert rank <= p
    assert rank == min(p, k1 * k1, k2 * k2)  # random weights reach the bound


def test_layer_kernels_match_single_unit_kernels_and_extents():
    from kronlib.relu import kernel_extent, layer_kernels

    model = LeNet5()
    x = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(1))
    values, kernels = layer_kernels(model, x, "conv2")
    assert values.shape == (16, 10, 10) and kernels.shape == (16, 10, 10, 1, 32, 32)
    referee = saliency(prefix(model, "conv2"), x, 3 * 100 + 4 * 10 + 5)  # autograd
    torch.testing.assert_close(kernels[3, 4, 5], referee)
    extents = kernel_extent(kernels)
    assert extents.shape == (16, 10, 10) and int(extents.max()) <= 14
    _, first = layer_kernels(model, x, "conv1")
    assert bool((kernel_extent(first) == 5).all())
    assert kernel_extent(torch.zeros(2, 1, 4, 4)).tolist() == [0, 0]


@given(st.integers(1, 8), st.integers(0, 10_000))
def test_numerical_rank_agrees_with_numpy_on_low_rank_matrices(rank, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(9, rank, generator=g, dtype=torch.float64) @ torch.randn(
        rank, 9, generator=g, dtype=torch.float64
    )
    values = torch.linalg.svdvals(A)
    assert numerical_rank(values) == rank == np.linalg.matrix_rank(A.numpy())


def test_numerical_rank_edge_cases_and_errors():
    assert numerical_rank(torch.zeros(4)) == 0
    assert numerical_rank(torch.tensor([2.0, 1e-3]), rtol=1e-2) == 1
    with pytest.raises(ValueError, match="singular_values must be 1-D"):
        numerical_rank(torch.ones(2, 2))


def test_layer_svd_names_match_kron_factorization():
    svd = layer_svd(_randn(4, 2, 3, 3, seed=0))
    assert svd.singular_values.shape == (4,) and not hasattr(svd, "S")
    torch.testing.assert_close(svd.low_rank(rank=4), _randn(4, 2, 3, 3, seed=0))
    assert svd.error(rank=4) == pytest.approx(0.0, abs=1e-12)


# -- validation: ranks, fractions, indices and non-finite input ----------------------------------
@pytest.mark.parametrize(
    ("rank", "error", "message"),
    [
        (True, TypeError, "rank must be an int, got bool True"),
        (2.0, TypeError, "rank must be an int, got float 2.0"),
        (2.5, TypeError, "rank must be an int, got float 2.5"),
        ("2", TypeError, "rank must be an int, got str '2'"),
        (torch.tensor(2.0), TypeError, "rank must be an int"),
        (0, ValueError, "rank must be between 1 and 4, got 0"),
        (-1, ValueError, "rank must be between 1 and 4, got -1"),
        (5, ValueError, "rank must be between 1 and 4, got 5"),
        (np.int64(5), ValueError, "rank must be between 1 and 4, got 5"),
    ],
    ids=repr,
)
def test_layer_svd_rank_arguments_are_checked(rank, error, message):
    svd = layer_svd(_randn(4, 2, 3, 3, seed=0))
    with pytest.raises(error, match=message):
        svd.low_rank(rank)
    with pytest.raises(error, match=message):
        svd.error(rank)


@pytest.mark.parametrize("two", [2, np.int64(2), np.int32(2), torch.tensor(2)], ids=repr)
def test_layer_svd_rank_accepts_numpy_and_0d_torch_ints(two):
    svd = layer_svd(_randn(4, 2, 3, 3, seed=0))
    torch.testing.assert_close(svd.low_rank(two), svd.low_rank(2))
    assert svd.error(two) == svd.error(2)


@pytest.mark.parametrize(
    ("fraction", "error", "message"),
    [
        (0, ValueError, r"fraction must be in \(0, 1\], got 0"),
        (-0.5, ValueError, r"fraction must be in \(0, 1\], got -0.5"),
        (1.5, ValueError, r"fraction must be in \(0, 1\], got 1.5"),
        (float("nan"), ValueError, "fraction must be a finite number, got nan"),
        (True, TypeError, "fraction must be a real number, got bool True"),
        ("0.5", TypeError, "fraction must be a real number, got str"),
        (None, TypeError, "fraction must be a real number, got NoneType"),
    ],
    ids=repr,
)
def test_components_for_checks_the_fraction(fraction, error, message):
    svd = layer_svd(_randn(4, 2, 3, 3, seed=0))
    with pytest.raises(error, match=message):
        svd.components_for(fraction)


def test_components_for_accepts_numpy_and_torch_numbers():
    svd = layer_svd(_randn(4, 2, 3, 3, seed=0))
    expected = svd.components_for(0.9)
    assert svd.components_for(np.float32(0.9)) == expected
    assert svd.components_for(torch.tensor(0.9, dtype=torch.float64)) == expected
    assert svd.components_for(1) == 4


def test_an_all_zero_layer():
    svd = layer_svd(torch.zeros(3, 1, 2, 2))
    assert svd.error(1) == 0.0  # defined: the rank-1 weight (zero) is exact, not 0/0
    with pytest.raises(ValueError, match="all-zero weight"):
        svd.energy()
    with pytest.raises(ValueError, match="all-zero weight"):
        svd.components_for(0.5)


def test_layer_svd_refuses_non_finite_and_empty_weights():
    w = _randn(2, 1, 3, 3, seed=0)
    w[1, 0, 2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"weight must be finite, got 1 NaN .* \(1, 0, 2, 1\)"):
        layer_svd(w)
    with pytest.raises(ValueError, match=r"weight must not be empty, got shape \(0, 2, 3, 3\)"):
        layer_svd(torch.zeros(0, 2, 3, 3))


def test_im2col_forward_checks_its_arguments():
    svd = layer_svd(_randn(4, 2, 3, 3, seed=0))
    with pytest.raises(TypeError, match="svd must be a LayerSVD from layer_svd, got str"):
        im2col_forward(torch.zeros(1, 2, 5, 5), "svd")
    with pytest.raises(ValueError, match=r"x must be at least 3×3 pixels .* got 2×5"):
        im2col_forward(torch.zeros(1, 2, 2, 5), svd)


def test_count_relu_masks_refuses_nan():
    w = torch.tensor([[[[1.0]]], [[[-1.0]]]])
    with pytest.raises(ValueError, match="patches must be finite"):
        count_relu_masks(w, torch.tensor([[1.0], [float("nan")]]))
    with pytest.raises(ValueError, match="weight must be finite"):
        count_relu_masks(w * float("inf"), torch.ones(2, 1))


def test_numerical_rank_refuses_non_finite_values_and_bad_rtol():
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="singular_values must be finite"):
            numerical_rank(torch.tensor([bad, 1.0]))
    with pytest.raises(ValueError, match=r"singular_values must be non-negative, got -1\.0"):
        numerical_rank(torch.tensor([1.0, -1.0]))
    with pytest.raises(TypeError, match="rtol must be a real number, got bool True"):
        numerical_rank(torch.ones(2), rtol=True)
    with pytest.raises(TypeError, match="rtol must be a real number, got str"):
        numerical_rank(torch.ones(2), rtol="1e-3")
    with pytest.raises(ValueError, match=r"rtol must be a non-negative finite number, got -0\.1"):
        numerical_rank(torch.ones(2), rtol=-0.1)
    with pytest.raises(ValueError, match="rtol must be a finite number, got nan"):
        numerical_rank(torch.ones(2), rtol=float("nan"))
    assert numerical_rank(np.array([2.0, 1.0]), rtol=np.float32(0.6)) == 1
    assert numerical_rank(torch.tensor([2.0, 1.0]), rtol=0) == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"out_channel": 3}, ValueError, r"out_channel must be between 0 and 2 .* got 3"),
        ({"out_channel": -1}, ValueError, r"out_channel must be between 0 and 2 .* got -1"),
        ({"out_channel": True}, TypeError, "out_channel must be an int, got bool"),
        ({"out_channel": 1.0}, TypeError, "out_channel must be an int, got float"),
        ({"in_channel": 1}, ValueError, r"in_channel must be between 0 and 0 .* got 1"),
    ],
    ids=repr,
)
def test_rearranged_kernel_spectrum_checks_the_channels(kwargs, error, message):
    w1, w2 = _randn(2, 1, 2, 2, seed=0), _randn(3, 2, 2, 2, seed=1)
    with pytest.raises(error, match=message):
        rearranged_kernel_spectrum(w1, w2, **kwargs)


def test_rearranged_kernel_spectrum_accepts_numpy_and_torch_ints_and_refuses_nan():
    w1, w2 = _randn(2, 1, 2, 2, seed=0), _randn(3, 2, 2, 2, seed=1)
    expected = rearranged_kernel_spectrum(w1, w2, 2, 0)
    torch.testing.assert_close(rearranged_kernel_spectrum(w1, w2, np.int64(2), 0), expected)
    torch.testing.assert_close(rearranged_kernel_spectrum(w1, w2, torch.tensor(2)), expected)
    w2[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="w2 must be finite"):
        rearranged_kernel_spectrum(w1, w2)


def test_support_box_and_the_pruned_unit_on_the_stroke():
    from kronlib.relu import pruned_on_stroke, support_box

    kernel = torch.zeros(1, 8, 8)
    kernel[0, 2:5, 3:7] = 1.0
    assert support_box(kernel) == (2, 3, 3, 4)
    with pytest.raises(ValueError, match="all-zero"):
        support_box(torch.zeros(4, 4))
    x = torch.zeros(1, 8, 8)
    x[0, 6:8, 6:8] = 1.0  # ink in the bottom-right corner
    kernels = torch.zeros(3, 1, 8, 8)
    kernels[0, 0, 0:3, 0:3] = 1.0  # off, over blank canvas
    kernels[1, 0, 5:8, 5:8] = 1.0  # off, over the ink
    kernels[2, 0, 5:8, 5:8] = 1.0  # on: not a candidate
    values = torch.tensor([-1.0, -0.5, 2.0])
    assert pruned_on_stroke(values, kernels, x) == 1
    with pytest.raises(ValueError, match="switched-off"):
        pruned_on_stroke(torch.ones(3), kernels, x)


def test_low_rank_accuracy_replaces_one_layer_and_keeps_the_model():
    from kronlib.data import Digits
    from kronlib.spectral import low_rank_accuracy
    from kronlib.train import accuracy

    torch.manual_seed(0)
    model = TinyConvNet().eval()
    images = torch.rand(20, 1, 28, 28)
    with torch.no_grad():
        labels = model(images).argmax(1)
    digits = Digits(images, labels, "random")
    before = model.conv2.weight.detach().clone()
    result = low_rank_accuracy(model, "conv2", digits, [1, 16])
    assert result[16] == accuracy(model, digits) == 1.0  # full rank: the model itself
    assert torch.equal(model.conv2.weight, before)  # the model is untouched
    assert set(result) == {1, 16}
    with pytest.raises(ValueError, match="layer must name a Conv2d"):
        low_rank_accuracy(model, "fc", digits, [1])


def test_rank_enough_is_the_first_rank_from_which_on_the_floor_holds():
    from kronlib.spectral import rank_enough

    curve = {1: 0.50, 2: 0.95, 3: 0.89, 4: 0.96, 5: 0.97}
    assert rank_enough(curve, 0.9) == 4  # rank 2 is above, but 3 falls below again
    assert rank_enough(curve, 0.4) == 1
    assert rank_enough(curve, np.float64(0.97)) == 5
    assert rank_enough({8: 0.9, 2: 0.95, 4: 0.8}, 0.85) == 8  # order of the keys is not used
    with pytest.raises(ValueError, match=r"no rank is enough.*5.*0\.97.*0\.99"):
        rank_enough(curve, 0.99)
    with pytest.raises(ValueError, match="at least one rank"):
        rank_enough({}, 0.5)
    for bad in (True, "0.9", float("nan")):
        with pytest.raises((TypeError, ValueError), match="floor"):
            rank_enough(curve, bad)
