"""The interface every membership inference classifier implements, and shared machinery.

An attack maps membership features (one row per image: the n(n-1)/2 pairwise cosine
similarities of n augmented views, method.md "Membership features") to a score where higher
means more member-like. Attacks are fitted on shadow features and serialised as JSON-able
``params`` plus named float32 ``arrays`` (for safetensors), never pickle.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np

from auditmi.errors import CalibrationError, InputError
from auditmi.validate import is_int

#: Version of the ``params``/``arrays`` layout written by :meth:`Attack.get_state`.
STATE_VERSION = 1

#: Rows scored per forward pass, so that scoring 10^5 images does not allocate gigabytes.
_SCORE_CHUNK = 4096

_A = TypeVar("_A", bound="Attack")


def views_for(n_features: int) -> str:
    """Describe a feature count as a number of views when it is triangular (45 -> "10 views")."""
    n = (1 + math.isqrt(1 + 8 * n_features)) // 2
    if n * (n - 1) // 2 == n_features:
        return f"{n_features} similarities, i.e. {n} views per image"
    return f"{n_features} similarities"


def check_features(features: Any, what: str = "features") -> np.ndarray:
    """Validate membership features and return them as a float64 (N, F) array.

    Args:
        features: array-like of shape (N, F), one row of pairwise similarities per image.
        what: how to name the array in error messages.

    Returns:
        A float64 copy (or view) of ``features``.

    Raises:
        InputError: if the array is not 2-D and numeric, is empty, or holds NaN/inf.
    """
    try:
        arr = np.asarray(features)
    except Exception as exc:  # ragged lists and the like
        raise InputError(f"{what} could not be read as an array: {exc}") from exc
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise InputError(
            f"{what} must be a numeric array of similarities, got dtype {arr.dtype}."
        )
    if arr.ndim != 2:
        raise InputError(
            f"{what} must be a 2-D array (images x similarities), got shape {arr.shape}."
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{what} is empty (shape {arr.shape}); there is nothing to score.")
    arr = arr.astype(np.float64, copy=False)
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=1))
        raise InputError(
            f"{what} holds NaN or infinite values in {bad.size} row(s) (first: row {bad[0]}); "
            "recompute the features for those images or drop them."
        )
    return arr


def check_labels(labels: Any, n_rows: int) -> np.ndarray:
    """Validate membership labels (1 = member, 0 = non-member) for fitting.

    Raises:
        InputError: if the labels are not a 1-D 0/1 vector of length ``n_rows`` holding
            both classes.
    """
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise InputError(
            f"labels must be a 1-D array with one entry per feature row ({n_rows}), "
            f"got shape {arr.shape}."
        )
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.number)):
        raise InputError(f"labels must be 0/1 integers, got dtype {arr.dtype}.")
    valid = (arr == 0) | (arr == 1)
    if not valid.all():
        bad = np.flatnonzero(~valid)
        raise InputError(
            f"labels must be 0 (non-member) or 1 (member); found {arr[bad[0]]!r} at index "
            f"{bad[0]} ({bad.size} invalid in all)."
        )
    out = arr.astype(np.int64)
    n_members = int(out.sum())
    if n_members == 0 or n_members == n_rows:
        raise InputError(
            "fitting needs both members and non-members, got "
            f"{n_members} member(s) and {n_rows - n_members} non-member(s)."
        )
    return out


class Attack(ABC):
    """A membership inference classifier over pairwise-similarity features.

    Subclasses set ``kind`` ("T", "V" or "S") and ``name``, and implement ``_fit``,
    ``_score``, ``_state`` and ``_load_state``. The public methods here do the validation
    shared by all of them.

    Score convention: higher = more member-like. ``score`` is deterministic.
    """

    kind: ClassVar[str]
    name: ClassVar[str]

    def __init__(self) -> None:
        self._n_features: int | None = None
        self._fit_info: dict[str, Any] = {}

    # ----------------------------------------------------------------- public API
    @property
    def n_features(self) -> int | None:
        """Number of similarities per image the attack was fitted on (None before fit)."""
        return self._n_features

    def hyperparameters(self) -> dict[str, Any]:
        """JSON-able hyper-parameters; ``type(self)(**h)`` rebuilds an unfitted twin."""
        return {}

    def fit(self: _A, features: np.ndarray, labels: np.ndarray, seed: int = 0) -> _A:
        """Fit the attack on shadow features.

        Args:
            features: (N, F) pairwise similarities, one row per shadow image.
            labels: (N,) 1 for shadow members, 0 for shadow non-members.
            seed: seed of every random choice made while fitting; the same seed and data
                give identical scores.

        Returns:
            ``self``, fitted.

        Raises:
            InputError: on malformed features or labels, or a single class.
        """
        x = check_features(features)
        y = check_labels(labels, x.shape[0])
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
            raise InputError(f"seed must be an integer, got {seed!r}.")
        if not 0 <= int(seed) < 2**63:
            raise InputError(f"seed must be in [0, 2**63), got {seed}.")
        self._fit(x, y, int(seed))
        self._n_features = int(x.shape[1])
        self._fit_info = {
            "seed": int(seed),
            "n_members": int(y.sum()),
            "n_nonmembers": int(y.size - y.sum()),
        }
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        """Membership scores, higher = more member-like.

        Args:
            features: (N, F) pairwise similarities with the F the attack was fitted on.

        Returns:
            (N,) float64 scores.

        Raises:
            CalibrationError: if the attack is not fitted, or F differs from the fitted one
                (the features were made with a different number of views than the shadow
                features).
            InputError: on malformed features.
        """
        x = self._check_scoring_features(features)
        return np.asarray(self._score(x), dtype=np.float64)

    def member_probability(self, features: np.ndarray) -> np.ndarray:
        """Estimated probability of membership, in [0, 1], under the shadow class balance.

        Raises:
            CalibrationError, InputError: as :meth:`score`.
        """
        x = self._check_scoring_features(features)
        return np.asarray(self._probability(x), dtype=np.float64)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Serialise the fitted attack.

        Returns:
            ``(params, arrays)``: JSON-able parameters (``kind``, ``name``,
            ``state_version``, ``n_features``, ``hyper``, ``fit`` and attack-specific
            entries) and named float32 arrays suitable for ``safetensors.numpy.save_file``.

        Raises:
            CalibrationError: if the attack is not fitted.
        """
        self._require_fitted()
        extra, arrays = self._state()
        params: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "state_version": STATE_VERSION,
            "n_features": self._n_features,
            "hyper": self.hyperparameters(),
            "fit": dict(self._fit_info),
            **extra,
        }
        arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}
        return params, arrays

    @classmethod
    def from_state(
        cls: type[_A], params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
    ) -> _A:
        """Rebuild a fitted attack from :meth:`get_state` output.

        Raises:
            CalibrationError: with the reason, if ``params`` is for another kind or version,
                lacks an entry, or if an array is missing, unexpected, ill-shaped or not
                finite.
        """
        if not isinstance(params, Mapping):
            raise CalibrationError(
                f"attack params must be a JSON object, got {type(params).__name__}."
            )
        if not isinstance(arrays, Mapping):
            raise CalibrationError(
                f"attack arrays must be a name->array mapping, got {type(arrays).__name__}."
            )
        kind = params.get("kind")
        if kind != cls.kind:
            raise CalibrationError(
                f"the calibration holds a {kind!r} attack, not {cls.name} (kind {cls.kind!r})."
            )
        version = params.get("state_version")
        if version != STATE_VERSION:
            raise CalibrationError(
                f"{cls.name} state version {version!r} is not supported (this auditmi reads "
                f"version {STATE_VERSION}); recalibrate with this auditmi version."
            )
        n_features = params.get("n_features")
        if not is_int(n_features) or n_features < 1:
            raise CalibrationError(f"{cls.name} params have an invalid n_features: {n_features!r}.")
        hyper = params.get("hyper", {})
        if not isinstance(hyper, Mapping):
            raise CalibrationError(f"{cls.name} params have an invalid 'hyper': {hyper!r}.")
        try:
            attack = cls(**dict(hyper))  # type: ignore[call-arg]
        except (InputError, TypeError) as exc:
            raise CalibrationError(
                f"{cls.name} params have invalid hyper-parameters: {exc}"
            ) from exc
        attack._n_features = int(n_features)
        fit_info = params.get("fit", {})
        attack._fit_info = dict(fit_info) if isinstance(fit_info, Mapping) else {}
        attack._load_state(params, _checked_arrays(cls.name, arrays, attack._expected_arrays()))
        return attack

    # ------------------------------------------------------------ for subclasses
    @abstractmethod
    def _fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> None:
        """Fit on validated float64 features ``x`` (N, F) and int labels ``y`` (N,)."""

    @abstractmethod
    def _score(self, x: np.ndarray) -> np.ndarray:
        """Scores of validated float64 features with the fitted F."""

    def _probability(self, x: np.ndarray) -> np.ndarray:
        """Member probability; defaults to the score (for attacks whose score is one)."""
        return self._score(x)

    @abstractmethod
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Attack-specific JSON-able params and arrays."""

    def _expected_arrays(self) -> dict[str, tuple[int, ...]]:
        """Array names and shapes a state must hold; ``hyper`` and ``n_features`` are set."""
        return {}

    @abstractmethod
    def _load_state(self, params: Mapping[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore from params and arrays already checked against ``_expected_arrays``."""

    # ----------------------------------------------------------------- helpers
    def _require_fitted(self) -> None:
        if self._n_features is None:
            raise CalibrationError(
                f"this {self.name} attack is not fitted: call fit() on shadow features or load "
                "one from a calibration bundle first."
            )

    def _check_scoring_features(self, features: Any) -> np.ndarray:
        self._require_fitted()
        x = check_features(features)
        if x.shape[1] != self._n_features:
            assert self._n_features is not None
            raise CalibrationError(
                f"{self.name} was calibrated on {views_for(self._n_features)}, but the features "
                f"to score have {views_for(x.shape[1])}; extract features with the same number "
                "of views as the calibration, or recalibrate."
            )
        return x


def _checked_arrays(
    name: str, arrays: Mapping[str, np.ndarray], expected: dict[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """Check names, shapes and finiteness of state arrays; return float32 copies."""
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise CalibrationError(
            f"{name} state is missing array(s) {missing}; the calibration bundle is incomplete "
            "or was tampered with. Recalibrate."
        )
    unexpected = sorted(set(arrays) - set(expected))
    if unexpected:
        raise CalibrationError(
            f"{name} state has unexpected array(s) {unexpected} (expected {sorted(expected)}); "
            "the bundle does not match its parameters."
        )
    out: dict[str, np.ndarray] = {}
    for key, shape in expected.items():
        arr = np.asarray(arrays[key])
        if arr.shape != shape:
            raise CalibrationError(
                f"{name} state array {key!r} has shape {arr.shape}, expected {shape}; the "
                "bundle does not match its parameters."
            )
        if not np.issubdtype(arr.dtype, np.floating):
            raise CalibrationError(
                f"{name} state array {key!r} has dtype {arr.dtype}, expected float32."
            )
        if not np.isfinite(arr).all():
            raise CalibrationError(f"{name} state array {key!r} holds NaN or infinite values.")
        out[key] = np.array(arr, dtype=np.float32)
    return out


# --------------------------------------------------------------------------------------
# Shared machinery of the neural attacks (V and S).
# --------------------------------------------------------------------------------------
