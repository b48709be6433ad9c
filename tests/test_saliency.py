"""kronlib.saliency: composition, saliency and the forward pass agree; Captum as a referee."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kronlib.models import LeNet5
from kronlib.saliency import (
    active_channels_by_layer,
    index_formula_row,
    saliency,
    verify_layers,
)
from kronlib.testing import jacobian
from kronlib.virtual import virtual_matrix

LAYERS = ["conv1", "pool1", "conv2", "pool2", "fc1", "fc2", "fc3"]


@pytest.fixture(scope="module")
def lenet_and_digit():
    torch.manual_seed(0)
    model = LeNet5().eval()
    x = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(1))
    return model, x


def test_saliency_is_the_jacobian_row(lenet_and_digit):
    model, x = lenet_and_digit
    torch.testing.assert_close(
        saliency(model, x, 3), virtual_matrix(model, x, outputs=3)[0], rtol=1e-5, atol=1e-6
    )


def test_captum_saliency_agrees(lenet_and_digit):
    captum = pytest.importorskip("captum.attr")
    model, x = lenet_and_digit
    ours = virtual_matrix(model, x, outputs=[0, 7])
    batch = x[None].repeat(2, 1, 1, 1).requires_grad_(True)
    theirs = captum.Saliency(model).attribute(batch, target=[0, 7], abs=False)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-6)


def test_verification_table_is_within_float32_tolerance(lenet_and_digit):
    model, x = lenet_and_digit
    rows = verify_layers(model, x, LAYERS)
    assert [row.layer for row in rows] == LAYERS
    assert rows[0].unit == (0, 14, 14) and rows[4].unit == (60,)
    for row in rows:
        assert row.kronecker_vs_saliency < 1e-5
        assert row.kronecker_vs_forward < 1e-4
        assert row.saliency_vs_forward < 1e-4
    with pytest.raises(ValueError, match="layer must be one of"):
        verify_layers(model, x, ["conv9"])


@pytest.mark.parametrize("masked", [False, True])
def test_index_formula_matches_both_computations(masked):
    g = torch.Generator().manual_seed(2)
    w1 = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    w2 = torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64)
    x = torch.randn(2, 11, 11, generator=g, dtype=torch.float64)
    relu = nn.ReLU() if masked else nn.Identity()
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, bias=False), relu, nn.Conv2d(3, 2, 2, bias=False)
    ).double()
    net[0].weight.data, net[2].weight.data = w1, w2
    mask = (F.conv2d(x[None], w1, stride=2)[0] > 0) if masked else None
    row = index_formula_row(w1, w2, (1, 2, 3), (2, 11, 11), stride1=2, mask=mask)
    flat = 1 * 16 + 2 * 4 + 3  # output (1, 2, 3) of a 2×4×4 map
    torch.testing.assert_close(row, virtual_matrix(net, x, outputs=flat, method="forward")[0])
    torch.testing.assert_close(row, saliency(net, x, flat))


def test_active_channels_by_layer(lenet_and_digit):
    model, x = lenet_and_digit
    counts = active_channels_by_layer(model, x, ["relu1", "relu3"])
    with torch.no_grad():
        h = F.relu(model.conv1(x[None]))[0]
    assert counts[0] == int((h.flatten(1).amax(1) > 0).sum())
    assert 0 <= counts[1] <= 120
    with pytest.raises(ValueError, match="layers must be among"):
        active_channels_by_layer(model, x, ["nope"])


def test_maxpool_average_approximation_differs_from_the_exact_selection(lenet_and_digit):
    model, x = lenet_and_digit
    logits = model(x[None])[0].detach()
    exact, b = virtual_matrix(model, x, bias=True)
    approx, b_approx = virtual_matrix(model, x, bias=True, maxpool="average")
    exact_error = ((exact * x).flatten(1).sum(1) + b - logits).abs().max()
    approx_error = ((approx * x).flatten(1).sum(1) + b_approx - logits).abs().max()
    assert exact_error < 1e-4 < approx_error
    reverse = virtual_matrix(model, x, bias=True, maxpool="average", method="reverse")
    torch.testing.assert_close(reverse[0], approx)
    torch.testing.assert_close(reverse[1], b_approx)
    with pytest.raises(ValueError, match="maxpool must be one of 'select', 'average'"):
        virtual_matrix(model, x, maxpool="median")


def test_residual_block_is_identity_plus_the_composed_path():
    torch.manual_seed(3)
    body = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 1, 3, padding=1))

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = body

        def forward(self, inp):
            return inp + self.body(inp)

    block = Residual()
    x = torch.randn(1, 7, 7)
    whole = virtual_matrix(nn.Sequential(block), x)  # the engine follows the sum itself
    path, offset = virtual_matrix(body, x, bias=True)
    J = torch.eye(49).reshape(1, 7, 7, 1, 7, 7) + path
    reference = jacobian(block, x)
    torch.testing.assert_close(J, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(whole, J, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        (J * x).flatten(3).sum(-1) + offset, block(x[None])[0], rtol=1e-5, atol=1e-5
    )


# -- validation: indices out of range, ints from numpy and torch -----------------------------------
@pytest.mark.parametrize(
    ("output", "error", "message"),
    [
        (10, ValueError, r"output must be between 0 and 9 \(the model gives 10 outputs\), got 10"),
        (-1, ValueError, r"output must be between 0 and 9 .* got -1"),
        (True, TypeError, "output must be an int, got bool True"),
        (1.0, TypeError, "output must be an int, got float 1.0"),
        ([1], TypeError, r"output must be an int, got list \[1\]"),
    ],
    ids=repr,
)
def test_saliency_checks_the_output_index(lenet_and_digit, output, error, message):
    model, x = lenet_and_digit
    with pytest.raises(error, match=message):
        saliency(model, x, output)


@pytest.mark.parametrize("three", [np.int64(3), np.int32(3), torch.tensor(3)], ids=repr)
def test_saliency_accepts_numpy_and_0d_torch_ints(lenet_and_digit, three):
    model, x = lenet_and_digit
    torch.testing.assert_close(saliency(model, x, three), saliency(model, x, 3))


def test_verify_layers_checks_channel_and_layers(lenet_and_digit):
    model, x = lenet_and_digit
    with pytest.raises(ValueError, match=r"channel must be between 0 and 5 .*'conv1'.* got 6"):
        verify_layers(model, x, ["conv1"], channel=6)
    with pytest.raises(ValueError, match=r"channel must be an int ≥ 0, got -1"):
        verify_layers(model, x, ["conv1"], channel=-1)
    with pytest.raises(TypeError, match="channel must be an int, got bool True"):
        verify_layers(model, x, ["conv1"], channel=True)
    with pytest.raises(TypeError, match="channel must be an int, got float"):
        verify_layers(model, x, ["conv1"], channel=1.0)
    with pytest.raises(TypeError, match=r"layers must be a sequence of layer names .* \['conv1'\]"):
        verify_layers(model, x, "conv1")
    with pytest.raises(TypeError, match="layers must be a sequence of layer names"):
        active_channels_by_layer(model, x, "relu1")
    (row,) = verify_layers(model, x, ["conv1"], channel=np.int64(5))
    assert row.unit == (5, 14, 14) and type(row.unit[0]) is int
    assert verify_layers(model, x, ["conv1"], channel=torch.tensor(5)) == [row]


def _two_layers():
    g = torch.Generator().manual_seed(2)
    w1 = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    w2 = torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64)
    return w1, w2  # on (2, 11, 11) at stride1=2: intermediate 3×5×5, output 2×4×4


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"position": (2, 0, 0)}, ValueError, r"position\[0\] .* between 0 and 1 .* got 2"),
        ({"position": (1, 4, 3)}, ValueError, r"position\[1\] .* between 0 and 3 .* got 4"),
        ({"position": (1, 3, -1)}, ValueError, r"position\[2\] .* between 0 and 3 .* got -1"),
        ({"position": (True, 1, 1)}, TypeError, r"position\[0\] must be an int, got bool"),
        ({"position": (1, 1)}, ValueError, r"position must be \(o, i, j\), got \(1, 1\)"),
        ({"position": 5}, TypeError, r"position must be \(o, i, j\), got int 5"),
        ({"input_shape": (3, 11, 11)}, ValueError, r"input_shape has 3 channels but w1 .* 2"),
        ({"input_shape": (2, 11.0, 11)}, TypeError, r"input_shape \(each size\) must be an int"),
        ({"input_shape": (11, 11)}, ValueError, r"input_shape must be \(C0, H, W\)"),
        ({"input_shape": (2, 2, 11)}, ValueError, r"input_shape \(2, 2, 11\) is too small"),
        ({"input_shape": (2, 4, 4)}, ValueError, r"input_shape \(2, 4, 4\) is too small"),
        ({"stride1": 0}, ValueError, "stride1 must be an int ≥ 1, got 0"),
        ({"stride2": 2.0}, TypeError, "stride2 must be an int, got float"),
        ({"mask": torch.ones(3, 2, 2)}, ValueError, r"mask must have shape \(3, 5, 5\)"),
        ({"mask": [[1.0]]}, TypeError, "mask must be a torch.Tensor or a numpy.ndarray"),
    ],
    ids=repr,
)
def test_index_formula_row_checks_its_arguments(kwargs, error, message):
    w1, w2 = _two_layers()
    arguments = {"position": (1, 2, 3), "input_shape": (2, 11, 11), "stride1": 2} | kwargs
    with pytest.raises(error, match=message):
        index_formula_row(w1, w2, **arguments)


def test_index_formula_row_checks_the_chain_and_accepts_numpy_ints():
    w1, w2 = _two_layers()
    with pytest.raises(ValueError, match="w2 must take as many input channels as w1 gives out"):
        index_formula_row(w1, w2[:, :2], (1, 2, 3), (2, 11, 11), stride1=2)
    expected = index_formula_row(w1, w2, (1, 2, 3), (2, 11, 11), stride1=2)
    position = (np.int64(1), torch.tensor(2), np.int32(3))
    got = index_formula_row(w1, w2, position, np.array([2, 11, 11]), stride1=np.int64(2))
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(
        index_formula_row(w1, w2, (1, 2, 3), (2, 11, 11), 2, mask=np.ones((3, 5, 5), bool)),
        expected,
    )


def test_layer_names_may_come_from_any_iterable(lenet_and_digit):
    model, x = lenet_and_digit
    names = {"conv1": 0, "fc1": 1}
    assert verify_layers(model, x, names.keys()) == verify_layers(model, x, ["conv1", "fc1"])
    counts = active_channels_by_layer(model, x, (name for name in ["relu1", "relu3"]))
    assert counts == active_channels_by_layer(model, x, ["relu1", "relu3"])
