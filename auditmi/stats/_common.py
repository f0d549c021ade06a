"""Shared pieces of the statistics package: JSON conversion of results and input checks."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from auditmi.errors import InputError
from auditmi.jsonvalue import json_value
from auditmi.validate import finite_scores, rate


def _jsonable(value: Any) -> Any:
    """JSON-able form of a result (the project's one conversion, :func:`auditmi.jsonvalue.json_value`)."""
    return json_value(value)


#: Public name of the JSON conversion used by every result's ``to_dict``.
jsonable = _jsonable


class _ToDict:
    """Mixin giving frozen result dataclasses a JSON-able ``to_dict``."""

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-able dict (NaN/inf -> None, tuples -> lists)."""
        return _jsonable(asdict(self))  # type: ignore[call-overload]


def _scores(values: Any, name: str, *, allow_empty: bool = False) -> np.ndarray:
    """Validate a 1-D array of finite scores and return it as float64."""
    return finite_scores(values, name, allow_empty=allow_empty)


def _labels_scores(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate paired labels (0/1) and scores of equal length."""
    s = _scores(scores, "scores")
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != s.shape[0]:
        raise InputError(
            f"labels (shape {lab.shape}) and scores (shape {s.shape}) must be 1-D and of "
            "equal length."
        )
    if lab.dtype == np.bool_:
        return lab.astype(np.int64), s
    try:
        lab_f = lab.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"labels must be 0 (non-member) or 1 (member) ({exc}).") from exc
    if not np.all((lab_f == 0) | (lab_f == 1)):
        raise InputError("labels must be 0 (non-member) or 1 (member) only.")
    return lab_f.astype(np.int64), s



def _check_rate(value: float, name: str, *, open_low: bool = False, open_high: bool = False) -> float:
    """Validate that ``value`` is a rate in [0, 1] (optionally with open ends)."""
    return rate(value, name, open_low=open_low, open_high=open_high)


def _counts(n_flagged: int, n_total: int) -> tuple[int, int]:
    """Validate a (flagged, total) count pair."""
    try:
        k, n = int(n_flagged), int(n_total)
    except (TypeError, ValueError) as exc:
        raise InputError(f"n_flagged and n_total must be integers ({exc}).") from exc
    if k != n_flagged or n != n_total:
        raise InputError(f"n_flagged and n_total must be whole numbers, got {n_flagged}, {n_total}.")
    if n < 1 or not 0 <= k <= n:
        raise InputError(f"need 0 <= n_flagged <= n_total and n_total >= 1, got {k} of {n}.")
    return k, n

