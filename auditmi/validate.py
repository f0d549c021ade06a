"""The one set of value checks: "an int but not a bool", finite numbers, rates, score arrays.

Every check returns the value in its canonical type or raises ``error`` (an :class:`InputError` by
default; bundle loaders pass :class:`CalibrationError` or :class:`EncoderUnavailableError` so a bad
field in a bundle gets the bundle's exit code). Messages name the value and say what is expected.
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard

import numpy as np

from auditmi.errors import AuditmiError, InputError

ErrorType = type[AuditmiError]


def is_int(value: Any) -> TypeGuard[int | np.integer[Any]]:
    """True for Python and NumPy integers, False for bools (``True`` is an int to Python)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
    """True for Python and NumPy ints and floats, False for bools."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def is_finite_number(value: Any) -> bool:
    """A number (not a bool) that is neither NaN nor infinite."""
    return is_number(value) and math.isfinite(float(value))


def positive_int(name: str, value: Any, *, error: ErrorType = InputError) -> int:
    """``value`` as an int >= 1."""
    if not is_int(value) or value < 1:
        raise error(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def int_in(name: str, value: Any, low: int, high: int, *, error: ErrorType = InputError) -> int:
    """``value`` as an int with ``low <= value <= high``."""
    if not is_int(value) or not low <= value <= high:
        raise error(f"{name} must be an integer from {low} to {high}, got {value!r}.")
    return int(value)


def nonnegative_float(name: str, value: Any, *, strictly_positive: bool = False, error: ErrorType = InputError) -> float:
    """``value`` as a finite float >= 0 (> 0 if ``strictly_positive``)."""
    if not is_number(value):
        raise error(f"{name} must be a number, got {value!r}.")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (strictly_positive and v == 0):
        bound = "> 0" if strictly_positive else ">= 0"
        raise error(f"{name} must be a finite number {bound}, got {value!r}.")
    return v


def finite_float(name: str, value: Any, *, error: ErrorType = InputError) -> float:
    """``value`` as a finite float (NaN, infinities, bools, strings and None are refused)."""
    if not is_finite_number(value):
        raise error(f"{name} must be a finite number, got {value!r}.")
    return float(value)


def rate(value: Any, name: str, *, open_low: bool = False, open_high: bool = False, error: ErrorType = InputError) -> float:
    """``value`` as a float in [0, 1], with an open end on either side if asked."""
    if isinstance(value, (bool, np.bool_)):
        raise error(f"{name} must be a number in [0, 1], got {value!r}.")
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise error(f"{name} must be a number in [0, 1], got {value!r}.") from exc
    lo_ok = v > 0 if open_low else v >= 0
    hi_ok = v < 1 if open_high else v <= 1
    if not (math.isfinite(v) and lo_ok and hi_ok):
        lo = "(0" if open_low else "[0"
        hi = "1)" if open_high else "1]"
        raise error(f"{name} must lie in {lo}, {hi}, got {value!r}.")
    return v


def finite_scores(values: Any, name: str, *, allow_empty: bool = False, error: ErrorType = InputError) -> np.ndarray:
    """A 1-D array of finite numbers as float64."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise error(f"{name} must be a 1-D array of numbers ({exc}).") from exc
    if arr.ndim != 1:
        raise error(f"{name} must be 1-D, got shape {arr.shape}; flatten it first.")
    if arr.size == 0 and not allow_empty:
        raise error(f"{name} is empty; at least one score is needed.")
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise error(f"{name} contains {bad} NaN or infinite value(s); drop or fix those images before computing statistics.")
    return arr


def array_like(name: str, arr: Any, *, ndim: int | None = None, shape: tuple[int | None, ...] | None = None,
               kind: str | None = None, error: ErrorType = InputError) -> np.ndarray:
    """Check an array's rank, shape (``None`` matches any length) and dtype kind (e.g. ``"f"``, ``"iu"``)."""
    a = np.asarray(arr)
    if ndim is not None and a.ndim != ndim:
        raise error(f"{name} must have {ndim} dimension(s), got shape {a.shape}.")
    if shape is not None and (a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape, strict=True))):
        want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
        raise error(f"{name} must have shape {want}, got {a.shape}.")
    if kind is not None and a.dtype.kind not in kind:
        raise error(f"{name} has dtype {a.dtype}, expected {'a float' if kind == 'f' else 'an integer' if kind in ('i', 'iu') else kind} type.")
    return a


def finite_list(name: str, value: Any, *, length: int | None = None, error: ErrorType = InputError) -> list[float]:
    """A list of finite numbers (of ``length`` items if given)."""
    if not isinstance(value, (list, tuple)) or not all(is_finite_number(v) for v in value):
        raise error(f"{name} must be a list of finite numbers, got {value!r}.")
    if length is not None and len(value) != length:
        raise error(f"{name} must hold {length} numbers, got {len(value)}.")
    return [float(v) for v in value]


def mapping(name: str, value: Any, *, error: ErrorType = InputError) -> dict[str, Any]:
    """A JSON object (dict)."""
    if not isinstance(value, dict):
        raise error(f"{name} must be an object, got {type(value).__name__}.")
    return value
