"""Input checks shared by kronlib's public functions.

Every check raises ``ValueError`` or ``TypeError`` whose message names the argument, what was
given and what is allowed, so that a caller sees at once which argument to fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray


def as_float_tensor(value: Any, name: str) -> torch.Tensor:
    """Return ``value`` as a floating-point tensor, keeping its device and float dtype.

    Tensors and numpy arrays are accepted. Integer and boolean inputs (for example ``uint8``
    images) become ``float32``; float16/bfloat16 become ``float32`` so that the linear algebra
    is meaningful; float32 and float64 are kept as they are.
    """
    if isinstance(value, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(value))
    elif isinstance(value, torch.Tensor):
        tensor = value
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor or a numpy.ndarray, got {type(value).__name__}"
        )
    if tensor.is_complex():
        raise TypeError(f"{name} must be real, got dtype {tensor.dtype}")
    if tensor.dtype in (torch.float32, torch.float64):
        return tensor
    return tensor.to(torch.float32)


def like_input(result: torch.Tensor, original: ArrayLike) -> ArrayLike:
    """Return ``result`` as a numpy array when ``original`` was one, else unchanged."""
    if isinstance(original, np.ndarray):
        return result.detach().cpu().numpy()
    return result


def check_ndim(tensor: torch.Tensor, name: str, allowed: Sequence[int], layout: str) -> None:
    """Require ``tensor.ndim`` to be one of ``allowed``; ``layout`` describes the expected axes."""
    if tensor.ndim not in allowed:
        raise ValueError(
            f"{name} must have shape {layout}, got a {tensor.ndim}-D array of shape "
            f"{tuple(tensor.shape)}"
        )


def pair_of_positive_ints(value: Any, name: str) -> tuple[int, int]:
    """Return ``value`` as a ``(rows, cols)`` pair of positive ints, or raise."""
    try:
        rows, cols = value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (rows, cols), got {value!r}") from None
    for part in (rows, cols):
        if isinstance(part, bool) or not isinstance(part, int | np.integer):
            raise TypeError(f"{name} must hold two ints, got {value!r}")
        if part < 1:
            raise ValueError(f"{name} must hold two positive ints, got {value!r}")
    return int(rows), int(cols)


def check_color(color: Any, image_ndim: int, name: str = "color") -> str | None:
    """Check the ``color`` argument against the image's rank: ``None`` for 2-D, 'B'/'C' for 3-D."""
    if color not in (None, "B", "C"):
        raise ValueError(f"{name} must be None, 'B' or 'C', got {color!r}")
    if image_ndim == 3 and color is None:
        raise ValueError(
            f"{name} must be 'B' or 'C' for a colour image of shape (H, W, 3) (which factor "
            "carries the channels), got None"
        )
    if image_ndim == 2 and color is not None:
        raise ValueError(f"{name} must be None for a grayscale (H, W) image, got {color!r}")
    return color


def check_rank(rank: Any, max_rank: int, name: str = "rank") -> int:
    """Return ``rank`` if it is an int in ``1..max_rank``, else raise."""
    if isinstance(rank, bool) or not isinstance(rank, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(rank).__name__} {rank!r}")
    if not 1 <= rank <= max_rank:
        raise ValueError(f"{name} must be between 1 and {max_rank} here, got {rank}")
    return int(rank)


def as_conv_weight(value: Any, name: str) -> torch.Tensor:
    """Return ``value`` as a float conv weight ``(C_out, C_in, kh, kw)``, or raise."""
    weight = as_float_tensor(value, name)
    if weight.ndim != 4:
        raise ValueError(
            f"{name} must be a 4-D conv weight (C_out, C_in, kh, kw), got a {weight.ndim}-D "
            f"array of shape {tuple(weight.shape)}"
        )
    return weight


def as_int(value: Any, name: str, minimum: int | None = None) -> int:
    """Return ``value`` as a Python int, or raise.

    Python ints, numpy integers and 0-d integer tensors (``logits.argmax()``) are ints; ``bool``,
    floats (even ``2.0``), strings and anything else are not.
    """
    integer_dtypes = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
    if isinstance(value, torch.Tensor) and value.ndim == 0 and value.dtype in integer_dtypes:
        value = int(value.item())
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int ≥ {minimum}, got {int(value)}")
    return int(value)


def as_index(value: Any, name: str, size: int) -> torch.Tensor:
    """Flat indices into ``size`` entries as a 1-D ``long`` tensor, or raise.

    ``value`` is one int (see :func:`as_int`) or a non-empty sequence, numpy array or 1-D tensor
    of ints; negative or too large indices, bools and floats are refused.

    Returns:
        ``(n,)`` int64 on the CPU.
    """
    if isinstance(value, torch.Tensor | np.ndarray) and value.ndim == 0:
        items = [value]
    elif isinstance(value, torch.Tensor | np.ndarray):
        if value.ndim != 1:
            raise ValueError(
                f"{name} must be an int or a 1-D sequence of ints, got an array of shape "
                f"{tuple(value.shape)}"
            )
        items = list(value)
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        items = list(value)
    else:
        items = [value]
    if not items:
        raise ValueError(
            f"{name} must name at least one index, got an empty {type(value).__name__}"
        )
    ints = [as_int(item, f"{name} (each entry)") for item in items]
    bad = [i for i in ints if not 0 <= i < size]
    if bad:
        raise ValueError(f"{name} must index {size} entries (0..{size - 1}), got {bad}")
    return torch.tensor(ints, dtype=torch.long)


def as_shape(value: Any, name: str) -> tuple[int, ...]:
    """Return ``value`` as a non-empty tuple of positive ints (a tensor shape), or raise."""
    if isinstance(value, torch.Size):
        value = tuple(value)
    if not isinstance(value, Sequence | np.ndarray) or isinstance(value, str | bytes):
        raise TypeError(
            f"{name} must be a sequence of positive ints such as (1, 28, 28), got "
            f"{type(value).__name__} {value!r}"
        )
    if len(value) == 0:
        raise ValueError(f"{name} must have at least one axis, got {value!r}")
    return tuple(as_int(size, f"{name} (each size)", minimum=1) for size in value)
