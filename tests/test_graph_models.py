"""kronlib.virtual on graphs: torchvision CNNs, random residual/concatenation nets, refusals.

The referee is torch.func.jacrev (kronlib.testing.jacobian) in float64; for the data-independent
matrix, jacrev of a copy of the model whose ReLUs are identities and max-pools average pools.
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from kronlib.testing import jacobian
from kronlib.virtual import (
    UnsupportedLayerError,
    effective_kernels,
    kronecker_terms,
    path_terms,
    virtual_matrix,
)


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """The model in float64, eval mode, with random BatchNorm statistics and affine parameters."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            if module.affine:
                module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.bias.data.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
    return model.double().eval()


def linearised_copy(model: nn.Module) -> nn.Module:
    """A referee for the data-independent matrix: ReLU → Identity, MaxPool → AvgPool."""
    twin = copy.deepcopy(model)
    for name, module in list(twin.named_modules()):
        replacement = None
        if isinstance(module, nn.ReLU | nn.LeakyReLU):
            replacement = nn.Identity()
        elif isinstance(module, nn.MaxPool2d):
            replacement = nn.AvgPool2d(
                module.kernel_size, module.stride, module.padding, module.ceil_mode
            )
        if replacement is not None:
            parent_name, _, child = name.rpartition(".")
            setattr(twin.get_submodule(parent_name) if parent_name else twin, child, replacement)
    return twin


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference over max abs reference (0 when both are exactly zero)."""
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


TORCHVISION = [
    ("resnet18", 32),
    ("resnet34", 32),
    ("vgg11_bn", 32),
    ("vgg16", 32),
    ("alexnet", 63),
    ("squeezenet1_1", 48),
]


@pytest.mark.parametrize(("name", "size"), TORCHVISION)
def test_torchvision_models_exact_and_data_independent(name, size):
    torch.manual_seed(0)
    model = randomised(getattr(torchvision.models, name)(num_classes=10))
    x = torch.randn(3, size, size, dtype=torch.float64)
    J, offset = virtual_matrix(model, x, bias=True)
    assert relative_error(J, jacobian(model, x)) < 1e-10
    logits = model(x[None])[0]
    assert relative_error((J * x).flatten(1).sum(1) + offset, logits) < 1e-10
    rows = virtual_matrix(model, x, outputs=logits.argmax())
    torch.testing.assert_close(rows[0], J[int(logits.argmax())], rtol=1e-12, atol=1e-14)
    free, free_offset = virtual_matrix(model, input_shape=(3, size, size), bias=True)
    twin = linearised_copy(model)
    assert relative_error(free, jacobian(twin, torch.zeros_like(x))) < 1e-10
    assert relative_error(free_offset, twin(torch.zeros_like(x)[None])[0]) < 1e-10


def test_mobilenet_is_refused_for_its_smooth_activation():
    model = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    with pytest.raises(UnsupportedLayerError, match=r"Hardswish.*smooth activation"):
        virtual_matrix(model, torch.randn(3, 32, 32))


def test_batchnorm_without_running_statistics_or_in_training_is_refused():
    x = torch.randn(1, 6, 6)
    no_stats = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False))
    with pytest.raises(UnsupportedLayerError, match=r"layer '1' \(BatchNorm2d\).*batch statistics"):
        virtual_matrix(no_stats.eval(), x)
    with pytest.raises(UnsupportedLayerError, match="training mode"):
        virtual_matrix(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train(), x)


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow
            return self.conv(x)
        return -self.conv(x)


class _Gelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return F.gelu(self.conv(x))


class _Product(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(x) * self.conv(x)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (_Branchy(), r"_Branchy cannot be traced by torch\.fx.*control flow"),
        (_Gelu(), r"operation 'gelu' \(gelu\) is not supported: it is a smooth activation"),
        (_Product(), r"operation 'mul' \(mul\).*multiplies two input-dependent tensors"),
    ],
)
def test_refusals_name_the_operation_and_the_reason(model, message):
    with pytest.raises(UnsupportedLayerError, match=message):
        virtual_matrix(model, torch.randn(1, 6, 6))


def test_forward_hooks_are_refused():
    net = nn.Sequential(nn.Conv2d(1, 2, 3))
    net[0].register_forward_hook(lambda module, inp, out: out * 2)
    with pytest.raises(UnsupportedLayerError, match="forward hooks"):
        virtual_matrix(net, torch.randn(1, 6, 6))


# -- defects found by trying the package as a new user would (regressions) ------------------------
def test_one_module_instance_used_twice():
    torch.manual_seed(1)
    relu, pool = nn.ReLU(), nn.MaxPool2d(2)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), relu, pool, nn.Conv2d(3, 2, 3, padding=1), relu, pool
    ).double()
    x = torch.randn(1, 8, 8, dtype=torch.float64)
    for method in ("forward", "reverse"):
        J = virtual_matrix(model, x, method=method)
        assert relative_error(J, jacobian(model, x)) < 1e-12


def test_leaky_slope_stays_float64():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.LeakyReLU(0.1), nn.Conv2d(3, 1, 3)).double()
    x = torch.randn(1, 7, 7, dtype=torch.float64)
    for method in ("forward", "reverse"):
        assert relative_error(virtual_matrix(model, x, method=method), jacobian(model, x)) < 1e-14


def test_in_place_relu_first_does_not_touch_the_callers_input():
    model = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(1, 1, 3))
    x = torch.randn(1, 6, 6)
    before = x.clone()
    virtual_matrix(model, x)
    effective_kernels(model, x, "1")
    kronecker_terms(model, x, cut="1")
    torch.testing.assert_close(x, before, rtol=0, atol=0)


def test_batchnorm_without_affine_parameters():
    model = randomised(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, affine=False)))
    x = torch.randn(1, 6, 6, dtype=torch.float64)
    J, offset = virtual_matrix(model, x, bias=True)
    assert relative_error(J, jacobian(model, x)) < 1e-12
    assert relative_error((J * x).flatten(3).sum(-1) + offset, model(x[None])[0]) < 1e-12


class _StandardisedConv(nn.Conv2d):
    """A weight-standardised convolution: its own forward."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / w.std(dim=(1, 2, 3), keepdim=True)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class _ShiftedReLU(nn.ReLU):
    """max(x − 0.5, 0): its own forward."""

    def forward(self, x):
        return F.relu(x - 0.5)


def test_subclasses_that_override_forward_are_traced_not_taken_for_their_base():
    torch.manual_seed(3)
    model = nn.Sequential(_StandardisedConv(1, 3, 3), _ShiftedReLU(), nn.Conv2d(3, 1, 3)).double()
    x = torch.randn(1, 7, 7, dtype=torch.float64)
    J, offset = virtual_matrix(model, x, bias=True)
    assert relative_error(J, jacobian(model, x)) < 1e-12
    assert relative_error((J * x).flatten(3).sum(-1) + offset, model(x[None])[0]) < 1e-12


def test_float64_numpy_input_on_a_float32_model():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    x = np.random.default_rng(0).standard_normal((1, 6, 6))
    J = virtual_matrix(model, x)
    assert J.dtype == torch.float64
    reference = jacobian(copy.deepcopy(model).double(), torch.from_numpy(x))
    assert relative_error(J, reference) < 1e-12


def test_outputs_accept_integers_of_every_kind_and_refuse_the_rest():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(32, 4))
    x = torch.randn(1, 6, 6)
    full = virtual_matrix(model, x)
    integers = (2, np.int64(2), np.array(2), torch.tensor(2), [2], np.array([2]), torch.tensor([2]))
    for outputs in integers:
        torch.testing.assert_close(virtual_matrix(model, x, outputs=outputs)[0], full[2])
    for bad in (True, 0.7, "1", [1.0], torch.tensor(1.5), np.array(1.5), np.array(True)):
        with pytest.raises(TypeError, match="outputs"):
            virtual_matrix(model, x, outputs=bad)
    for bad in ([], [4], [-1], np.zeros((1, 1), dtype=int)):
        with pytest.raises(ValueError, match="outputs"):
            virtual_matrix(model, x, outputs=bad)


def test_shape_and_count_arguments_are_checked():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    with pytest.raises(TypeError, match="input_shape must be a sequence"):
        virtual_matrix(model, input_shape=5)
    with pytest.raises(ValueError, match=r"input_shape \(each size\) must be an int ≥ 1"):
        virtual_matrix(model, input_shape=(1, -6, 6))
    with pytest.raises(TypeError, match=r"input_shape \(each size\) must be an int"):
        virtual_matrix(model, input_shape=(1, 6.5, 6))
    x = torch.randn(1, 6, 6)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_channels must be an int ≥ 1"):
            effective_kernels(model, x, "0", max_channels=bad)
    for bad in (1.5, True, "2", np.array(1.5)):
        with pytest.raises(TypeError, match="max_channels must be an int"):
            effective_kernels(model, x, "0", max_channels=bad)
    for count in (np.array(1), np.uint8(1), torch.tensor(1)):  # 0-d integers of every kind
        assert len(effective_kernels(model, x, "0", max_channels=count).kernels) == 1
        assert len(effective_kernels(model, x, "0", channels=count).kernels) == 1
    with pytest.raises(TypeError, match="bias must be True or False"):
        virtual_matrix(model, x, bias=1)
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        virtual_matrix(lambda t: t, x)


# -- effective kernels on graphs ------------------------------------------------------------------
def test_effective_kernels_inside_a_resnet_are_rows_of_the_cut():
    torch.manual_seed(6)
    model = randomised(torchvision.models.resnet18(num_classes=10))
    x = torch.randn(3, 32, 32, dtype=torch.float64)
    kernels = effective_kernels(model, x, "layer2.0.conv2", max_channels=4)
    assert kernels.kernels.shape == (4, 3, 32, 32)

    def unit(inp, c, p):
        h = create_feature_extractor(model, {"layer2.0.conv2": "h"})(inp[None])["h"][0]
        return h[c].flatten()[p]

    for c in range(4):
        where = int(
            kernels.positions[c, 0] * kernels.activations.shape[2] + kernels.positions[c, 1]
        )
        reference = torch.func.grad(lambda inp, c=c, w=where: unit(inp, c, w))(x)
        assert relative_error(kernels.kernels[c], reference) < 1e-10


# -- Kronecker terms ------------------------------------------------------------------------------
def test_kronecker_terms_sum_to_the_rows_and_off_channels_are_exactly_zero():
    torch.manual_seed(7)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 3),
    ).double()
    with torch.no_grad():
        model[0].bias[2] = -100.0  # channel 2 of the first ReLU is off everywhere
    x = torch.randn(1, 10, 10, dtype=torch.float64)
    split = kronecker_terms(model, x, cut="1", outputs=[0, 2])
    assert split.cut == "1" and split.terms.shape == (6, 2, 1, 10, 10)
    torch.testing.assert_close(split.terms.sum(0), virtual_matrix(model, x, outputs=[0, 2]))
    assert not split.active[2] and split.active.dtype == torch.bool
    assert bool((split.terms[2] == 0).all())
    free = kronecker_terms(model, cut="3", input_shape=(1, 10, 10))
    assert bool(free.active.all())
    torch.testing.assert_close(free.terms.sum(0), virtual_matrix(model, input_shape=(1, 10, 10)))


def test_kronecker_terms_of_a_stride_equals_kernel_chain_are_kronecker_products():
    from kronlib.conv import kron_kernel

    torch.manual_seed(8)
    w1, w2 = (
        torch.randn(3, 1, 2, 2, dtype=torch.float64),
        torch.randn(1, 3, 3, 3, dtype=torch.float64),
    )
    model = nn.Sequential(
        nn.Conv2d(1, 3, 2, stride=2, bias=False), nn.Conv2d(3, 1, 3, stride=3, bias=False)
    ).double()
    model[0].weight.data, model[1].weight.data = w1, w2
    split = kronecker_terms(model, cut="0", outputs=0, input_shape=(1, 6, 6))
    for m in range(3):
        expected = kron_kernel(w1[m : m + 1], w2[:, m : m + 1])[0]
        torch.testing.assert_close(split.terms[m, 0], expected)


def test_kronecker_terms_refuse_a_cut_that_a_skip_connection_goes_around():
    model = randomised(torchvision.models.resnet18(num_classes=10))
    with pytest.raises(ValueError, match="does not separate the input from the output"):
        kronecker_terms(model, cut="layer1.0.conv1", input_shape=(3, 32, 32), outputs=0)
    with pytest.raises(ValueError, match="cut must name an operation"):
        kronecker_terms(model, cut="layer9", input_shape=(3, 32, 32))


# -- path terms -----------------------------------------------------------------------------------
class _Block(nn.Module):
    def __init__(self, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, stride, 1)
        self.bn = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.project = nn.Conv2d(channels, channels, 1, stride) if stride > 1 else nn.Identity()

    def forward(self, x):
        return self.project(x) + self.conv2(F.relu(self.bn(self.conv1(x))))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.blocks = nn.Sequential(_Block(2), _Block(2, stride=2), _Block(2))
        self.head = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        return self.head(torch.flatten(self.blocks(F.relu(self.stem(x))), 1))


def test_path_terms_sum_to_j_and_match_the_paths_enumerated_by_hand():
    torch.manual_seed(9)
    net = randomised(_Net())
    x = torch.randn(1, 8, 8, dtype=torch.float64)
    terms = path_terms(net, x)
    assert sorted(terms) == [0, 1, 2, 3]
    J = virtual_matrix(net, x)
    torch.testing.assert_close(sum(terms.values()), J, rtol=1e-12, atol=1e-12)
    # data-independent: the network is linear, so each path is a product of linear maps
    free = path_terms(net, input_shape=(1, 8, 8))
    twin = linearised_copy(net)

    def only(block: _Block, part: str):
        def forward(h):
            return block.project(h) if part == "shortcut" else block.conv2(block.bn(block.conv1(h)))

        return forward

    def path(choice):
        def fn(inp):
            h = twin.stem(inp[None])
            for block, part in zip(twin.blocks, choice, strict=True):
                h = only(block, part)(h)
            return twin.head(torch.flatten(h, 1))[0]

        return fn

    import itertools

    zero = torch.zeros(1, 8, 8, dtype=torch.float64)
    for k in range(4):
        expected = sum(
            torch.func.jacrev(path(choice))(zero)
            for choice in itertools.product(("shortcut", "branch"), repeat=3)
            if choice.count("branch") == k
        )
        assert relative_error(free[k], expected) < 1e-10


def test_path_terms_of_a_chain_and_of_resnet18():
    chain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2))
    x = torch.randn(1, 6, 6)
    terms = path_terms(chain, x)
    assert list(terms) == [0]
    torch.testing.assert_close(terms[0], virtual_matrix(chain, x))
    resnet = randomised(torchvision.models.resnet18(num_classes=10))
    image = torch.randn(3, 32, 32, dtype=torch.float64)
    by_length = path_terms(resnet, image, outputs=[3])
    assert sorted(by_length) == list(range(9))
    total = virtual_matrix(resnet, image, outputs=[3])
    assert relative_error(sum(by_length.values()), total) < 1e-10


def test_path_terms_refuse_a_sum_of_two_equally_deep_paths():
    class Twins(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3)

        def forward(self, x):
            return self.a(x) + self.b(x)

    with pytest.raises(UnsupportedLayerError, match=r"add.*1 layers each.*no shortcut"):
        path_terms(Twins(), input_shape=(1, 5, 5))


# -- property test on random graphs ---------------------------------------------------------------
class _RandomNet(nn.Module):
    """Blocks drawn by hypothesis: plain, residual (identity or projection) or concatenation."""

    def __init__(self, kinds, channels, settings_):
        super().__init__()
        self.kinds: list[str] = []
        self.blocks = nn.ModuleList()
        c = channels
        for kind, (stride, dilation, leaky, bn, pool) in zip(kinds, settings_, strict=True):
            act = nn.LeakyReLU(0.1) if leaky else nn.ReLU()
            norm = nn.BatchNorm2d(c) if bn else nn.Identity()
            if kind == "plain":
                block = nn.Sequential(nn.Conv2d(c, c, 3, stride, dilation, dilation), norm, act)
            elif kind == "residual":
                block = nn.ModuleDict(
                    {
                        "branch": nn.Sequential(
                            nn.Conv2d(c, c, 3, stride, 1),
                            norm,
                            act,
                            nn.Conv2d(c, c, 3, 1, dilation, dilation),
                        ),
                        "shortcut": nn.Conv2d(c, c, 1, stride) if stride > 1 else nn.Identity(),
                    }
                )
            else:
                block = nn.ModuleDict(
                    {
                        "a": nn.Sequential(nn.Conv2d(c, 1, 1, stride), act),
                        "b": nn.Sequential(
                            nn.Conv2d(c, max(c - 1, 1), 3, stride, 1),
                            nn.BatchNorm2d(max(c - 1, 1)) if bn else nn.Identity(),
                        ),
                    }
                )
            self.blocks.append(block)
            self.kinds.append(kind)
            if kind == "concat":
                c = 1 + max(c - 1, 1)
            if pool:
                maker = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
                self.blocks.append(maker(2, ceil_mode=True))
                self.kinds.append("pool")
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * c, 3))

    def forward(self, x):
        for kind, block in zip(self.kinds, self.blocks, strict=True):
            if kind == "residual":
                x = block["shortcut"](x) + block["branch"](x)
            elif kind == "concat":
                x = torch.cat([block["a"](x), block["b"](x)], dim=1)
            else:
                x = block(x)
        return self.head(x)


@st.composite
def random_graphs(draw):
    seed = draw(st.integers(0, 10_000))
    torch.manual_seed(seed)
    n = draw(st.integers(1, 3))
    kinds = tuple(draw(st.sampled_from(["plain", "residual", "concat"])) for _ in range(n))
    settings_ = [
        (
            draw(st.integers(1, 2)),
            draw(st.integers(1, 2)),
            draw(st.booleans()),
            draw(st.booleans()),
            draw(st.sampled_from([None, "max", "avg"])),
        )
        for _ in range(n)
    ]
    channels = draw(st.integers(1, 3))
    net = randomised(_RandomNet(kinds, channels, settings_), seed)
    x = torch.randn(
        channels, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )
    return net, x


@settings(max_examples=25, deadline=None)
@given(random_graphs())
def test_random_graphs_against_jacrev(case):
    net, x = case
    reference = jacobian(net, x)
    for method in ("forward", "reverse"):
        J, offset = virtual_matrix(net, x, bias=True, method=method)
        assert relative_error(J, reference) < 1e-10
        assert relative_error((J * x).flatten(1).sum(1) + offset, net(x[None])[0]) < 1e-10
    assert relative_error(sum(path_terms(net, x).values()), reference) < 1e-10


class _Functional(nn.Module):
    """Functional and in-place forms, reshapes by view/reshape, a constant shift and a scale."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(8, 3, 3, stride=2)
        self.fc = nn.Linear(3 * 3 * 3, 5)

    def forward(self, x):
        h = F.relu(self.conv1(x), inplace=True)
        h = torch.cat([torch.relu(h), F.leaky_relu(self.bn(h) - 0.25, 0.2)], dim=1)
        h = F.max_pool2d(h, 2, ceil_mode=True) * 0.5 + 1.0
        h = F.avg_pool2d(self.conv2(h).relu_(), 1)
        h = h.view(h.size(0), -1).reshape(-1, 27)
        return self.fc(torch.flatten(h, 1)) / 3.0


def test_functional_and_in_place_forms_against_jacrev():
    torch.manual_seed(10)
    model = randomised(_Functional())
    x = torch.randn(1, 13, 13, dtype=torch.float64)
    before = x.clone()
    reference = jacobian(model, x)
    for method in ("forward", "reverse"):
        J, offset = virtual_matrix(model, x, bias=True, method=method)
        assert relative_error(J, reference) < 1e-12
        assert relative_error((J * x).flatten(1).sum(1) + offset, model(x[None])[0]) < 1e-12
    torch.testing.assert_close(x, before, rtol=0, atol=0)


def test_effective_kernels_of_chosen_channels_follow_their_order():
    torch.manual_seed(11)
    model = nn.Sequential(nn.Conv2d(1, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 16, 4))
    x = torch.randn(1, 6, 6)
    every = effective_kernels(model, x, "1")
    chosen = effective_kernels(model, x, "1", channels=[3, 0])
    torch.testing.assert_close(chosen.kernels, every.kernels[[3, 0]])
    assert chosen.positions.tolist() == every.positions[[3, 0]].tolist()
    units = effective_kernels(model, x, "3", channels=np.array([2]))
    torch.testing.assert_close(units.kernels[0], virtual_matrix(model, x, outputs=2)[0])
    with pytest.raises(ValueError, match="channels must index 5 entries"):
        effective_kernels(model, x, "1", channels=[5])
    with pytest.raises(ValueError, match="not both"):
        effective_kernels(model, x, "1", channels=[1], max_channels=2)


# -- found by an adversarial review: each was a silent wrong answer or a raw error ----------------
def _exact(model, x):
    """J and offset agree with jacrev and reproduce the output, in both methods."""
    reference = jacobian(model, x)
    out = model(x[None].clone())[0]
    for method in ("forward", "reverse"):
        J, offset = virtual_matrix(model, x, bias=True, method=method)
        assert relative_error(J, reference) < 1e-12, method
        flat = J.reshape(*out.shape, -1) @ x.flatten()
        assert relative_error(flat + offset, out) < 1e-12, method


class _InPlace(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.c0, self.c = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.c0(x)
        if self.kind == "relu result unused":
            F.relu(y, inplace=True)
            return y
        if self.kind == "mul_":
            y.mul_(2)
            return y
        if self.kind == "pre-activation":
            identity = y
            out = self.c(self.relu(y))
            return out + identity
        z = y  # "augmented assignment": y += … writes into z too
        y += x
        return z * 1.0


@pytest.mark.parametrize("kind", ["relu result unused", "mul_", "pre-activation", "iadd"])
def test_in_place_writes_are_seen_by_later_uses(kind):
    torch.manual_seed(12)
    _exact(_InPlace(kind).double(), torch.randn(1, 5, 5, dtype=torch.float64))


def test_tensor_attributes_other_than_metadata_are_operations():
    class Transposed(nn.Module):
        def forward(self, x):
            return x + x.mT

    with pytest.raises(UnsupportedLayerError, match="getattr"):
        virtual_matrix(Transposed(), torch.randn(1, 4, 4))

    class Padded(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x, extra: bool = False):  # a default argument is a constant
            h = self.conv(x)
            return torch.cat([h, torch.zeros_like(h)], axis=1)

    _exact(Padded().double(), torch.randn(1, 6, 6, dtype=torch.float64))


def test_the_trace_cache_follows_the_models_python_state():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.scale = nn.Conv2d(1, 1, 3), 2.0
            self.register_buffer("shift", torch.ones(1, 1, 4, 4, dtype=torch.float64))

        def forward(self, x):
            h = self.conv(x) * self.scale + self.shift
            return F.relu(h) if self.training else h

    model = Scaled().double().train()
    x = torch.randn(1, 6, 6, dtype=torch.float64)
    virtual_matrix(model, x)  # traced in training mode
    model.eval()
    _exact(model, x)
    model.scale = 3.0
    _exact(model, x)
    model.shift = torch.full((1, 1, 4, 4), -5.0, dtype=torch.float64)
    _exact(model, x)


def test_replaced_forwards_and_global_hooks_are_refused():
    conv = nn.Conv2d(1, 1, 3)
    conv.forward = lambda inp: 2 * nn.Conv2d.forward(conv, inp)
    with pytest.raises(UnsupportedLayerError):
        virtual_matrix(nn.Sequential(conv), torch.randn(1, 5, 5))

    class Sigmoid(nn.ReLU):
        forward = staticmethod(torch.sigmoid)

    with pytest.raises(UnsupportedLayerError):
        virtual_matrix(nn.Sequential(nn.Conv2d(1, 1, 3), Sigmoid()), torch.randn(1, 5, 5))
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: o)
    try:
        with pytest.raises(UnsupportedLayerError, match="global forward hooks"):
            virtual_matrix(nn.Sequential(nn.Conv2d(1, 1, 3)), torch.randn(1, 5, 5))
    finally:
        handle.remove()


def test_values_are_rounded_as_the_model_rounds_them():
    torch.manual_seed(13)

    class Fused(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)

        def forward(self, x):
            b = self.conv(x)
            return F.relu(torch.add(-0.1 * b, b, alpha=0.1))  # zero up to torch's rounding

    _exact(Fused().double(), torch.randn(1, 4, 4, dtype=torch.float64))

    class Thirds(nn.Module):
        def forward(self, x):
            return F.max_pool2d(x / 3, 2)

    ties = torch.tensor([[[0.1 * 3, 0.3, 0.7, 0.7], [0.2, 0.1, 0.7, 0.7]]], dtype=torch.float64)
    _exact(Thirds(), ties)


def test_active_dropout_half_models_and_images_without_channels_are_refused():
    with pytest.raises(UnsupportedLayerError, match="dropout is active"):
        virtual_matrix(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).train(), torch.randn(4))
    with pytest.raises(TypeError, match="float32 or float64"):
        virtual_matrix(nn.Sequential(nn.Linear(4, 4)).half(), torch.randn(4))
    with pytest.raises(ValueError, match=r"takes images of shape \(C, H, W\)"):
        virtual_matrix(nn.Sequential(nn.Conv2d(1, 1, 3)), torch.randn(6, 6))


def test_float32_constants_are_computed_in_float64_for_a_float64_input():
    class Affine(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)
            self.log_scale = nn.Parameter(torch.tensor(0.3))

        def forward(self, x):
            return self.conv(x) * torch.exp(self.log_scale) + 1 / 3

    torch.manual_seed(14)
    model = Affine()
    x = torch.randn(1, 5, 5, dtype=torch.float64)
    J, offset = virtual_matrix(model, x, bias=True)
    twin = copy.deepcopy(model).double()
    assert relative_error(J, jacobian(twin, x)) < 1e-14
    assert relative_error((J * x).flatten(3).sum(-1) + offset, twin(x[None])[0]) < 1e-14


def test_a_module_called_twice_has_one_name_per_call():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return self.conv(F.relu(self.conv(x)))

    model, x = Twice(), torch.randn(1, 5, 5)
    with pytest.raises(ValueError, match=r"'conv:1', .*'conv:2'"):
        effective_kernels(model, x, "conv")
    first = effective_kernels(model, x, "conv:1")
    assert first.activations.shape == (1, 5, 5)


def test_active_means_the_channel_carries_part_of_the_rows():
    model = nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), nn.Flatten(), nn.Linear(27, 2))
    split = kronecker_terms(model, torch.zeros(1, 5, 5), cut="0")  # conv output is zero here
    assert bool(split.active.all())
    assert all(bool(split.terms[m].ne(0).any()) for m in range(3))


def test_reflect_padding_follows_the_padding_torch_uses():
    conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect").double()
    conv.padding = (0, 0)  # torch keeps padding with its precomputed reflect amounts
    _exact(nn.Sequential(conv), torch.randn(1, 6, 6, dtype=torch.float64))


def test_kronecker_terms_follow_in_place_writes():
    # the shortcut reads the tensor the in-place ReLU wrote into, so every path passes the ReLU
    torch.manual_seed(15)
    model = _InPlace("pre-activation").double()
    x = torch.randn(1, 5, 5, dtype=torch.float64)
    split = kronecker_terms(model, x, cut="relu", outputs=[0, 7])
    torch.testing.assert_close(split.terms.sum(0), virtual_matrix(model, x, outputs=[0, 7]))
    with pytest.raises(ValueError, match="does not separate"):
        kronecker_terms(model, x, cut="c", outputs=[0])


def test_a_module_placed_twice_in_sequentials_is_named_by_its_places():
    from kronlib.virtual import chain, prefix

    torch.manual_seed(27)
    relu, pool = nn.ReLU(), nn.MaxPool2d(2)
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), relu, pool),
        nn.Conv2d(2, 3, 3, padding=1),
        relu,
        pool,
    ).double()
    x = torch.randn(1, 8, 8, dtype=torch.float64)
    names = [name for name, _ in chain(model)]
    assert names == ["0.0", "0.1", "0.2", "1", "2", "3"]
    for name in names:  # the names chain() gives, each its own call
        result = effective_kernels(model, x, name)
        full = jacobian(prefix(model, name), x)
        reference = torch.stack([full[(c, *p)] for c, p in enumerate(result.positions.tolist())])
        assert relative_error(result.kernels, reference) < 1e-12, name
