"""kronlib.saliency: composition, saliency and the forward pass agree; Captum as a referee."""

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
