"""Number and text formatting shared by the HTML page's sections (plain text: templates escape)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from auditmi.report.jsondoc import normalise
from auditmi.report.schema import InvalidReportError

DASH = "\u2014"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else None."""
    return float(value) if _is_number(value) and math.isfinite(float(value)) else None


def num(value: Any, digits: int = 4) -> str:
    f = finite(value)
    if f is None:
        return DASH
    if f == 0:
        return "0"
    if abs(f) < 1e-3 or abs(f) >= 1e6:
        return f"{f:.{max(digits - 2, 1)}e}"
    return f"{f:.{digits}g}"


def pval(value: Any) -> str:
    f = finite(value)
    return DASH if f is None else (f"{f:.1e}" if f < 1e-4 else f"{f:.4g}")


def pct(value: Any, digits: int = 1) -> str:
    f = finite(value)
    return DASH if f is None else f"{100.0 * f:.{digits}f}%"


def count(value: Any) -> str:
    return f"{int(value):,}" if _is_number(value) else DASH


def get(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def basename(path: str) -> str:
    name = str(path).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return name or str(path)


def json_text(value: Any) -> str:
    try:
        return json.dumps(normalise(value), indent=2, ensure_ascii=False, allow_nan=False)
    except (InvalidReportError, TypeError, ValueError):
        return repr(value)


def finite_list(values: Any) -> list[float]:
    if not isinstance(values, Sequence) or isinstance(values, str):
        return []
    return [f for f in (finite(v) for v in values) if f is not None]
