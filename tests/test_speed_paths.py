"""The engine's fast paths against torch.func.jacrev: trace cache, rules bound once per trace.

Each fast path is checked on the defect classes found before: a module instance used twice,
float32 constants in float64 arithmetic, in-place layers, layer variants (BatchNorm without
affine parameters, subclasses overriding forward) and state changed between calls.
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kronlib.models import LeNet5
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


# -- the plain-chain loop against the graph walk -------------------------------------------------
def _walked(traced):
    """The same trace with the plain-chain loop switched off (and no rule bound yet)."""
    import dataclasses

    return dataclasses.replace(traced, chain=None, bound={})


def _chains():
    torch.manual_seed(11)
    relu = nn.ReLU(inplace=True)
    return [
        LeNet5(),
        LeNet5(batchnorm=True, activation="leaky").double().eval(),
        nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.Conv2d(1, 3, 3, padding=1),
            relu,
            nn.Dropout(0.3),
            nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect"),
            relu,  # one module twice
            nn.AvgPool2d(2),
            nn.Identity(),
            nn.Flatten(),
            nn.Linear(48, 7),
        )
        .double()
        .eval(),
    ]


@pytest.mark.parametrize("index", range(3))
def test_the_chain_loop_gives_what_the_graph_walk_gives(index):
    from kronlib import graph
    from kronlib.rules import Policy

    model = _chains()[index]
    dtype = next(model.parameters()).dtype
    x = torch.randn(1, 32, 32, dtype=dtype) if index < 2 else torch.randn(1, 8, 8, dtype=dtype)
    traced = graph.trace(model)
    assert traced.chain is not None and len(traced.chain) == len(traced.nodes) - 2
    for policy in (Policy(True), Policy(False), Policy(True, average_maxpool=True)):
        fast = graph.linearise(traced, x, policy)
        walked = graph.linearise(_walked(traced), x, policy)
        assert fast.chain and not walked.chain
        assert list(fast.steps) == list(walked.steps)
        assert fast.output is walked.output and fast.input is walked.input
        for node, value in walked.values.items():
            assert torch.equal(fast.values[node], value)
        for node in [*list(fast.steps)[::3], fast.output]:
            shape = fast.values[node].shape[1:]
            seed = torch.randn(5, *shape, dtype=dtype)
            before = seed.clone()
            rows = graph.pull_back(fast, {node: seed})
            assert torch.equal(rows, graph.pull_back(walked, {node: seed}))
            assert torch.equal(seed, before)  # the seed is never overwritten
            cut = graph.linearise(traced, x, policy, until=node)
            assert list(cut.steps)[-1] is node and cut.output is walked.output
            assert torch.equal(graph.pull_back(cut, {node: seed}), rows)
    assert_exact(model.double(), x.double())


def test_chains_the_loop_does_not_take():
    from kronlib import graph

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return self.conv(x) + x

    not_chains = [
        Twice(),
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.GELU()),  # a layer without a rule
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.ReLU(inplace=True)),  # into a view
        nn.Sequential(),
    ]
    for model in not_chains:
        assert graph.trace(model).chain is None
    with pytest.raises(UnsupportedLayerError, match="GELU"):
        virtual_matrix(not_chains[1], torch.randn(1, 5, 5))
    with pytest.raises(UnsupportedLayerError, match="shares memory with a view"):
        virtual_matrix(not_chains[2], torch.randn(1, 5, 5))
    with pytest.raises(UnsupportedLayerError, match="dropout is active"):
        virtual_matrix(
            nn.Sequential(nn.Conv2d(1, 1, 3), nn.Dropout()).train(), torch.randn(1, 5, 5)
        )


# -- the quick check of the trace cache ------------------------------------------------------------
def test_the_quick_cache_check_sees_every_change_the_key_sees():
    from kronlib._cache import traced

    class Plain(nn.ReLU):
        pass

    model = nn.Sequential(nn.Conv2d(1, 2, 3), Plain()).double()
    value = torch.ones(())
    last = traced(model)
    assert traced(model) is last  # nothing changed: the same trace

    def rename():
        del model[1].note
        model[1].other = value  # the same object, last in the dict: only a name differs

    changes = [
        lambda: setattr(model[1], "note", value),  # a new attribute
        rename,
        lambda: setattr(model[1], "__class__", nn.ReLU),  # another class, the same dicts
        lambda: setattr(model[1], "__class__", Plain),
        lambda: setattr(Plain, "threshold", 0.5),  # the class's namespace
        lambda: model[0].register_buffer("extra", torch.zeros(1)),
        lambda: model.eval(),  # the root's own attribute (and its children's)
        lambda: setattr(model, "scale", 2.0),
    ]
    for change in changes:
        change()
        again = traced(model)
        assert again is not last
        assert traced(model) is again
        last = again
    handle = model[0].register_forward_hook(lambda module, inp, out: out)
    with pytest.raises(UnsupportedLayerError, match="forward hooks"):
        traced(model)
    handle.remove()
    assert traced(model) is last  # the key is back to what it was


def test_the_finite_check_takes_large_inputs_and_refuses_nan_and_inf():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
    huge = torch.full((4,), 3e38)  # its float32 sum overflows, every entry is finite
    assert virtual_matrix(net, huge).shape == (1, 4)
    for bad in (float("inf"), float("-inf"), float("nan")):
        x = huge.clone()
        x[2] = bad
        with pytest.raises(ValueError, match="x contains NaN or inf"):
            virtual_matrix(net, x)


def test_max_pool_rows_where_overlapping_windows_pick_the_same_entry():
    # one large entry inside four 3×3 windows at stride 1: its row gets all four contributions
    model = nn.Sequential(nn.MaxPool2d(3, stride=1), nn.Flatten(), nn.Linear(9, 2)).double()
    x = torch.zeros(1, 5, 5, dtype=torch.float64)
    x[0, 2, 2] = 5.0
    x[0, 1, 3] = 4.0  # a second peak shared by two windows
    assert_exact(model, x)
    pooled = nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)).double()
    assert_exact(pooled, torch.randn(2, 7, 7, dtype=torch.float64))


def test_the_first_parameter_is_the_one_parameters_gives():
    from kronlib.virtual import _first_parameter

    shared = nn.Linear(2, 2)
    models = [
        nn.Sequential(nn.ReLU(), nn.Sequential(nn.Flatten(), shared), nn.Linear(3, 3)),
        nn.Sequential(nn.ReLU(), nn.Identity()),
        nn.Sequential(shared, shared),
        LeNet5(batchnorm=True),
    ]
    for model in models:
        assert _first_parameter(model) is next(model.parameters(), None)


def test_rows_go_back_through_a_large_linear_weight_in_slabs(monkeypatch):
    from kronlib.rules import linear

    torch.manual_seed(15)
    weight = torch.randn(1030, 2048, dtype=torch.float64)  # 16.9 MB: slabs, a short last one
    for n in (1, 2, 5, 16, 17):
        cot = torch.randn(n, 1030, dtype=torch.float64)
        assert relative_error(linear.rows_times_weight(cot, weight), cot @ weight) < 1e-13
    # in a network, with slabs for every linear layer, against jacrev
    monkeypatch.setattr(linear, "_SLAB_BYTES", 0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(75, 40), nn.ReLU(), nn.Linear(40, 9)
    ).double()
    x = torch.randn(1, 7, 7, dtype=torch.float64)
    for outputs in ([3, 1, 7], [2, 2], list(range(9))):
        J = virtual_matrix(model, x, outputs=outputs, method="reverse")
        assert relative_error(J, jacobian(model, x)[outputs]) < 1e-12


def test_positions_unravel_as_torch_does():
    from kronlib.virtual import _unravel

    for shape in [(7,), (3, 4), (2, 3, 5)]:
        flat = torch.randperm(int(torch.tensor(shape).prod()))
        expected = torch.stack(torch.unravel_index(flat, shape), dim=1)
        assert torch.equal(_unravel(flat, shape), expected)


# -- compiled plans of plain chains ----------------------------------------------------------------
def _planned_chains():
    torch.manual_seed(16)
    float32 = nn.Sequential(  # every float32 branch of the transposed convolution
        nn.Conv2d(1, 3, 3, padding=1),  # depthwise
        nn.ReLU(),
        nn.Conv2d(3, 4, 3, padding=1),  # columns
        nn.LeakyReLU(0.1),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1),  # flipped
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, stride=2),  # transposed
        nn.Flatten(),
        nn.Linear(32, 5),
    )
    return [*_chains(), float32]


def _planned_case(index: int) -> tuple[nn.Module, torch.Tensor]:
    """One of :func:`_planned_chains` and a random input that fits it, in its dtype."""
    model = _planned_chains()[index]
    side = {0: 32, 1: 32, 2: 8, 3: 10}[index]
    return model, torch.randn(1, side, side, dtype=next(model.parameters()).dtype)


@pytest.mark.parametrize("index", range(4))
def test_a_chain_plan_gives_what_the_general_path_gives_bit_for_bit(index):
    from kronlib import graph
    from kronlib._plan import compile_chain
    from kronlib.rules import Policy

    model, x = _planned_case(index)
    dtype = x.dtype
    traced = graph.trace(model)
    for policy in (Policy(True), Policy(False), Policy(True, average_maxpool=True)):
        lin = graph.linearise(traced, x, policy)
        plan = compile_chain(lin, policy)
        if lin.approximate:  # its offset needs every step: no plan
            assert plan is None
            continue
        value = lin.values[lin.output]
        assert plan.out_shape == tuple(value.shape[1:])
        for n in (1, 7):
            seed = torch.randn(n, *plan.out_shape, dtype=dtype)
            before, point = seed.clone(), x.clone()
            planned_value, rows = plan.rows(x, seed)
            assert torch.equal(planned_value, value)
            assert torch.equal(rows, graph.pull_back(lin, {lin.output: seed}))
            assert torch.equal(seed, before) and torch.equal(x, point)  # nothing overwritten
    # through virtual_matrix: the same bits as with plans switched off
    from kronlib import virtual

    for kwargs in ({}, {"outputs": [2, 0, 2]}, {"input_shape": x.shape}):
        point = None if "input_shape" in kwargs else x
        J, offset = virtual_matrix(model, point, bias=True, method="reverse", **kwargs)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(virtual, "compile_chain", lambda lin, policy: None)
            plain_J, plain_offset = virtual_matrix(
                copy.deepcopy(model), point, bias=True, method="reverse", **kwargs
            )
        assert torch.equal(J, plain_J) and torch.equal(offset, plain_offset)


def test_calls_after_the_first_take_the_plan(monkeypatch):
    from kronlib import virtual
    from kronlib._cache import traced

    torch.manual_seed(17)
    model = LeNet5().eval()
    x = torch.rand(1, 32, 32)
    first = virtual_matrix(model, x)
    (plan,) = traced(model).plans.values()

    def refuse(*args, **kwargs):
        raise AssertionError("the general path ran")

    monkeypatch.setattr(virtual, "linearise", refuse)
    assert torch.equal(virtual_matrix(model, x), first)
    assert relative_error(virtual_matrix(model, x), jacobian(model, x)) < 1e-5
    assert traced(model).plans == {next(iter(traced(model).plans)): plan}


def test_a_bug_in_a_stage_is_raised_not_hidden_by_the_general_path():
    """Only a layer that no longer fits (a RuntimeError) sends a call back to the general path."""
    import dataclasses

    from kronlib._cache import traced

    torch.manual_seed(17)
    model = LeNet5().eval()
    x = torch.rand(1, 32, 32)
    virtual_matrix(model, x)
    plans = traced(model).plans
    ((key, plan),) = plans.items()

    def broken(value):
        raise TypeError("a bug in a stage")

    plans[key] = dataclasses.replace(plan, runs=(broken, *plan.runs[1:]))
    with pytest.raises(TypeError, match="a bug in a stage"):
        virtual_matrix(model, x)


def _check_virtual_matrix(model: nn.Module, x: torch.Tensor, tolerance: float) -> None:
    J, offset = virtual_matrix(model, x, bias=True)
    assert relative_error(J, jacobian(model, x)) < tolerance
    out = model(x[None])[0].detach()
    assert relative_error((J.flatten(1) @ x.flatten()) + offset, out) < tolerance


def _check_kernels(model: nn.Module, x: torch.Tensor, tolerance: float, layers=("conv2", "fc3")):
    for layer in layers:
        result = effective_kernels(model, x, layer)
        reference = _kernels_reference(model, x, layer, result.positions)
        assert relative_error(result.kernels, reference) < tolerance, layer


def _check_all_kernels(model: nn.Module, x: torch.Tensor, tolerance: float) -> None:
    layers = ["fc3", "conv1", "pool2", "fc1", "fc2"]
    found = effective_kernels(model, x, layers)
    assert list(found) == layers
    for layer, result in found.items():
        reference = _kernels_reference(model, x, layer, result.positions)
        assert relative_error(result.kernels, reference) < tolerance, layer


@pytest.mark.parametrize("api", ["virtual_matrix", "effective_kernels", "several layers"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weights_changed_between_planned_calls_are_seen(dtype, api):
    from kronlib._cache import traced

    tolerance = 1e-10 if dtype == torch.float64 else 1e-5
    torch.manual_seed(18)
    model = LeNet5().to(dtype).eval()
    x = torch.rand(1, 32, 32, dtype=dtype)
    calls = {
        "virtual_matrix": _check_virtual_matrix,
        "effective_kernels": _check_kernels,
        "several layers": _check_all_kernels,
    }[api]

    def check() -> None:
        for _ in range(2):  # the call that may compile a plan, and one that takes it
            calls(model, x, tolerance)

    check()
    plans = traced(model).plans
    (plan,) = plans.values()
    with torch.no_grad():
        model.conv1.weight.mul_(2)  # in place: the same tensor, a new version
        model.fc2.bias.add_(0.5)
    check()
    model.fc1.weight.data.mul_(-1)  # through .data: the version counter does not move
    model.conv2.weight.data[:, :, 2, 2] = 3.0
    check()
    model.conv2.bias.data = torch.randn(16, dtype=dtype)  # the storage replaced
    check()
    assert list(plans.values()) == [plan]  # one plan all along
    # a weight of another shape (conv1 5×5 → 3×3: the chain still fits) makes another plan
    model.conv1.weight.data = torch.randn(6, 1, 3, 3, dtype=dtype)
    check()
    assert traced(model).plans is plans and list(plans.values()) != [plan]
    # one that no longer fits (7×7: fc1 would get 256 inputs, not 400): refused by name
    model.conv1.weight.data = torch.randn(6, 1, 7, 7, dtype=dtype)
    with pytest.raises(ValueError, match="fc1"):
        calls(model, x, tolerance)
    for _ in range(2):  # what comes before fc1 still fits: its kernels, planned or not
        _check_kernels(model, x, tolerance, layers=("pool1",))


def test_plans_by_input_shape_and_dtype():
    torch.manual_seed(19)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 2, 3, padding=1), nn.ReLU()
    )
    for _ in range(2):
        for side in (8, 11):
            for dtype in (torch.float32, torch.float64):
                x = torch.randn(2, side, side, dtype=dtype)
                J = virtual_matrix(model, x, method="reverse")
                tolerance = 1e-5 if dtype == torch.float32 else 1e-10
                assert relative_error(J, jacobian(model.to(dtype), x)) < tolerance
                model.float()


def test_a_plan_never_hands_out_its_own_identity_rows():
    # a chain of reshapes and identities sends the identity back as it is: J must be a copy
    model = nn.Sequential(nn.Flatten(), nn.Identity(), nn.Dropout()).eval()
    x = torch.randn(2, 3, 3)
    for _ in range(3):
        J = virtual_matrix(model, x, method="reverse")
        assert torch.equal(J.reshape(18, 18), torch.eye(18))
        J.mul_(5.0)  # the caller's to keep


def test_a_plan_keeps_only_small_identity_rows():
    from kronlib._cache import traced

    torch.manual_seed(20)
    small, large = LeNet5().eval(), nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU())
    x, y = torch.rand(1, 32, 32), torch.randn(1, 8, 8)
    virtual_matrix(large, y, outputs=[0, 5], method="reverse")
    (plan,) = traced(large).plans.values()
    assert plan.kept == {}  # a few rows: no identity made
    J = virtual_matrix(large, y, method="reverse")  # 128 × 128 rows: made, not kept
    assert plan.kept == {} and relative_error(J, jacobian(large, y)) < 1e-5
    virtual_matrix(small, x)
    (plan,) = traced(small).plans.values()
    assert plan.kept["identity"].shape == (10, 10)


# -- effective kernels by the plan ---------------------------------------------------------------
def _kernels_reference(model: nn.Module, x: torch.Tensor, layer: str, positions: torch.Tensor):
    """jacrev of each channel's unit at ``positions`` of the model cut after ``layer``."""
    from kronlib.virtual import prefix

    cut = prefix(model, layer)
    full = jacobian(cut, x)  # (*layer_shape, *in_shape)
    rows = []
    for channel, where in enumerate(positions.tolist()):
        rows.append(full[(channel, *where)])
    return torch.stack(rows)


@pytest.mark.parametrize("index", range(4))
def test_effective_kernels_by_the_plan_give_the_general_paths_bits(index):
    from kronlib import virtual
    from kronlib._cache import traced

    model, x = _planned_case(index)
    names = [n for n in traced(model).names if n in dict(model.named_modules())]
    plain = copy.deepcopy(model)
    for point, kwargs in ((x, {}), (None, {"input_shape": x.shape})):
        for layer in names:
            for _ in range(2):  # the call that compiles the plan, then one that takes it
                before = x.clone()
                planned = effective_kernels(model, point, layer, **kwargs)
                assert torch.equal(x, before)
                with pytest.MonkeyPatch.context() as patch:
                    patch.setattr(virtual, "compile_chain", lambda lin, policy: None)
                    general = effective_kernels(plain, point, layer, **kwargs)
                assert torch.equal(planned.kernels, general.kernels), layer
                assert torch.equal(planned.positions, general.positions), layer
    assert len(traced(model).plans) == 2  # exact at x, and data-independent
    assert traced(plain).plans == {}


def test_effective_kernels_take_the_plan_virtual_matrix_made(monkeypatch):
    from kronlib import virtual
    from kronlib._cache import traced

    torch.manual_seed(21)
    model = LeNet5().eval()
    x = torch.rand(1, 32, 32)
    virtual_matrix(model, x)
    (plan,) = traced(model).plans.values()

    def refuse(*args, **kwargs):
        raise AssertionError("the general path ran")

    monkeypatch.setattr(virtual, "linearise", refuse)
    for layer in ("conv1", "pool1", "conv2", "relu2", "pool2", "fc1", "fc2", "fc3"):
        result = effective_kernels(model, x, layer)
        reference = _kernels_reference(model, x, layer, result.positions)
        assert relative_error(result.kernels, reference) < 1e-5, layer
    assert list(traced(model).plans.values()) == [plan]


def test_effective_kernels_of_a_first_in_place_relu_leave_x_alone():
    torch.manual_seed(23)
    model = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(1, 3, 3), nn.ReLU(inplace=True))
    referee = copy.deepcopy(model)  # jacrev cannot differentiate in-place layers
    referee[0].inplace = referee[2].inplace = False
    x = torch.randn(1, 6, 6)
    before = x.clone()
    for _ in range(3):
        for layer in ("0", "1", "2"):
            result = effective_kernels(model, x, layer)
            assert torch.equal(x, before)
            reference = _kernels_reference(referee, x, layer, result.positions)
            assert relative_error(result.kernels, reference) < 1e-5


def test_a_plan_that_fails_on_the_way_back_gives_way_to_the_general_path():
    # a max-pool's kernel list edited in place changes no id: the trace and its plan stay, the
    # forward follows the model (the list is the module's), but the stride-2 convolution's
    # transpose was planned for the old size and fails going back
    torch.manual_seed(24)
    pool = nn.MaxPool2d(kernel_size=[2, 2], stride=[1, 1])
    model = nn.Sequential(nn.Conv2d(1, 3, 1), pool, nn.Conv2d(3, 4, 2, stride=2), nn.ReLU())
    model = model.double().eval()
    x = torch.randn(1, 10, 10, dtype=torch.float64)
    for step in range(4):
        if step == 2:
            pool.kernel_size[0] = pool.kernel_size[1] = 3
        result = effective_kernels(model, x, "3")
        reference = _kernels_reference(model, x, "3", result.positions)
        assert relative_error(result.kernels, reference) < 1e-12, step


# -- attributes computed when read, and padding that follows the kernel --------------------------
class _Standardised(nn.Module):
    """A weight standardised per output channel: a parametrization of ``weight``."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        flat = weight.flatten(1)
        return ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True)).view_as(weight)


class _LearnedSlope(nn.LeakyReLU):
    """A LeakyReLU whose slope is read from a parameter through a property."""

    def __init__(self):
        super().__init__()
        self.raw = nn.Parameter(torch.tensor(0.2, dtype=torch.float64))

    @property
    def negative_slope(self) -> float:
        return float(self.raw.detach())

    @negative_slope.setter
    def negative_slope(self, value: float) -> None:
        pass  # the slope is the parameter's


def test_parametrized_weights_and_computed_slopes_are_read_at_every_call():
    from torch.nn.utils import parametrize
    from torch.nn.utils.parametrizations import weight_norm

    from kronlib._cache import traced

    torch.manual_seed(25)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3), _LearnedSlope(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3), nn.ReLU()
    ).double()
    parametrize.register_parametrization(model[0], "weight", _Standardised())
    weight_norm(model[3])
    x = torch.randn(1, 12, 12, dtype=torch.float64)

    def check() -> None:
        for _ in range(2):  # a first call, and one that would take a plan
            assert relative_error(virtual_matrix(model, x), jacobian(model, x)) < 1e-10
            for layer in ("1", "4"):
                result = effective_kernels(model, x, layer)
                reference = _kernels_reference(model, x, layer, result.positions)
                assert relative_error(result.kernels, reference) < 1e-10

    check()
    with torch.no_grad():
        model[0].parametrizations.weight.original.mul_(torch.randn(3, 1, 3, 3).double())
        model[1].raw.fill_(-0.5)
    model[3].parametrizations.weight.original1.data.mul_(-3)  # weight_norm's direction
    check()
    assert traced(model).plans == {}  # a plan would hold the weights as they were


def test_same_padding_follows_a_kernel_swapped_through_data():
    torch.manual_seed(26)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding="same"), nn.ReLU(), nn.Conv2d(2, 2, 3))
    model = model.double()
    x = torch.randn(1, 9, 9, dtype=torch.float64)
    for kernel in (3, 5, 3):
        model[0].weight.data = torch.randn(2, 1, kernel, kernel, dtype=torch.float64)
        for _ in range(2):
            assert relative_error(virtual_matrix(model, x), jacobian(model, x)) < 1e-10
            result = effective_kernels(model, x, "2")
            reference = _kernels_reference(model, x, "2", result.positions)
            assert relative_error(result.kernels, reference) < 1e-10


# -- several layers at once ----------------------------------------------------------------------
LENET_LAYERS = ["conv1", "relu1", "pool1", "conv2", "pool2", "fc1", "relu3", "fc2", "fc3"]


@pytest.mark.parametrize("exact", [True, False])
def test_several_layers_give_what_one_layer_at_a_time_gives(exact, monkeypatch):
    from kronlib import virtual

    torch.manual_seed(28)
    model = LeNet5().double().eval()
    x = torch.rand(1, 32, 32, dtype=torch.float64)
    point, kwargs = (x, {}) if exact else (None, {"input_shape": x.shape})
    through = []
    original = virtual._through
    monkeypatch.setattr(virtual, "_through", lambda *a: through.append(a[1]) or original(*a))
    planned_calls = 0
    for order in (LENET_LAYERS, LENET_LAYERS[::-1]):
        for _ in range(2):  # the call that compiles the plan, and one that takes it
            through.clear()
            found = effective_kernels(model, point, order, **kwargs)
            assert list(found) == order
            for layer in order:
                alone = effective_kernels(model, point, layer, **kwargs)
                assert torch.equal(found[layer].positions, alone.positions)
                if found[layer].activations is not None:
                    assert torch.equal(found[layer].activations, alone.activations)
                # a layer after fc1 goes back to the deepest complete layer before it and
                # through its Jacobian: the same numbers up to the order of the sums
                close = relative_error(found[layer].kernels, alone.kernels)
                assert close < 1e-13 if layer in ("relu3", "fc2", "fc3") else close == 0, layer
            if through:  # the plan's calls: relu3 through fc1, fc2 through relu3, fc3 through fc2
                assert set(through) == {8, 9, 10}  # once per group of rows
                planned_calls += 1
    assert planned_calls == 3  # all but the first call


def test_several_layers_of_a_graph_and_the_arguments_they_take():
    torch.manual_seed(29)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)
            self.head = nn.Linear(72, 4)

        def forward(self, x):
            y = torch.relu(self.conv1(x))
            return self.head(torch.flatten(torch.relu(self.conv2(y) + x), 1))

    model = Block().double()
    x = torch.randn(2, 6, 6, dtype=torch.float64)
    found = effective_kernels(model, x, ["head", "conv1", "conv2"], max_channels=np.int64(1))
    for layer, result in found.items():
        alone = effective_kernels(model, x, layer, max_channels=1)
        assert torch.equal(result.kernels, alone.kernels) and len(result.kernels) == 1
    head = jacobian(model, x)[0]
    assert relative_error(found["head"].kernels[0], head) < 1e-12
    with pytest.raises(ValueError, match="channels names the channels of one layer"):
        effective_kernels(model, x, ["conv1", "conv2"], channels=[0])
    with pytest.raises(ValueError, match="at least one layer"):
        effective_kernels(model, x, [])
    with pytest.raises(ValueError, match="distinct"):
        effective_kernels(model, x, ["conv1", "conv1"])
    with pytest.raises(TypeError, match="layer names must be str"):
        effective_kernels(model, x, ["conv1", 2])
    with pytest.raises(ValueError, match="conv9"):
        effective_kernels(model, x, ["conv1", "conv9"])
