"""The shared value checks (auditmi.validate)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from auditmi import validate as V
from auditmi.errors import CalibrationError, InputError


def test_an_int_but_not_a_bool() -> None:
    assert V.is_int(3) and V.is_int(np.int64(3))
    assert not V.is_int(True) and not V.is_int(np.bool_(True)) and not V.is_int(3.0) and not V.is_int("3")
    assert V.positive_int("n", np.int32(4)) == 4 and type(V.positive_int("n", np.int32(4))) is int
    for bad in (0, -1, True, 2.0, None, "2"):
        with pytest.raises(InputError, match="n must be a positive integer"):
            V.positive_int("n", bad)
    assert V.int_in("s", 8, 8, 1024) == 8
    with pytest.raises(InputError, match="from 8 to 1024"):
        V.int_in("s", 6000, 8, 1024)


def test_finite_numbers() -> None:
    assert V.finite_float("x", np.float32(0.5)) == 0.5
    for bad in (math.nan, math.inf, -math.inf, True, None, "1"):
        with pytest.raises(InputError):
            V.finite_float("x", bad)
    assert V.nonnegative_float("lr", 0) == 0.0
    with pytest.raises(InputError, match="> 0"):
        V.nonnegative_float("lr", 0, strictly_positive=True)
    assert V.finite_list("m", [1, 2.5, np.float64(3)], length=3) == [1.0, 2.5, 3.0]
    with pytest.raises(InputError, match="hold 3"):
        V.finite_list("m", [1, 2], length=3)
    with pytest.raises(InputError):
        V.finite_list("m", [1, math.nan, 2])


def test_rates_with_open_and_closed_ends() -> None:
    assert V.rate(0.0, "fpr") == 0.0 and V.rate(1, "fpr") == 1.0
    with pytest.raises(InputError, match=r"q must lie in \(0, 1\]"):
        V.rate(0.0, "q", open_low=True)
    with pytest.raises(InputError, match=r"alpha must lie in \(0, 1\)"):
        V.rate(1.0, "alpha", open_low=True, open_high=True)
    for bad in (math.nan, True, "x", None):
        with pytest.raises(InputError):
            V.rate(bad, "fpr")


def test_arrays() -> None:
    assert V.finite_scores([1, 2], "s").dtype == np.float64
    with pytest.raises(InputError, match="1 NaN"):
        V.finite_scores([1, math.nan], "s")
    with pytest.raises(InputError, match="empty"):
        V.finite_scores([], "s")
    assert V.finite_scores([], "s", allow_empty=True).size == 0
    a = np.zeros((3, 4), np.float32)
    V.array_like("a", a, shape=(None, 4), kind="f")
    with pytest.raises(InputError, match=r"shape \(any, 5\)"):
        V.array_like("a", a, shape=(None, 5))
    with pytest.raises(InputError, match="integer"):
        V.array_like("a", a, kind="iu")


def test_the_error_type_is_the_callers() -> None:
    with pytest.raises(CalibrationError):
        V.finite_float("thresholds.accuracy", -math.inf, error=CalibrationError)
    with pytest.raises(CalibrationError):
        V.mapping("attacks", [], error=CalibrationError)
