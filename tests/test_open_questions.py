"""Chapter 7's tools: term norms, windowed rows, pruning, bootstrap, region radius, attention."""

import copy
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from kronlib import kronecker_terms, path_terms, virtual_matrix
from kronlib.attention import SoftmaxAttention
from kronlib.data import Digits
from kronlib.models import DeepCNN, DigitResNet, LeNet5, ResidualBlock
from kronlib.pruning import ChannelMask, prune_channels, pruning_curve
from kronlib.regions import (
    activation_pattern,
    linearisation_error,
    region_radius,
    same_pattern,
)
from kronlib.saliency import active_channels_by_layer, active_counts
from kronlib.stats import (
    auc,
    bootstrap_subset_difference,
)
from kronlib.terms import effective_term_count, fold_windowed, term_norms, windowed_rows
from kronlib.testing import assert_relative_close, jacobian
from kronlib.virtual import chain, prefix
from kronlib.viz.experiments import (
    distributions_figure,
    intervals_figure,
    path_terms_figure,
    pruning_figure,
    radius_figure,
    terms_figure,
)
from kronlib.zoo import BOOK_MODELS, LENET_WIDTHS, lenet_of_width


def _lenet(seed: int = 0, **kwargs) -> nn.Sequential:
    torch.manual_seed(seed)
    return LeNet5(**kwargs).double().eval()


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)).double()


def _deep_random_bn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = DeepCNN(32).double()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


# -- models ---------------------------------------------------------------------------------------
def test_digit_resnet_is_exact_and_splits_into_four_path_lengths():
    torch.manual_seed(0)
    net = DigitResNet().double()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.uniform_(-0.3, 0.3)
    net.eval()
    x = _images(1)[0]
    J = virtual_matrix(net, x)
    assert_relative_close(J, jacobian(net, x), rtol=1e-10)
    paths = path_terms(net, x, outputs=[3])
    assert sorted(paths) == [0, 1, 2, 3]
    assert_relative_close(sum(paths.values()), J[3:4], rtol=1e-10)
    assert net(torch.zeros(2, 1, 32, 32).double()).shape == (2, 10)


def test_residual_block_shortcuts_and_argument_checks():
    assert isinstance(ResidualBlock(4, 4).shortcut, nn.Identity)
    assert isinstance(ResidualBlock(4, 8, 2).shortcut, nn.Sequential)
    assert ResidualBlock(4, 8, 2)(torch.zeros(1, 4, 8, 8)).shape == (1, 8, 4, 4)
    with pytest.raises(TypeError, match="stride"):
        ResidualBlock(4, 4, 1.5)
    with pytest.raises(ValueError, match="widths"):
        DigitResNet(widths=(8, 16))
    with pytest.raises(ValueError, match="input_size"):
        DigitResNet(input_size=30)


def test_lenet_channels_argument():
    net = LeNet5(channels=(3, 8))
    assert net.conv1.out_channels == 3 and net.conv2.out_channels == 8
    assert net.fc1.in_features == 8 * 5 * 5
    assert repr(LeNet5()) == repr(LeNet5(channels=(6, 16)))  # cache keys unchanged
    assert LeNet5(channels=(np.int64(2), torch.tensor(4))).conv2.out_channels == 4
    for bad in ((6,), "ab", (6, 0), (6, 2.0), (True, 4)):
        with pytest.raises((TypeError, ValueError), match="channels"):
            LeNet5(channels=bad)


def test_zoo_knows_the_new_networks_and_refuses_unknown_widths():
    assert "resnet" in BOOK_MODELS
    for c1, c2 in LENET_WIDTHS:
        if (c1, c2) != (6, 16):
            assert f"lenet5-c{c1}-{c2}" in BOOK_MODELS
    with pytest.raises(ValueError, match="channels"):
        lenet_of_width((5, 5))
    with pytest.raises(ValueError, match="channels"):
        lenet_of_width("6,16")


# -- term norms -----------------------------------------------------------------------------------
@pytest.mark.parametrize("cut", ["relu1", "pool1", "relu2", "fc1"])
def test_term_norms_match_kronecker_terms(cut):
    net = _lenet()
    images = _images(5)
    outputs = torch.tensor([0, 3, 9, 1, 1])
    norms = term_norms(net, images, cut=cut, outputs=outputs, batch_size=2)
    for n in range(5):
        split = kronecker_terms(net, images[n], cut=cut, outputs=int(outputs[n]))
        assert_relative_close(norms[n], split.terms.flatten(1).norm(dim=1), rtol=1e-10)
        assert torch.equal(norms[n] > 0, split.active)


def test_term_norms_with_batchnorm_shared_modules_and_inplace_relu():
    deep = _deep_random_bn()
    images = _images(3)
    norms = term_norms(deep, images, cut="relu3", outputs=np.int64(4))
    for n in range(3):
        split = kronecker_terms(deep, images[n], cut="relu3", outputs=4)
        assert_relative_close(norms[n], split.terms.flatten(1).norm(dim=1), rtol=1e-10)
    torch.manual_seed(1)
    relu = nn.ReLU(inplace=True)  # one instance used twice, in place
    chain = nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(1, 3, 3)),
                ("relu1", relu),
                ("conv2", nn.Conv2d(3, 4, 3)),
                ("relu2", relu),
                ("flatten", nn.Flatten()),
                ("fc", nn.Linear(4 * 6 * 6, 2)),
            ]
        )
    ).double()
    chain.train()  # no BatchNorm or Dropout: training mode changes nothing
    x = _images(2, size=10)
    kept = x.clone()
    norms = term_norms(chain, x, cut="conv2", outputs=torch.tensor(1))
    assert torch.equal(x, kept)  # the caller's input is untouched
    for n in range(2):
        split = kronecker_terms(chain, x[n], cut="conv2", outputs=1)
        assert_relative_close(norms[n], split.terms.flatten(1).norm(dim=1), rtol=1e-10)


def test_chain_keeps_a_module_instance_at_each_place_it_is_used():
    relu = nn.ReLU()
    model = nn.Sequential(
        OrderedDict(
            [("a", nn.Conv2d(1, 1, 1)), ("r1", relu), ("b", nn.Conv2d(1, 1, 1)), ("r2", relu)]
        )
    )
    assert [name for name, _ in chain(model)] == ["a", "r1", "b", "r2"]
    x = torch.randn(2, 1, 3, 3)
    with torch.no_grad():
        assert torch.equal(prefix(model, "r2")(x), model(x))
    assert active_counts(model, x, ["r2"]).shape == (2, 1)


def test_term_norms_refuses_bad_arguments():
    net = _lenet()
    images = _images(2)
    with pytest.raises(TypeError, match="outputs"):
        term_norms(net, images, cut="relu2", outputs=True)
    with pytest.raises(TypeError, match="outputs"):
        term_norms(net, images, cut="relu2", outputs=1.0)
    with pytest.raises(ValueError, match="outputs"):
        term_norms(net, images, cut="relu2", outputs=[1, 2, 3])
    with pytest.raises(ValueError, match="outputs"):
        term_norms(net, images, cut="relu2", outputs=10)
    with pytest.raises(ValueError, match="cut"):
        term_norms(net, images, cut="relu9", outputs=1)
    with pytest.raises(TypeError, match="batch_size"):
        term_norms(net, images, cut="relu2", outputs=1, batch_size=2.0)
    deep = _deep_random_bn().train()
    with pytest.raises(ValueError, match="eval"):
        term_norms(deep, images, cut="relu2", outputs=1)


def test_effective_term_count():
    counts = effective_term_count(torch.tensor([[1.0, 0, 0], [1, 1, 1], [0, 0, 0], [2, 2, 0]]))
    assert counts.tolist() == pytest.approx([1.0, 3.0, 0.0, 2.0])
    for bad in (torch.tensor([-1.0, 1.0]), torch.tensor([float("nan")]), torch.tensor(1.0)):
        with pytest.raises(ValueError, match="norms"):
            effective_term_count(bad)


# -- windowed rows ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(1, 3, 5),
        nn.Conv2d(2, 4, 3, stride=2, padding=1),
        nn.Conv2d(1, 2, 3, dilation=2, padding=2),
    ],
)
def test_windowed_rows_fold_back_to_the_exact_rows_with_rank_at_most_active(conv):
    torch.manual_seed(0)
    c_in = conv.in_channels
    net = nn.Sequential(
        OrderedDict(
            [
                ("conv", conv),
                ("relu", nn.ReLU()),
                ("pool", nn.MaxPool2d(2)),
                ("flatten", nn.Flatten()),
            ]
        )
    ).double()
    with torch.no_grad():
        size = net(torch.zeros(1, c_in, 12, 12).double()).shape[1]
    net.add_module("fc", nn.Linear(size, 3).double())
    net.eval()
    images = torch.randn(4, c_in, 12, 12, generator=torch.Generator().manual_seed(1)).double()
    rows = windowed_rows(net, images, outputs=[0, 1, 2, 2], batch_size=3)
    folded = fold_windowed(rows)
    for n, out in enumerate([0, 1, 2, 2]):
        assert_relative_close(folded[n], virtual_matrix(net, images[n], outputs=out)[0])
    assert (rows.ranks() <= rows.active.sum(1)).all()


def test_windowed_rows_refuses_a_first_layer_that_is_not_a_convolution():
    with pytest.raises(ValueError, match="first layer"):
        windowed_rows(
            nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval(), torch.zeros(1, 1, 2, 2), outputs=0
        )
    with pytest.raises(ValueError, match="images"):
        windowed_rows(_lenet(), torch.zeros(1, 32, 32), outputs=0)


# -- activity -------------------------------------------------------------------------------------
def test_active_counts_agree_with_the_one_input_version():
    net = _lenet(2)
    images = _images(4)
    layers = ["relu1", "relu2", "relu3"]
    counts = active_counts(net, images, layers, batch_size=3)
    for n in range(4):
        assert counts[n].tolist() == active_channels_by_layer(net, images[n], layers)
    units = active_counts(net, images, ["relu2", "relu4"], per="unit")
    with torch.no_grad():
        h = net[:5](images)
    assert units[:, 0].tolist() == (h > 0).flatten(1).sum(1).tolist()
    with pytest.raises(ValueError, match="per"):
        active_counts(net, images, layers, per="pixel")


# -- pruning --------------------------------------------------------------------------------------
def test_prune_channels_zeroes_exactly_those_channels_and_leaves_the_model_alone():
    net = _lenet(3)
    before = copy.deepcopy(net.state_dict())
    images = _images(3)
    pruned = prune_channels(net, "relu2", [1, np.int64(5)])
    with torch.no_grad():
        h = net[:5](images)
        h[:, [1, 5]] = 0
        expected = net[5:](h)
        assert torch.equal(pruned(images), expected)
        assert torch.equal(prune_channels(net, "relu2", [])(images), net(images))
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key])
    assert isinstance(pruned[1], ChannelMask)
    with pytest.raises(ValueError, match="channels"):
        prune_channels(net, "relu2", [16])
    with pytest.raises(ValueError, match="repeat"):
        prune_channels(net, "relu2", [1, 1])
    with pytest.raises(TypeError, match="channels"):
        prune_channels(net, "relu2", [True])


def test_pruning_removes_the_kronecker_term_of_the_channel():
    """Where no later mask changes, removing channel m removes exactly its term."""
    torch.manual_seed(0)
    net = nn.Sequential(
        OrderedDict([("conv", nn.Conv2d(1, 4, 3)), ("flatten", nn.Flatten())])
    ).double()
    net.add_module("fc", nn.Linear(4 * 6 * 6, 2).double())
    net.eval()
    x = _images(1, size=8)[0]
    split = kronecker_terms(net, x, cut="conv", outputs=0)
    pruned = prune_channels(net, "conv", [2])
    assert_relative_close(
        virtual_matrix(pruned, x, outputs=0)[0], split.terms.sum(0)[0] - split.terms[2, 0]
    )


def test_pruning_curve_has_one_accuracy_per_count():
    net = _lenet(4).float()
    digits = Digits(images=_images(20).float(), labels=torch.arange(20) % 10, source="test")
    curve = pruning_curve(net, "relu1", [0, 2, 4], digits)
    assert len(curve) == 4 and all(0 <= a <= 1 for a in curve)
    with torch.no_grad():
        hits = int((net(digits.images).argmax(1) == digits.labels).sum())
    assert curve[0] == hits / 20


# -- bootstrap ------------------------------------------------------------------------------------
def test_bootstrap_intervals_cover_and_are_deterministic():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(1.0, 1.0, 400), rng.normal(0.0, 1.0, 300)])
    first = np.arange(700) < 400
    interval = bootstrap_subset_difference(values, first)
    assert interval == bootstrap_subset_difference(values, first)
    truth = values[first].mean() - values[~first].mean()
    assert interval.low < truth < interval.high and interval.excludes(0)
    same = bootstrap_subset_difference(rng.normal(0, 1, 400), np.arange(400) % 2 == 0)
    assert not same.excludes(0)
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_subset_difference([1.0], [True])
    with pytest.raises(ValueError, match="finite"):
        bootstrap_subset_difference([1.0, float("nan")], [True, False])
    with pytest.raises(ValueError, match="level"):
        bootstrap_subset_difference([1.0, 2.0], [True, False], level=1.5)
    with pytest.raises(TypeError, match="resamples"):
        bootstrap_subset_difference([1.0, 2.0], [True, False], resamples=True)


def test_the_cluster_bootstrap_is_wider_when_groups_repeat_values():
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1, 200)
    first = rng.random(200) < 0.3
    values = np.tile(base, 3)  # every value three times: three placements of one digit
    flags = np.tile(first, 3)
    groups = np.tile(np.arange(200), 3)
    naive = bootstrap_subset_difference(values, flags)
    grouped = bootstrap_subset_difference(values, flags, groups)
    assert grouped.estimate == pytest.approx(naive.estimate)
    assert grouped.high - grouped.low > 1.4 * (naive.high - naive.low)
    alone = bootstrap_subset_difference(base, first, np.arange(200))
    assert alone.high - alone.low == pytest.approx(grouped.high - grouped.low, rel=0.2)
    with pytest.raises(ValueError, match="in_first"):
        bootstrap_subset_difference(base, np.ones(200, dtype=bool), np.arange(200))
    with pytest.raises(ValueError, match="groups"):
        bootstrap_subset_difference(base, first, np.zeros(200))


def test_auc():
    assert auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert auc([1.0, 1.0], [1.0, 1.0]) == 0.5
    with pytest.raises(ValueError, match="first"):
        auc([1.0], [1.0, 2.0])


# -- region radius --------------------------------------------------------------------------------
def _small_chain(activation: nn.Module, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(1, 4, 3, padding=1)),
                ("bn1", nn.BatchNorm2d(4)),
                ("act1", activation),
                ("pool1", nn.MaxPool2d(2, padding=1)),
                ("conv2", nn.Conv2d(4, 4, 3)),
                ("act2", activation),
                ("pool2", nn.AvgPool2d(2)),
                ("flatten", nn.Flatten()),
                ("fc", nn.Linear(4 * 1 * 1, 3)),
            ]
        )
    ).double()
    net.bn1.running_var.uniform_(0.5, 2.0)
    net.bn1.running_mean.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.mark.parametrize("activation", [nn.ReLU(), nn.LeakyReLU(0.1), nn.ReLU(inplace=True)])
def test_region_radius_is_where_the_pattern_changes(activation):
    net = _small_chain(activation)
    x = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(2)).double()
    kept = x.clone()
    directions = torch.randn(12, 1, 8, 8, generator=torch.Generator().manual_seed(3)).double()
    radius = region_radius(net, x, directions)
    assert torch.equal(x, kept)
    assert (radius > 0).all() and torch.isfinite(radius).all()
    base = activation_pattern(net, x[None])
    inside = activation_pattern(net, x + 0.999 * radius[:, None, None, None] * directions)
    outside = activation_pattern(net, x + 1.001 * radius[:, None, None, None] * directions)
    assert same_pattern(base, inside).all()
    assert not same_pattern(base, outside).any()
    # and the model is affine along the segment inside the region
    for k in range(3):
        errors = linearisation_error(net, x, directions[k], [0.5 * float(radius[k])])
        assert errors[0] < 1e-12


def test_region_radius_is_zero_on_a_max_pool_tie_and_per_input_points():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.MaxPool2d(2)).double().eval()
    with torch.no_grad():
        net[0].bias.fill_(1.0)  # a blank input ties every window at the bias
    flat = torch.zeros(1, 4, 4).double()
    directions = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(0)).double()
    assert (region_radius(net, flat, directions) == 0).all()
    points = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1)).double()
    one_by_one = torch.stack(
        [region_radius(net, p, d[None])[0] for p, d in zip(points, directions, strict=True)]
    )
    assert torch.equal(region_radius(net, points, directions), one_by_one)


def test_region_radius_refuses_what_it_cannot_follow():
    x, d = torch.zeros(1, 8, 8), torch.ones(2, 1, 8, 8)
    with pytest.raises(ValueError, match="GELU"):
        region_radius(nn.Sequential(nn.Conv2d(1, 1, 3), nn.GELU()).eval(), x, d)

    class ShiftedReLU(nn.ReLU):
        def forward(self, x):
            return super().forward(x - 1)

    with pytest.raises(ValueError, match="ShiftedReLU"):
        region_radius(nn.Sequential(nn.Conv2d(1, 1, 3), ShiftedReLU()).eval(), x, d)
    with pytest.raises(ValueError, match="eval"):
        region_radius(nn.Sequential(nn.Conv2d(1, 1, 3), nn.BatchNorm2d(1)), x, d)
    with pytest.raises(ValueError, match="running statistics"):
        bn = nn.BatchNorm2d(1, track_running_stats=False)
        region_radius(nn.Sequential(nn.Conv2d(1, 1, 3), bn).eval(), x, d)
    with pytest.raises(ValueError, match="directions"):
        region_radius(nn.Sequential(nn.Conv2d(1, 1, 3)).eval(), x, torch.ones(2, 1, 7, 7))


def test_linearisation_error_of_a_smooth_model_falls_like_the_square_of_the_step():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), nn.GELU(), nn.Linear(5, 2)).double()
    x, d = torch.randn(4).double(), torch.randn(4).double()
    errors = linearisation_error(net, x, d, [1e-2, 1e-3])
    assert 50 < errors[0] / errors[1] < 200
    with pytest.raises(ValueError, match="direction"):
        linearisation_error(net, x, torch.ones(3), [1e-2])
    with pytest.raises(TypeError, match="steps"):
        linearisation_error(net, x, d, ["0.1"])


# -- attention ------------------------------------------------------------------------------------
def test_attention_frozen_jacobian_is_the_jacobian_with_the_weights_held():
    head = SoftmaxAttention(3, seed=1)
    tokens = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)).double()
    weights = head.weights(tokens[None])[0].detach()
    held = torch.func.jacrev(lambda t: weights @ (t @ head.w_v))(tokens).detach()
    assert_relative_close(head.frozen_jacobian(tokens), held, rtol=1e-12)
    with torch.no_grad():
        output = head(tokens[None])[0]
    frozen = head.frozen_jacobian(tokens)
    assert_relative_close(torch.einsum("iajb,jb->ia", frozen, tokens), output, rtol=1e-12)
    full = jacobian(head, tokens)
    assert float((full - frozen).norm()) > 1e-3 * float(full.norm())
    assert torch.allclose(weights.sum(1), torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="tokens"):
        head.frozen_jacobian(torch.zeros(5, 4))
    with pytest.raises(TypeError, match="dim"):
        SoftmaxAttention(3.0)


# -- figures --------------------------------------------------------------------------------------
def test_chapter_seven_figures_build():
    assert len(terms_figure(torch.randn(3, 8, 8), torch.randn(8, 8)).axes) == 5
    assert distributions_figure({"a": torch.tensor([1, 2, 2]), "b": [3, 4]}, xlabel="n", maximum=5)
    assert pruning_figure({"x": [0.9, 0.8, 0.5]}, random=np.ones((2, 3)), channels=2)
    interval = bootstrap_subset_difference([1.0, 2.0, 3.0], [True, False, False])
    assert intervals_figure({"m": interval}, xlabel="d")
    assert path_terms_figure(
        torch.tensor([0.2, 0.8]), torch.randn(2, 3, 4, 4), counts=[1, 1], xlabel="share"
    )
    assert intervals_figure({"m": interval}, xlabel="d", percent=True)
    assert radius_figure({"r": torch.tensor([1e-3, 2e-3, 0.0])}, references={"x": 1.0})
    with pytest.raises(ValueError, match="labels"):
        terms_figure(torch.randn(3, 8, 8), torch.randn(8, 8), labels=["a"])
    with pytest.raises(TypeError, match="numbers"):
        pruning_figure({"x": ["a", object()]}, channels=1)


def test_projection_shares_sum_to_one_and_read_orthogonal_parts_as_energy():
    from kronlib.terms import projection_shares

    torch.manual_seed(0)
    parts = torch.randn(4, 3, 5, dtype=torch.float64)
    shares = projection_shares(parts)
    whole = parts.sum(0)
    for k in range(4):  # the definition, term by term
        expected = (parts[k] * whole).sum() / (whole * whole).sum()
        assert abs(float(shares[k] - expected)) < 1e-12
    assert abs(float(shares.sum()) - 1) < 1e-12
    assert torch.equal(projection_shares(list(parts)), shares)  # a sequence of parts
    orthogonal = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    assert torch.allclose(projection_shares(orthogonal), torch.tensor([9 / 25, 16 / 25]))
    assert float(projection_shares(torch.tensor([[2.0], [-1.0]]))[1]) == -1.0  # against J
    with pytest.raises(ValueError, match="sum to zero"):
        projection_shares(torch.tensor([[1.0, 2.0], [-1.0, -2.0]]))
    with pytest.raises(ValueError, match="one shape"):
        projection_shares([torch.zeros(2), torch.zeros(3)])
    with pytest.raises(ValueError, match="at least one part"):
        projection_shares([])
    with pytest.raises(ValueError, match="sum to zero"):
        projection_shares(torch.tensor([[float("nan")]]))
