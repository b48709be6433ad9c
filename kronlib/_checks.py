"""Argument checks for kron, conv, spectral and saliency, beside those of :mod:`kronlib._validate`.

Like those, every check raises ``ValueError`` or ``TypeError`` whose message names the argument,
what was given and what is allowed. An *int* is what :func:`kronlib._validate.as_int` accepts: a
Python int, a numpy integer or a 0-d integer tensor, never a bool, a float or a string.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from kronlib._validate import as_int

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def is_int(value: Any) -> bool:
    """Whether ``value`` is an int in the sense of :func:`kronlib._validate.as_int`."""
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and value.dtype in _INT_DTYPES
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
