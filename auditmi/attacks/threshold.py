"""EncoderMI-T: the mean pairwise similarity, thresholded (method.md, "The three inference
classifiers")."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from scipy.special import expit

from auditmi.attacks.base import Attack
from auditmi.errors import CalibrationError
from auditmi.stats import accuracy_threshold
from auditmi.validate import is_finite_number


def platt_fit(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Platt scaling: fit p(member | s) = sigmoid(slope * s + intercept).

    Uses Platt's smoothed targets ((N+ + 1)/(N+ + 2) and 1/(N- + 2)), which keep the
    optimum finite even when the shadow classes are perfectly separable, and Newton's method
    with backtracking on standardised scores (Lin, Lin and Weng 2007).

    Returns:
        ``(slope, intercept)`` on the raw score scale.
    """
    n_pos = int(labels.sum())
    n_neg = int(labels.size - n_pos)
    t = np.where(labels == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    prior = math.log((n_pos + 1.0) / (n_neg + 1.0))
    mu = float(scores.mean())
    sd = float(scores.std())
    if not sd > 1e-12:  # constant scores carry no information: predict the prior
        return 0.0, prior
    z = (scores - mu) / sd
    design = np.stack([z, np.ones_like(z)], axis=1)

    def nll(w: np.ndarray) -> float:
        f = design @ w
        return float(np.sum(np.logaddexp(0.0, f) - t * f))

    w = np.array([0.0, prior])
    current = nll(w)
    for _ in range(100):
        p = expit(design @ w)
        grad = design.T @ (p - t)
        if np.max(np.abs(grad)) < 1e-10 * labels.size:
            break
        hess = (design * (p * (1 - p))[:, None]).T @ design + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        rate = 1.0
        while rate > 1e-10:
            candidate = w - rate * step
            value = nll(candidate)
            if value <= current - 1e-4 * rate * float(grad @ step):
                break
            rate *= 0.5
        else:
            break  # no further decrease possible in float64
        w, current = candidate, value
    slope = float(w[0] / sd)
    intercept = float(w[1] - w[0] * mu / sd)
    return slope, intercept


class ThresholdAttack(Attack):
    """EncoderMI-T: score = mean of the pairwise similarities of an image's views.

    The paper decides "member" when the mean is at least a threshold chosen to maximise
    accuracy on the shadow data; that threshold is stored as ``accuracy_threshold`` in the
    params (thresholds at a chosen false-positive rate are added by the calibration code from
    held-out data). ``member_probability`` is Platt scaling of the mean similarity, fitted on
    the training data. Column order does not matter. T has no hyper-parameters.
    """

    kind: ClassVar[str] = "T"
    name: ClassVar[str] = "EncoderMI-T"

    def __init__(self) -> None:
        super().__init__()
        self.accuracy_threshold: float | None = None
        self.platt_slope: float = 0.0
        self.platt_intercept: float = 0.0

    def _fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> None:
        del seed  # nothing random
        s = self._score(x)
        self.accuracy_threshold = accuracy_threshold(y, s)
        self.platt_slope, self.platt_intercept = platt_fit(s, y)

    def _score(self, x: np.ndarray) -> np.ndarray:
        return x.mean(axis=1)

    def _probability(self, x: np.ndarray) -> np.ndarray:
        return expit(self.platt_slope * self._score(x) + self.platt_intercept)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {
            "accuracy_threshold": self.accuracy_threshold,
            "platt": {"slope": self.platt_slope, "intercept": self.platt_intercept},
        }, {}

    def _load_state(self, params: Mapping[str, Any], arrays: dict[str, np.ndarray]) -> None:
        platt = params.get("platt")
        values = {
            "accuracy_threshold": params.get("accuracy_threshold"),
            "platt.slope": platt.get("slope") if isinstance(platt, Mapping) else None,
            "platt.intercept": platt.get("intercept") if isinstance(platt, Mapping) else None,
        }
        for key, value in values.items():
            if not is_finite_number(value):
                raise CalibrationError(
                    f"{self.name} params lack a finite {key!r} (got {value!r}); the calibration "
                    "bundle is incomplete or was tampered with."
                )
        self.accuracy_threshold = float(values["accuracy_threshold"])  # type: ignore[arg-type]
        self.platt_slope = float(values["platt.slope"])  # type: ignore[arg-type]
        self.platt_intercept = float(values["platt.intercept"])  # type: ignore[arg-type]
