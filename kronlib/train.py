"""Deterministic training with an on-disk weight cache.

:func:`train` fits a model on MNIST with fixed seeds and a fixed thread count, so the same call
gives the same weights, and caches the result under a key made of everything that produced it:
the model's name and architecture, a fingerprint of the training and test data (so the data
source is part of it), the hyper-parameters and the torch version. A cache file that is corrupted
(its checksum does not match) or stale (its recorded key differs) is reported and retrained.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from kronlib.data import Digits, data_home, place_digits

__all__ = ["TrainConfig", "TrainResult", "accuracy", "train"]

_FORMAT_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train` (all part of the cache key).

    ``augment="place"`` trains on fresh random placements of the (centred) training digits
    every epoch (:func:`kronlib.data.place_digits`), seeded by ``seed`` and the epoch.
    """

    epochs: int = 8
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    threads: int = 2
    augment: str | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}")
        if self.augment not in (None, "place"):
            raise ValueError(f"augment must be None or 'place', got {self.augment!r}")


@dataclass
class TrainResult:
    """A trained model (in eval mode) and how it was obtained."""

    model: nn.Module
    test_accuracy: float
    history: list[dict] = field(default_factory=list)
    from_cache: bool = False
    seconds: float = 0.0
    path: Path | None = None


def accuracy(model: nn.Module, digits: Digits, batch_size: int = 1000) -> float:
    """Fraction of ``digits`` that ``model`` classifies correctly."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(digits), batch_size):
            logits = model(digits.images[start : start + batch_size])
            correct += int(
                (logits.argmax(dim=1) == digits.labels[start : start + batch_size]).sum()
            )
    return correct / len(digits)


def _fingerprint(digits: Digits) -> str:
    digest = hashlib.sha256()
    digest.update(digits.images.numpy().tobytes())
    digest.update(digits.labels.numpy().tobytes())
    return digest.hexdigest()


def _spec(name: str, model: nn.Module, train_data: Digits, test_data: Digits, config: TrainConfig):
    return {
        "format": _FORMAT_VERSION,
        "model": name,
        "architecture": repr(model),
        "train_data": _fingerprint(train_data),
        "test_data": _fingerprint(test_data),
        "config": asdict(config),
        "torch": str(torch.__version__),
    }


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_cached(path: Path, spec: dict, model: nn.Module) -> dict | None:
    """The cached record if it is intact and was made by ``spec``; otherwise None (and why)."""
    checksum = path.with_suffix(".sha256")
    if not path.exists():
        return None
    try:
        if not checksum.exists() or checksum.read_text().strip() != _file_sha256(path):
            raise ValueError("checksum mismatch")
        record = torch.load(path, weights_only=True)
        if record.get("spec") != spec:
            raise ValueError("it was made by a different model, data or configuration")
        model.load_state_dict(record["state_dict"])
    except Exception as error:  # any unreadable or mismatched file is retrained, not trusted
        print(f"cached weights at {path} are unusable ({error}); retraining")
        return None
    return record


def _save(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(record, partial)
    partial.replace(path)
    path.with_suffix(".sha256").write_text(_file_sha256(path) + "\n")


def train(
    name: str,
    build: Callable[[], nn.Module],
    train_data: Digits,
    test_data: Digits,
    config: TrainConfig | None = None,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    verbose: bool = True,
) -> TrainResult:
    """Train ``build()`` on ``train_data`` with Adam and cross-entropy, deterministically.

    Args:
        name: a name for the model, part of the cache file name and key.
        build: returns a fresh, untrained model (called after seeding, so its initial weights
            are fixed by ``config.seed``).
        train_data: digits to fit, ``images`` ``(N, 1, H, W)``.
        test_data: digits to report accuracy on after every epoch.
        config: hyper-parameters; the default trains for 8 epochs.
        cache_dir: where weights are cached (default ``data_home() / "weights"``).
        use_cache: read and write the cache; ``False`` always trains and stores nothing.
        progress: show a progress bar over the epochs.
        verbose: print one line saying where the weights came from.

    Returns:
        :class:`TrainResult` with the model in eval mode and its test accuracy.
    """
    config = config or TrainConfig()
    torch.manual_seed(config.seed)
    model = build()
    spec = _spec(name, model, train_data, test_data, config)
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir or data_home() / "weights") / f"{name}-{key}.pt"
    if use_cache:
        record = _load_cached(path, spec, model)
        if record is not None:
            model.eval()
            if verbose:
                print(
                    f"{name}: cached weights {path.name}, test accuracy "
                    f"{record['test_accuracy']:.2%}"
                )
            return TrainResult(model, record["test_accuracy"], record["history"], True, 0.0, path)

    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    started = time.perf_counter()
    try:
        history = _fit(model, train_data, test_data, config, name, progress)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - started
    test_accuracy = history[-1]["test_accuracy"]
    if use_cache:
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        record = {"spec": spec, "state_dict": state, "history": history}
        record["test_accuracy"] = test_accuracy
        _save(path, record)
    if verbose:
        print(f"{name}: trained in {seconds:.1f} s, test accuracy {test_accuracy:.2%}")
    return TrainResult(model, test_accuracy, history, False, seconds, path if use_cache else None)


def _fit(
    model: nn.Module,
    train_data: Digits,
    test_data: Digits,
    config: TrainConfig,
    name: str,
    progress: bool,
) -> list[dict]:
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    history = []
    epochs = tqdm(
        range(1, config.epochs + 1),
        desc=f"training {name}",
        unit="epoch",
        disable=not progress,
        file=sys.stdout,
        ncols=90,
        mininterval=1.0,
    )
    for epoch in epochs:
        model.train()
        order = torch.randperm(len(train_data), generator=generator)
        images = train_data.images
        if config.augment == "place":
            placements = torch.Generator().manual_seed(config.seed * 10_000 + epoch)
            images = place_digits(images, placements)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(images[batch]), train_data.labels[batch])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        record = {
            "epoch": epoch,
            "train_loss": total / len(order),
            "test_accuracy": accuracy(model, test_data),
        }
        history.append(record)
        epochs.set_postfix(
            loss=f"{record['train_loss']:.3f}", acc=f"{record['test_accuracy']:.3f}", refresh=False
        )
    model.eval()
    return history
