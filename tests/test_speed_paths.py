"""The engine's fast paths against torch.func.jacrev: trace cache, rules bound once per trace.

Each fast path is checked on the defect classes found before: a module instance used twice,
float32 constants in float64 arithmetic, in-place layers, layer variants (BatchNorm without
affine parameters, subclasses overriding forward) and state changed between calls.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kronlib.testing import jacobian, relative_error
from kronlib.virtual import UnsupportedLayerError, effective_kernels, virtual_matrix


def assert_exact(model: nn.Module, x: torch.Tensor) -> None:
    """Both methods agree with jacrev to 1e-10 relative (float64)."""
    reference = jacobian(model, x)
    for method in ("forward", "reverse"):
        assert relative_error(virtual_matrix(model, x, method=method), reference) < 1e-10


class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.scale = nn.Conv2d(1, 2, 3), 1.0

    def forward(self, x):
        return F.relu(self.conv(x) * self.scale - 0.5)


def test_a_float_attribute_changed_many_times_is_followed():
    # a float freed and another allocated at the same address must not pass for the old one
    torch.manual_seed(0)
    model = _Scaled().double()
    x = torch.randn(1, 6, 6, dtype=torch.float64)
    for step in range(12):
        model.scale = 0.5 + step * 0.25
        assert_exact(model, x)


def test_weights_changed_in_place_and_replaced_are_followed():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3)).double()
    x = torch.randn(1, 6, 6, dtype=torch.float64)
    assert_exact(model, x)
    with torch.no_grad():
        model[0].weight.mul_(-2.0)
        model[3].bias.add_(1.0)
    assert_exact(model, x)
    model[0].weight = nn.Parameter(torch.randn(2, 1, 3, 3, dtype=torch.float64))
    assert_exact(model, x)
    model[3] = nn.Linear(32, 5).double()
    assert_exact(model, x)


def test_submodules_replaced_after_a_call_are_followed():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2)).double()
    x = torch.randn(1, 6, 6, dtype=torch.float64)
    assert_exact(model, x)
    model[1] = nn.LeakyReLU(0.3)
    assert_exact(model, x)
    model[2] = nn.AvgPool2d(2)
    assert_exact(model, x)


def test_dtype_conversion_after_a_call_is_followed():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.LeakyReLU(0.1), nn.Conv2d(2, 1, 3))
    virtual_matrix(model, torch.randn(1, 7, 7))
    model.double()
    assert_exact(model, torch.randn(1, 7, 7, dtype=torch.float64))


def test_hooks_added_after_a_call_are_refused_and_removal_is_seen():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    x = torch.randn(1, 6, 6)
    virtual_matrix(model, x)
    handle = model[1].register_forward_hook(lambda module, inp, out: out * 2)
    with pytest.raises(UnsupportedLayerError, match="forward hooks"):
        virtual_matrix(model, x)
    handle.remove()
    virtual_matrix(model, x)


def test_batchnorm_switched_to_training_after_a_call_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, affine=False)).double().eval()
    x = torch.randn(1, 6, 6, dtype=torch.float64)
    assert_exact(model, x)
    model.train()
    with pytest.raises(UnsupportedLayerError, match="batch statistics"):
        virtual_matrix(model, x)
    model.eval()
    with torch.no_grad():
        model[1].running_var.fill_(4.0)  # buffers changed in place: seen by the bound rule
    assert_exact(model, x)


def test_a_subclass_forward_set_after_a_call_is_traced():
    class Shifted(nn.ReLU):
        pass

    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), Shifted()).double()
    x = torch.randn(1, 6, 6, dtype=torch.float64)
    assert_exact(model, x)
    Shifted.forward = lambda self, inp: F.relu(inp - 0.25)  # now code of its own
    try:
        assert_exact(model, x)
    finally:
        del Shifted.forward


def test_one_module_twice_in_place_and_effective_kernels_stay_exact():
    torch.manual_seed(5)
    relu = nn.ReLU(inplace=True)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), relu, nn.Conv2d(3, 3, 3, padding=1), relu
    ).double()
    x = torch.randn(1, 6, 6, dtype=torch.float64)
    for _ in range(2):  # the second call runs on the cached trace and bound rules
        assert_exact(model, x)
        kernels = effective_kernels(model, x, "2").kernels
        full = jacobian(model[:3], x)  # (3, 6, 6, 1, 6, 6)
        where = effective_kernels(model, x, "2").positions
        picked = torch.stack([full[c, p[0], p[1]] for c, p in enumerate(where.tolist())])
        assert relative_error(kernels, picked) < 1e-10


# -- the convolution's transpose: every kernel branch is the same map -----------------------------
CONV_CASES = [
    # (in_channels, out_channels, kernel, stride, padding, dilation, groups, input side)
    (1, 6, 5, 1, 0, 1, 1, 12),  # LeNet's first layer: one input channel
    (1, 3, 3, 1, 1, 1, 1, 7),
    (3, 8, 3, 1, 1, 1, 1, 9),  # RGB
    (2, 4, 3, 1, 2, 1, 1, 6),  # padding = kernel - 1
    (6, 16, 5, 1, 0, 1, 1, 14),
    (3, 4, 4, 2, 1, 1, 1, 11),  # strided (odd size: output padding)
    (4, 4, 3, 1, 1, 2, 2, 8),  # dilation and groups
]


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
@pytest.mark.parametrize("kind", ["depthwise", "columns", "flipped", "transposed"])
def test_every_transpose_kernel_matches_vjp_in_float64(monkeypatch, case, kind):
    from kronlib.rules import conv as conv_rule
    from kronlib.rules.base import Policy

    c_in, c_out, k, stride, padding, dilation, groups, side = case
    natural = conv_rule.transpose_kernel
    plain = stride == 1 and dilation == 1 and groups == 1 and padding <= k - 1
    if kind != "transposed" and (not plain or (kind == "depthwise" and c_in != 1)):
        pytest.skip("the branch does not apply to this layer")
    monkeypatch.setattr(conv_rule, "transpose_kernel", lambda *args: kind)
    torch.manual_seed(6)
    layer = nn.Conv2d(c_in, c_out, k, stride, padding, dilation, groups).double()
    x = torch.randn(1, c_in, side, side, dtype=torch.float64)
    cot = torch.randn(3, *layer(x).shape[1:], dtype=torch.float64)
    (mine,) = conv_rule.Conv.from_module(layer).linearise([x], Policy(exact=True)).pullback(cot)
    _, vjp = torch.func.vjp(layer, x.expand(3, -1, -1, -1))
    assert relative_error(mine, vjp(cot)[0]) < 1e-13
    assert natural(layer.weight, (stride,) * 2, (dilation,) * 2, groups, (padding,) * 2) in (
        "depthwise",
        "columns",
        "flipped",
        "transposed",
    )


def test_float32_kernel_choice_and_result():
    from kronlib.rules.conv import transpose_kernel

    def kind(c_in, dtype=torch.float32, stride=1):
        weight = torch.zeros(4, c_in, 3, 3, dtype=dtype)
        return transpose_kernel(weight, (stride, stride), (1, 1), 1, (1, 1))

    assert [kind(1), kind(3), kind(16)] == ["depthwise", "columns", "flipped"]
    assert kind(1, torch.float64) == kind(3, stride=2) == "transposed"
    # each float32 branch inside a network, against jacrev in float32 and in float64
    torch.manual_seed(7)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.LeakyReLU(0.1),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2),
        nn.Flatten(),
        nn.Linear(32, 5),
    )
    x = torch.randn(1, 10, 10)
    J = virtual_matrix(model, x, method="reverse")
    assert relative_error(J, jacobian(model, x)) < 1e-5
    double = copy.deepcopy(model).double()
    exact = jacobian(double, x.double())
    assert relative_error(J.double(), exact) < 1e-5
    assert_exact(double, x.double())


# -- rows overwritten in place only where nothing else holds them ----------------------------------
class _Fork(nn.Module):
    """One tensor read by a sum and by gates on both sides of it, and BatchNorm after a sum."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.relu = nn.ReLU()

    def forward(self, x):
        h = self.conv(x)
        a = self.relu(h) + h  # h's rows come back twice: through the gate and directly
        b = self.bn(a + self.relu(a))  # a sum's rows go back through a gate and directly
        return F.relu(b) + F.leaky_relu(b, 0.2)


def test_in_place_rows_where_tensors_are_shared():
    torch.manual_seed(8)
    model = _Fork().double().eval()
    model.bn.running_var.fill_(2.0)
    assert_exact(model, torch.randn(2, 5, 5, dtype=torch.float64))


def test_pull_back_leaves_its_seeds_alone():
    from kronlib import graph
    from kronlib.rules import Policy

    torch.manual_seed(9)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.BatchNorm2d(2).eval()).double()
    x = torch.randn(1, 6, 6, dtype=torch.float64)
    traced = graph.trace(model)
    lin = graph.linearise(traced, x, Policy(exact=True))
    for name in ("2", "1"):
        seed = torch.randn(3, 2, 4, 4, dtype=torch.float64)
        before = seed.clone()
        graph.pull_back(lin, {traced.names[name]: seed})
        assert torch.equal(seed, before)


def test_effective_kernels_sent_back_in_groups_of_rows():
    torch.manual_seed(10)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 50), nn.ReLU()
    ).double()
    x = torch.randn(1, 8, 8, dtype=torch.float64)
    full = jacobian(model[:5], x)  # (50, 1, 8, 8)
    order = list(range(49, -1, -1))
    kernels = effective_kernels(model, x, "4", channels=order).kernels
    assert kernels.shape == (50, 1, 8, 8)
    assert relative_error(kernels, full[order]) < 1e-12
