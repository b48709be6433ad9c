"""kronlib.virtual: the virtual matrix against torch.func.jacrev on random plain CNNs."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from kronlib.testing import jacobian
from kronlib.virtual import (
    UnsupportedLayerError,
    active_count,
    affine_output,
    chain,
    effective_kernels,
    virtual_matrix,
)


@st.composite
def plain_cnns(draw):
    """A random chain: conv blocks (ReLU/LeakyReLU, Max/Avg pool, BatchNorm), a linear head."""
    seed = draw(st.integers(0, 10_000))
    torch.manual_seed(seed)
    channels, size = draw(st.integers(1, 3)), draw(st.integers(8, 14))
    layers: list[nn.Module] = []
    c, h = channels, size
    for _ in range(draw(st.integers(1, 3))):
        k = draw(st.integers(1, 3))
        stride, padding, dilation = (
            draw(st.integers(1, 2)),
            draw(st.integers(0, 1)),
            draw(st.integers(1, 2)),
        )
        out = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
        if out < 2:
            break
        c_out = draw(st.integers(1, 4))
        layers.append(nn.Conv2d(c, c_out, k, stride, padding, dilation, bias=draw(st.booleans())))
        c, h = c_out, out
        if draw(st.booleans()):
            bn = nn.BatchNorm2d(c)
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.5, 0.5)
            layers.append(bn)
        layers.append(draw(st.sampled_from([nn.ReLU(), nn.LeakyReLU(0.1), nn.ReLU(inplace=True)])))
        pool = draw(st.sampled_from(["none", "max", "avg"]))
        if pool != "none" and h >= 2:
            layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
            h //= 2
    layers += [nn.Flatten(), nn.Linear(c * h * h, 5), nn.ReLU(), nn.Dropout(0.5), nn.Linear(5, 3)]
    model = nn.Sequential(*layers).double().eval()
    x = torch.randn(
        channels, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )
    return model, x


@given(plain_cnns())
def test_exact_virtual_matrix_matches_jacrev_and_reproduces_the_output(case):
    model, x = case
    reference = jacobian(model, x)
    for method in ("forward", "reverse"):
        J, offset = virtual_matrix(model, x, bias=True, method=method)
        torch.testing.assert_close(J, reference, rtol=1e-9, atol=1e-9)
        reproduced = (J * x).flatten(1).sum(1) + offset
        torch.testing.assert_close(reproduced, model(x[None])[0], rtol=1e-9, atol=1e-9)


def test_float32_agrees_to_1e5():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 3, 3),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(3 * 3 * 3, 4),
    ).eval()
    x = torch.randn(2, 12, 12)
    for method in ("forward", "reverse"):
        J, offset = virtual_matrix(model, x, bias=True, method=method)
        torch.testing.assert_close(J, jacobian(model, x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            (J * x).flatten(1).sum(1) + offset, model(x[None])[0], rtol=1e-5, atol=1e-5
        )


def test_data_independent_matrix_of_a_linear_net_is_its_jacobian():
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.AvgPool2d(2),
        nn.Conv2d(3, 2, 3),
        nn.Flatten(),
        nn.Linear(2 * 2 * 2, 4),
    ).double()
    x = torch.randn(1, 8, 8, dtype=torch.float64)
    for method in ("forward", "reverse"):
        J = virtual_matrix(model, input_shape=(1, 8, 8), method=method)
        torch.testing.assert_close(J, jacobian(model, x))


def test_data_independent_matrix_treats_relu_as_identity_and_maxpool_as_avgpool():
    torch.manual_seed(2)
    conv1, conv2 = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 1, 3)
    with_nonlinear = nn.Sequential(conv1, nn.ReLU(), nn.MaxPool2d(2), conv2).double()
    linear = nn.Sequential(conv1, nn.Identity(), nn.AvgPool2d(2), conv2).double()
    J = virtual_matrix(with_nonlinear, input_shape=(1, 12, 12))
    torch.testing.assert_close(J, jacobian(linear, torch.zeros(1, 12, 12, dtype=torch.float64)))
    torch.testing.assert_close(
        J, virtual_matrix(with_nonlinear, input_shape=(1, 12, 12), method="reverse")
    )


def test_outputs_select_rows_and_offsets():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 6)).double()
    x = torch.randn(1, 6, 6, dtype=torch.float64)
    full, full_offset = virtual_matrix(model, x, bias=True)
    J, offset = virtual_matrix(model, x, outputs=[4, 1], bias=True, method="forward")
    torch.testing.assert_close(J, full[[4, 1]])
    torch.testing.assert_close(offset, full_offset[[4, 1]])
    assert virtual_matrix(model, x, outputs=2).shape == (1, 1, 6, 6)


@pytest.mark.parametrize("method", ["forward", "reverse"])
@pytest.mark.parametrize("given_x", [True, False])
def test_results_are_detached_from_the_models_graph(method, given_x):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    x = torch.randn(1, 6, 6) if given_x else None
    J, offset = virtual_matrix(model, x, input_shape=(1, 6, 6), bias=True, method=method)
    assert not J.requires_grad and not offset.requires_grad
    kernels = effective_kernels(model, x, "0", input_shape=(1, 6, 6))
    assert not kernels.kernels.requires_grad
    assert kernels.activations is None or not kernels.activations.requires_grad


def test_alexnet_top_classes_reproduce_the_logits():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.alexnet().eval()
    x = torch.rand(3, 224, 224)
    logits = net(x[None])[0]
    top = logits.topk(2).indices.tolist()
    J, offset = virtual_matrix(net, x, outputs=top, bias=True)
    assert J.shape == (2, 3, 224, 224)
    torch.testing.assert_close(
        (J * x).flatten(1).sum(1) + offset, logits[top], rtol=1e-4, atol=1e-4
    )
    assert [name for name, _ in chain(net)][13:16] == ["avgpool", "flatten", "classifier.0"]


def test_effective_kernels():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    x = torch.randn(1, 6, 6)
    result = effective_kernels(model, x, "0")
    assert result.kernels.shape == (3, 1, 6, 6) and result.positions.shape == (3, 2)
    for c in range(3):
        y, x_ = result.positions[c].tolist()
        assert result.activations[c, y, x_] == result.activations[c].max()
        assert torch.equal(result.kernels[c, 0, y : y + 3, x_ : x_ + 3], model[0].weight[c, 0])
    head = effective_kernels(model, x, "3")
    torch.testing.assert_close(head.kernels, virtual_matrix(model, x))
    assert result.active_channels() == int((result.activations.flatten(1).amax(1) > 0).sum())
    assert head.active_channels() == int((head.activations > 0).sum())
    blind = effective_kernels(model, input_shape=(1, 6, 6), layer="0", max_channels=2)
    assert blind.activations is None and blind.positions.tolist() == [[2, 2], [2, 2]]
    with pytest.raises(ValueError, match="only known for a given x"):
        blind.active_channels()


def test_refusals_name_the_layer_and_the_reason():
    x = torch.zeros(1, 6, 6)
    with pytest.raises(UnsupportedLayerError, match=r"layer '1' \(GELU\) .* smooth activation"):
        virtual_matrix(nn.Sequential(nn.Conv2d(1, 1, 3), nn.GELU()), x)
    with pytest.raises(UnsupportedLayerError, match=r"SiLU"):
        virtual_matrix(nn.Sequential(nn.Conv2d(1, 1, 3), nn.SiLU()), x)
    training_bn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    with pytest.raises(UnsupportedLayerError, match=r"training mode.* call model\.eval"):
        virtual_matrix(training_bn, x)
    net = nn.Sequential(nn.Conv2d(1, 1, 3))
    with pytest.raises(ValueError, match=r"input of shape \(3, 6, 6\) does not fit layer '0'"):
        virtual_matrix(net, torch.zeros(3, 6, 6))
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        virtual_matrix(net, torch.full((1, 6, 6), float("nan")))
    with pytest.raises(ValueError, match=r"give x .* or input_shape"):
        virtual_matrix(net)
    with pytest.raises(ValueError, match=r"outputs must index 16 entries"):
        virtual_matrix(net, x, outputs=[16])
    with pytest.raises(ValueError, match="method must be one of 'auto', 'forward', 'reverse'"):
        virtual_matrix(net, x, method="sideways")
    with pytest.raises(ValueError, match="layer must name an operation of the model"):
        effective_kernels(net, x, "conv9")


def test_forward_composition_rows_are_compose_kernels_placed_at_each_output():
    # for a plain conv chain, the row of output unit (o, y, x) is chapter 2's composed kernel
    # (conv_transpose2d of the two kernels) placed at (y, x) times the total stride
    from kronlib.conv import compose

    torch.manual_seed(5)
    conv1, conv2 = nn.Conv2d(2, 3, 3, stride=2, bias=False), nn.Conv2d(3, 2, 2, bias=False)
    model = nn.Sequential(conv1, conv2).double()
    J = virtual_matrix(model, input_shape=(2, 11, 11), method="forward")
    kernel, (stride, _), _ = compose(conv1.weight.double(), conv2.weight.double(), stride1=2)
    size = kernel.shape[-1]
    for o, y, x in [(0, 0, 0), (1, 2, 3), (0, 3, 1)]:
        placed = torch.zeros(2, 11, 11, dtype=torch.float64)
        placed[:, y * stride : y * stride + size, x * stride : x * stride + size] = kernel[o]
        torch.testing.assert_close(J[o, y, x], placed)


def test_affine_output_applies_the_virtual_matrix():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    x = torch.randn(2, 6, 6)
    J, offset = virtual_matrix(model, x, bias=True)
    torch.testing.assert_close(affine_output(J, x, offset), model(x[None])[0].detach())
    by_hand = torch.stack([(J[k] * x).sum() for k in range(4)])
    torch.testing.assert_close(affine_output(J, x), by_hand)
    with pytest.raises(ValueError, match=r"J must end with x's shape \(2, 5, 5\)"):
        affine_output(J, torch.randn(2, 5, 5))


def test_active_count_counts_channels_positive_somewhere():
    maps = torch.tensor([[[-1.0, 2.0]], [[-1.0, 0.0]], [[0.5, -3.0]]])  # (3, 1, 2)
    assert active_count(maps) == 2
    assert active_count(torch.tensor([1.0, -1.0, 0.0, 3.0])) == 2
