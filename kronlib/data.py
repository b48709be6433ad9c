"""Data the book runs on, all of it available offline.

Photos come from files that installed packages ship (matplotlib's sample data, scikit-learn's
sample images), so no chapter needs a download; any local image path works as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kronlib._validate import pair_of_positive_ints

__all__ = ["SAMPLE_IMAGES", "describe_image", "image_path", "load_image"]


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
        height, width = pair_of_positive_ints(size, "size")
        image = _center_crop_to_aspect(image, height, width)
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, dtype=np.float64) / 255.0
    return torch.from_numpy(pixels).to(dtype)
