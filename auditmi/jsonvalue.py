"""The one conversion of results into plain JSON values (used by every ``to_dict`` and by reports)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime
from enum import Enum
from pathlib import PurePath
from typing import Any

import numpy as np


class NotJsonError(TypeError):
    """A value with no JSON form; ``where`` is the path of keys/indices that leads to it."""

    def __init__(self, where: tuple[Any, ...], type_name: str) -> None:
        super().__init__(f"a {type_name} is not a JSON value")
        self.where = where
        self.type_name = type_name


def json_value(value: Any, where: tuple[Any, ...] = ()) -> Any:
    """Turn ``value`` into plain JSON values, keeping key order.

    numpy scalars/arrays -> Python numbers/lists, NaN/inf -> None (strict JSON has neither),
    tuples -> lists, enums -> their value, paths -> str, dates -> ISO-8601, objects with
    ``to_dict()`` (auditmi.stats results) -> dict. Anything else raises :class:`NotJsonError`.
    """
    if isinstance(value, Enum):
        return json_value(value.value, where)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, Mapping):
        return {str(k): json_value(v, (*where, str(k))) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [json_value(v, (*where, i)) for i, v in enumerate(value.tolist())]
    if isinstance(value, (list, tuple)):
        return [json_value(v, (*where, i)) for i, v in enumerate(value)]
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return json_value(to_dict(), where)
    raise NotJsonError(where, type(value).__name__)


__all__ = ["NotJsonError", "json_value"]
