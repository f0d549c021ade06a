"""The three EncoderMI inference classifiers (method.md, "The three inference classifiers").

* ``T`` :class:`ThresholdAttack` - mean similarity, thresholded.
* ``V`` :class:`VectorAttack` - sorted similarity vector, MLP.
* ``S`` :class:`SetAttack` - similarity set, DeepSets.

All share the :class:`Attack` interface: ``fit``, ``score`` (higher = more member-like),
``member_probability``, ``get_state`` / ``from_state`` (JSON params + float32 arrays).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np

from auditmi.attacks.base import Attack
from auditmi.attacks.set import SetAttack
from auditmi.attacks.threshold import ThresholdAttack
from auditmi.attacks.vector import VectorAttack
from auditmi.errors import CalibrationError, InputError

#: Attack classes by kind.
ATTACKS: dict[str, type[Attack]] = {
    cls.kind: cls for cls in (ThresholdAttack, VectorAttack, SetAttack)
}

_BY_NAME: dict[str, type[Attack]] = {
    **{k.lower(): c for k, c in ATTACKS.items()},
    **{c.name.lower(): c for c in ATTACKS.values()},
}


def _valid_kinds() -> str:
    return ", ".join(f"{k} ({c.name})" for k, c in ATTACKS.items())


def make_attack(kind: str, **hyper: Any) -> Attack:
    """Create an unfitted attack.

    Args:
        kind: "T", "V" or "S" (case-insensitive; "EncoderMI-V" etc. also accepted).
        **hyper: hyper-parameters of that attack (e.g. ``epochs=20`` for V or S).

    Returns:
        The unfitted attack.

    Raises:
        InputError: on an unknown kind, an unknown hyper-parameter name or an invalid value.
    """
    cls = _BY_NAME.get(str(kind).lower()) if isinstance(kind, str) else None
    if cls is None:
        raise InputError(f"unknown attack kind {kind!r}; valid kinds: {_valid_kinds()}.")
    accepted = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    # (No ``set(...)`` in this module: importing the submodule ``set`` rebinds that name here.)
    unknown = sorted(k for k in hyper if k not in accepted)
    if unknown:
        raise InputError(
            f"{cls.name} has no hyper-parameter(s) {unknown}; "
            f"valid: {accepted if accepted else 'none'}."
        )
    return cls(**hyper)


def attack_from_state(params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Attack:
    """Rebuild a fitted attack of whichever kind ``params["kind"]`` names.

    Raises:
        CalibrationError: on an unknown kind or any problem :meth:`Attack.from_state` finds.
    """
    kind = params.get("kind") if isinstance(params, Mapping) else None
    cls = ATTACKS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise CalibrationError(
            f"the calibration bundle names an unknown attack kind {kind!r}; valid kinds: "
            f"{_valid_kinds()}. It may come from a newer auditmi or be corrupted."
        )
    return cls.from_state(params, arrays)


__all__ = [
    "ATTACKS",
    "Attack",
    "SetAttack",
    "ThresholdAttack",
    "VectorAttack",
    "attack_from_state",
    "make_attack",
]
