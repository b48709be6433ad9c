"""Input checks shared by kronlib's public functions.

Every check raises ``ValueError`` or ``TypeError`` whose message names the argument, what was
given and what is allowed, so that a caller sees at once which argument to fix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


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
    """``rank`` as an int in ``1..max_rank`` (any int :func:`as_int` takes), or raise."""
    number = as_int(rank, name)
    if not 1 <= number <= max_rank:
        raise ValueError(f"{name} must be between 1 and {max_rank} here, got {number}")
    return number


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

    Python ints, numpy integers, 0-d integer tensors (``logits.argmax()``) and 0-d integer
    numpy arrays (``np.array(3)``) are ints; ``bool``, floats (even ``2.0``), strings and
    anything else are not.
    """
    if isinstance(value, torch.Tensor) and value.ndim == 0 and value.dtype in _INT_DTYPES:
        value = int(value.item())
    elif isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iu":
        value = value[()]
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


def is_int(value: Any) -> bool:
    """Whether ``value`` is an int in the sense of :func:`kronlib._validate.as_int`."""
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and value.dtype in _INT_DTYPES
    if isinstance(value, np.ndarray):
        return value.ndim == 0 and value.dtype.kind in "iu"
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _two_items(value: Any) -> tuple[Any, Any] | None:
    """``value``'s two entries if it is a pair (sequence, 1-D array or tensor of length 2)."""
    if isinstance(value, str | bytes):
        return None
    if isinstance(value, torch.Tensor | np.ndarray):
        return (value[0], value[1]) if value.ndim == 1 and len(value) == 2 else None
    if isinstance(value, Sequence) and len(value) == 2:
        return value[0], value[1]
    return None


def as_pair(value: Any, name: str, minimum: int = 1, single: bool = True) -> tuple[int, int]:
    """Return ``value`` as a ``(rows, cols)`` pair of Python ints ``>= minimum``, or raise.

    Args:
        value: a pair of ints (tuple, list, ``torch.Size``, 1-D array or tensor of length 2), or,
            with ``single``, one int used for both axes.
        name: the argument's name, for the message.
        minimum: the smallest allowed entry.
        single: whether one int is accepted for both axes (strides, paddings, kernel sizes);
            shapes such as ``grid_shape`` pass ``False``.
    """
    expected = "an int or a pair of ints (rows, cols)" if single else "a pair (rows, cols)"
    of_ints = expected if single else f"{expected} of ints"
    if single and is_int(value):
        items: tuple[Any, Any] | None = (value, value)
    else:
        items = _two_items(value)
    if items is None:
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    if not all(is_int(item) for item in items):
        raise TypeError(f"{name} must be {of_ints}, not bools or floats; got {value!r}")
    pair = (as_int(items[0], name), as_int(items[1], name))
    if min(pair) < minimum:
        if single:
            raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
        bound = "positive ints" if minimum == 1 else f"ints ≥ {minimum}"
        raise ValueError(f"{name} must hold two {bound}, got {value!r}")
    return pair


def as_int_in(value: Any, name: str, low: int, high: int, what: str = "") -> int:
    """Return ``value`` as an int with ``low <= value <= high``, or raise.

    ``what`` (for example ``"a channel of w2"``) says what the int counts or indexes.
    """
    number = as_int(value, name)
    if not low <= number <= high:
        where = f" ({what})" if what else ""
        raise ValueError(f"{name} must be between {low} and {high}{where}, got {number}")
    return number


def as_real(value: Any, name: str) -> float:
    """Return ``value`` as a finite Python float, or raise.

    Python ints and floats, numpy numbers and 0-d real tensors are accepted; bools, strings,
    NaN and infinities are not.
    """
    if isinstance(value, torch.Tensor) and value.ndim == 0 and value.dtype != torch.bool:
        if value.is_complex():
            raise TypeError(f"{name} must be a real number, got complex {value!r}")
        value = value.item()
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if isinstance(value, complex | np.complexfloating):
        raise TypeError(f"{name} must be a real number, got complex {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {number}")
    return number


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Refuse a tensor holding NaN or an infinity, saying how many and where the first one is."""
    finite = torch.isfinite(tensor)
    if bool(finite.all()):
        return
    nan = int(torch.isnan(tensor).sum())
    inf = int(torch.isinf(tensor).sum())
    first = tuple(int(i) for i in torch.nonzero(~finite)[0])
    raise ValueError(
        f"{name} must be finite, got {nan} NaN and {inf} infinite entries in shape "
        f"{tuple(tensor.shape)} (the first at index {first})"
    )


def check_not_empty(tensor: torch.Tensor, name: str) -> None:
    """Refuse a tensor with a zero-length axis."""
    if tensor.numel() == 0:
        raise ValueError(
            f"{name} must not be empty, got shape {tuple(tensor.shape)} (every axis needs at "
            "least one entry)"
        )


def as_layer_sequence(value: Any, name: str) -> list[Any]:
    """One entry per layer from a list, tuple, 1-D or ``(L, 2)`` array, or raise.

    A bare int or string is refused rather than guessed at: ``[5]`` is one layer.
    """
    if isinstance(value, torch.Tensor | np.ndarray):
        if value.ndim not in (1, 2):
            raise ValueError(
                f"{name} must list one entry per layer (1-D, or (layers, 2) for pairs), got an "
                f"array of shape {tuple(value.shape)}"
            )
        return list(value)
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(
            f"{name} must be a sequence with one entry per layer, such as [5] for one layer or "
            f"[5, 5] for two, got {type(value).__name__} {value!r}"
        )
    return list(value)
