"""Calibration bundles: shadow features -> fitted EncoderMI-T/-V/-S -> a versioned, hashed folder.

A bundle is a folder with ``calibration.json`` (metadata) and ``arrays.safetensors`` (classifier
weights and held-out shadow scores), written, pinned and committed by :mod:`auditmi.bundle`: the
JSON records the sha256 of the arrays file and of itself, so any edit is refused (exit 3); loading
also checks the format, the schema version, every field's type and every classifier's arrays, and
never unpickles.

Protocol (method.md, "The three inference classifiers"): shadow members and non-members are
split, stratified and seeded, into a fitting part and a held-out part (``heldout_fraction``).
Classifiers are fitted on the fitting part. On the held-out part we record the metrics
(accuracy, precision, recall at the accuracy-maximising threshold; ROC AUC; TPR at 1% and 0.1%
FPR), the ROC curve, the thresholds at the accuracy optimum and at those of 1%/0.1% FPR the
held-out non-members resolve (``fpr_thresholds`` records which, and the finest rate), and the raw
held-out scores, so a scan can place a threshold at any false-positive rate down to that finest one.
The default classifier is the one with the best held-out ROC AUC.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from auditmi import __version__
from auditmi import stats as S
from auditmi import validate as V
from auditmi._paths import META_NAME, calibration_meta_path
from auditmi.attacks import ATTACKS, Attack, attack_from_state, make_attack
from auditmi.bundle import (
    PIN_KEY,
    check_folder_destination,
    load_arrays,
    read_metadata,
    recover,
    sha256_file,
    verify,
    write_bundle,
)
from auditmi.errors import CalibrationError, InputError
from auditmi.features import feature_config
from auditmi.views import ViewConfig

FORMAT = "auditmi-calibration"
SCHEMA_VERSION = 1
ARRAYS_NAME = "arrays.safetensors"
FPR_TARGETS = (0.01, 0.001)


def fpr_key(fpr: float) -> str:
    """The name of the stored threshold at target ``fpr`` (``"fpr=0.01"``)."""
    return f"fpr={fpr:g}"


def supports_fpr(fpr: float, heldout_non_members: int) -> bool:
    """Whether ``heldout_non_members`` held-out non-members resolve a target ``fpr`` (``fpr >= 1/n``)."""
    return heldout_non_members >= 1 and fpr >= S.fpr_resolution(heldout_non_members) * (1 - 1e-9)


def fpr_targets_note(heldout_non_members: int) -> dict[str, Any]:
    """Which of :data:`FPR_TARGETS` a calibration with ``heldout_non_members`` supports, and why not the others.

    Stored in the bundle as ``fpr_thresholds``: only the supported targets get a threshold.
    """
    n = int(heldout_non_members)
    return {"heldout_non_members": n, "finest_fpr": S.fpr_resolution(n),
            "written": [f for f in FPR_TARGETS if supports_fpr(f, n)],
            "not_written": {fpr_key(f): f"finer than 1/{n}: the held-out set has {n} shadow non-members; "
                                        f"{math.ceil(1 / f - 1e-9)} are needed" for f in FPR_TARGETS if not supports_fpr(f, n)}}


def _supported_thresholds(thresholds: Mapping[str, float], heldout_non_members: int) -> dict[str, float]:
    """``thresholds`` without those at a target FPR the held-out set cannot resolve (bundles written
    before auditmi recorded only supported thresholds carry them; a scan would refuse them)."""
    out = {}
    for k, v in thresholds.items():
        if k.startswith("fpr="):
            try:
                if not supports_fpr(float(k[4:]), heldout_non_members):
                    continue
            except ValueError:
                pass
        out[k] = v
    return out


@dataclass
class AttackCalibration:
    """One fitted classifier with its held-out evidence."""

    attack: Attack
    thresholds: dict[str, float]
    metrics: dict[str, Any]
    roc: dict[str, list[float]]
    heldout_scores: np.ndarray
    heldout_labels: np.ndarray

    def threshold_at(self, fpr: float) -> float:
        """Decision threshold whose held-out shadow FPR is at most ``fpr``."""
        return S.threshold_at_fpr(self.heldout_scores[self.heldout_labels == 0], fpr)

    @property
    def heldout_non_members(self) -> int:
        """Held-out shadow non-members the false-positive rates are measured on."""
        return int((self.heldout_labels == 0).sum())

    @property
    def finest_fpr(self) -> float:
        """Finest target FPR this calibration resolves: ``1 / heldout_non_members``."""
        return S.fpr_resolution(self.heldout_non_members)

    def supports_fpr(self, fpr: float) -> bool:
        """Whether a threshold at target ``fpr`` is established by the held-out non-members."""
        return supports_fpr(fpr, self.heldout_non_members)

    def check_fpr(self, fpr: float) -> None:
        """Refuse a target FPR finer than the held-out non-members resolve (1 / their number):
        below it the threshold flags no held-out non-member, and its true rate is not established."""
        if not self.supports_fpr(fpr):
            n_null, finest = self.heldout_non_members, self.finest_fpr
            raise InputError(f"--fpr {fpr:g} is finer than the calibration can resolve: its held-out set has {n_null} shadow "
                             f"non-members, so this bundle supports --fpr from {finest:.3g} (1/{n_null}) up to 1. Use --fpr "
                             f"{finest:.3g} or more, omit --fpr (accuracy threshold), or re-calibrate with more shadow images "
                             f"(--fpr {fpr:g} needs at least {math.ceil(1 / fpr - 1e-9)} held-out shadow non-members).")

    def tpr_fpr_at(self, threshold: float) -> tuple[float, float]:
        """Held-out (TPR, FPR) of the decision ``score >= threshold``."""
        pos = self.heldout_labels == 1
        flags = self.heldout_scores >= threshold
        return float(flags[pos].mean()), float(flags[~pos].mean())


@dataclass
class Calibration:
    """A loaded (or freshly fitted) calibration bundle."""

    views: ViewConfig
    attacks: dict[str, AttackCalibration]
    default_attack: str
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    sha256: str | None = None

    def get(self, kind: str | None) -> AttackCalibration:
        """The classifier ``kind`` (T, V or S), or the bundle's default."""
        k = (kind or self.default_attack).upper()
        if k not in self.attacks:
            raise InputError(f"--attack {kind!r} is not in this calibration; it has: {', '.join(self.attacks)}.")
        return self.attacks[k]

    def check_views(self, cfg: ViewConfig) -> None:
        """Refuse a scan whose view/feature configuration differs from the calibration's."""
        diff = self.views.differences(cfg)
        if diff:
            raise CalibrationError(
                "the scan's view configuration does not match the calibration's ("
                + "; ".join(diff)
                + "): membership features are only comparable under the same augmentation. "
                "Re-run the scan without overriding --views, or calibrate again with the new settings."
            )


def stratified_split(labels: np.ndarray, heldout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split into (fit indices, held-out indices)."""
    if not 0 < heldout_fraction < 1:
        raise InputError(f"held-out fraction must be in (0, 1), got {heldout_fraction}.")
    rng = np.random.default_rng(seed)
    fit, held = [], []
    for c in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = max(1, int(round(len(idx) * heldout_fraction)))
        if len(idx) - k < 1:
            raise InputError(f"too few shadow {'members' if c else 'non-members'} ({len(idx)}) to calibrate; provide more images.")
        held.append(idx[:k])
        fit.append(idx[k:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(held))


def fit_calibration(
    member_features: np.ndarray,
    non_member_features: np.ndarray,
    views: ViewConfig,
    kinds: tuple[str, ...] = ("T", "V", "S"),
    seed: int = 0,
    heldout_fraction: float = 0.4,
    attack_options: dict[str, dict[str, Any]] | None = None,
    meta: dict[str, Any] | None = None,
) -> Calibration:
    """Fit the classifiers on shadow features and measure them on held-out shadow data."""
    if len(member_features) < 4 or len(non_member_features) < 4:
        raise InputError(
            f"calibration needs at least 4 shadow members and 4 non-members with usable images "
            f"(got {len(member_features)} and {len(non_member_features)})."
        )
    x = np.concatenate([member_features, non_member_features]).astype(np.float32)
    y = np.concatenate([np.ones(len(member_features), int), np.zeros(len(non_member_features), int)])
    fit_idx, held_idx = stratified_split(y, heldout_fraction, seed)
    out: dict[str, AttackCalibration] = {}
    for kind in kinds:
        atk = make_attack(kind, **((attack_options or {}).get(kind, {})))
        atk.fit(x[fit_idx], y[fit_idx], seed=seed)
        sc = atk.score(x[held_idx])
        yl = y[held_idx]
        thr_acc = S.accuracy_threshold(yl, sc)
        m = S.binary_metrics(yl, sc, thr_acc).to_dict()
        thresholds = {"accuracy": float(thr_acc)}
        for f in FPR_TARGETS:
            if supports_fpr(f, int((yl == 0).sum())):  # a scan refuses the others (AttackCalibration.check_fpr)
                thresholds[fpr_key(f)] = float(S.threshold_at_fpr(sc[yl == 0], f))
        out[kind] = AttackCalibration(atk, thresholds, m, S.roc_points(yl, sc), sc.astype(np.float64), yl)
    best = max(out, key=lambda k: (out[k].metrics.get("roc_auc") or 0.0, out[k].metrics.get("tpr_at_1pct_fpr") or 0.0))
    m = dict(meta or {})
    m.update({"seed": seed, "heldout_fraction": heldout_fraction, "n_fit": int(len(fit_idx)), "n_heldout": int(len(held_idx)),
              "n_shadow_members": int(len(member_features)), "n_shadow_non_members": int(len(non_member_features)),
              "fpr_thresholds": fpr_targets_note(int((y[held_idx] == 0).sum()))})
    return Calibration(views=views, attacks=out, default_attack=best, meta=m)



def save_calibration(cal: Calibration, path: str | Path, extra_files: Mapping[str, Callable[[str], None]] | None = None) -> Path:
    """Write the bundle folder as one atomic commit, pinned as a whole (:mod:`auditmi.bundle`).

    ``extra_files`` (name -> writer of a path) adds data files covered by the same pin, e.g. the
    shadow encoders' weights of EncoderMI-R (:func:`auditmi.shadow_set.bundle_parts`).
    """
    from safetensors.numpy import save_file

    out = Path(path)
    arrays: dict[str, np.ndarray] = {}
    attacks_meta: dict[str, Any] = {}
    for kind, ac in cal.attacks.items():
        params, arrs = ac.attack.get_state()
        for k, v in arrs.items():
            arrays[f"{kind}.attack.{k}"] = np.ascontiguousarray(v)
        arrays[f"{kind}.heldout.scores"] = ac.heldout_scores.astype(np.float64)
        arrays[f"{kind}.heldout.labels"] = ac.heldout_labels.astype(np.int64)
        thr = {k: (v if np.isfinite(v) else None) for k, v in ac.thresholds.items()}
        attacks_meta[kind] = {"name": ac.attack.name, "params": params, "array_names": sorted(arrs), "thresholds": thr,
                              "heldout_metrics": ac.metrics, "roc": ac.roc}
    meta = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "auditmi_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "views": cal.views.to_dict(),
        "features": feature_config(cal.views.n_views),
        "default_attack": cal.default_attack,
        "attacks": attacks_meta,
        **{k: v for k, v in cal.meta.items() if k not in _RESERVED},
    }
    write_bundle(out, META_NAME, S.jsonable(meta), {ARRAYS_NAME: lambda tmp: save_file(arrays, tmp), **(extra_files or {})},
                 what="calibration bundle", keep=KEEP)
    cal.path, cal.sha256 = out, sha256_file(out / META_NAME)
    return out


#: Entries of a bundle folder carried over when it is rewritten: ``auditmi calibrate`` pre-trains its
#: shadow encoder (resumably) under ``OUT/shadow-encoder``, and the further EncoderMI-R shadows under ``OUT/shadows``.
KEEP = ("shadow-encoder", "shadows")


#: Data files a bundle may hold for EncoderMI-R's shadow encoders (auditmi.shadow_set, at most 64).
SHADOW_FILES = tuple(f"shadow-{k}.safetensors" for k in range(64))


def check_bundle_destination(path: str | Path) -> None:
    """Raise InputError now if a calibration bundle cannot be written to ``path`` (run it before any work)."""
    check_folder_destination(path, (META_NAME, ARRAYS_NAME, *SHADOW_FILES), "calibration bundle", KEEP)


_RESERVED = {"format", "schema_version", "auditmi_version", "views", "features", "attacks", "files", "default_attack", PIN_KEY}
_FIX = "Re-copy the bundle from its source, or re-run `auditmi calibrate`."


def _legacy(root: Path) -> Callable[[dict[str, Any]], str]:
    def reason(meta: dict[str, Any]) -> str:
        return (
            f"{root / META_NAME} was written by auditmi {meta.get('auditmi_version')} without a {PIN_KEY}: edits to its "
            f"metadata could not be detected, so this auditmi refuses it. Rebuild it with `auditmi calibrate --shadow-data DIR "
            f"--out {root}`, or, if you trust this copy, pin it with `python -m auditmi.bundle repin {root}`."
        )

    return reason


def _check_attack_meta(kind: str, am: Any) -> None:
    """Types and finite values of one classifier's metadata (after the pin held: a buggy or re-pinned writer)."""
    err = CalibrationError
    V.mapping(f"attacks.{kind}", am, error=err)
    V.mapping(f"attacks.{kind}.params", am.get("params"), error=err)
    names = am.get("array_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise err(f"attacks.{kind}.array_names must be a list of names, got {names!r}.")
    thr = V.mapping(f"attacks.{kind}.thresholds", am.get("thresholds"), error=err)
    if "accuracy" not in thr:
        raise err(f"attacks.{kind}.thresholds has no 'accuracy' threshold.")
    V.finite_float(f"attacks.{kind}.thresholds.accuracy", thr["accuracy"], error=err)
    for k, v in thr.items():
        if not isinstance(k, str) or (v is not None and not V.is_finite_number(v)):
            raise err(f"attacks.{kind}.thresholds.{k} must be a finite number (or null for 'none reachable'), got {v!r}.")
    met = V.mapping(f"attacks.{kind}.heldout_metrics", am.get("heldout_metrics"), error=err)
    for k, v in met.items():
        if v is not None and not V.is_finite_number(v):
            raise err(f"attacks.{kind}.heldout_metrics.{k} must be a finite number or null, got {v!r}.")
    for k in ("accuracy", "precision", "recall", "roc_auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr"):
        if met.get(k) is not None and not 0 <= met[k] <= 1:
            raise err(f"attacks.{kind}.heldout_metrics.{k} must lie in [0, 1], got {met[k]!r}.")
    roc = am.get("roc")
    if roc is not None:
        V.mapping(f"attacks.{kind}.roc", roc, error=err)
        fpr = V.finite_list(f"attacks.{kind}.roc.fpr", roc.get("fpr"), error=err)
        V.finite_list(f"attacks.{kind}.roc.tpr", roc.get("tpr"), length=len(fpr), error=err)


def _check_heldout(kind: str, scores: Any, labels: Any) -> None:
    err = CalibrationError
    s = V.array_like(f"{kind}.heldout.scores", scores, ndim=1, kind="f", error=err)
    lab = V.array_like(f"{kind}.heldout.labels", labels, shape=(len(s),), kind="iu", error=err)
    if not np.all(np.isfinite(s)):
        raise err(f"{kind}.heldout.scores holds NaN or infinite values.")
    if not np.all((lab == 0) | (lab == 1)) or not np.any(lab == 0):
        raise err(f"{kind}.heldout.labels must be 0/1 and include non-members.")


def load_calibration(path: str | Path) -> Calibration:
    """Load and verify a bundle; every problem is a :class:`CalibrationError` (exit 3) with the reason."""
    p = Path(path)
    recover(p.expanduser())
    mp = calibration_meta_path(p)
    root = mp.parent
    meta = read_metadata(mp, CalibrationError, "The bundle is corrupt; re-create or re-copy it.", what="calibration")
    files = verify(root, META_NAME, meta, fmt=FORMAT, schema_version=SCHEMA_VERSION, error=CalibrationError, fix=_FIX,
                   legacy=_legacy(root), what="calibration")
    if ARRAYS_NAME not in files:
        raise CalibrationError(f"{mp} does not list {ARRAYS_NAME}. {_FIX}")
    arrays = load_arrays(root / ARRAYS_NAME, CalibrationError, _FIX)
    try:
        views = ViewConfig.from_dict(meta["views"])
        attacks_meta = V.mapping("attacks", meta["attacks"], error=CalibrationError)
        attacks: dict[str, AttackCalibration] = {}
        for kind, am in attacks_meta.items():
            if kind not in ATTACKS:
                raise CalibrationError(f"{mp} names an unknown classifier {kind!r}.")
            _check_attack_meta(kind, am)
            pre = f"{kind}.attack."
            arrs = {k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)}
            missing = set(am.get("array_names", [])) - set(arrs)
            if missing:
                raise CalibrationError(f"classifier {kind} is missing arrays {sorted(missing)} in {root / ARRAYS_NAME}.")
            atk = attack_from_state(am["params"], arrs)
            scores, labels = arrays.get(f"{kind}.heldout.scores"), arrays.get(f"{kind}.heldout.labels")
            if scores is None or labels is None:
                raise CalibrationError(f"classifier {kind} has no held-out scores in {root / ARRAYS_NAME}.")
            _check_heldout(kind, scores, labels)
            thr = {k: (float(v) if v is not None else float("inf")) for k, v in am["thresholds"].items()}
            thr = _supported_thresholds(thr, int((labels == 0).sum()))
            attacks[kind] = AttackCalibration(atk, thr, am["heldout_metrics"], am.get("roc") or {"fpr": [], "tpr": []},
                                              scores, labels)
    except CalibrationError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, InputError) as e:
        # A malformed (but pinned) calibration.json is a bundle problem (exit 3), not a crash, and not
        # a usage error: e.g. n_views < 2 would otherwise blame --views.
        raise CalibrationError(f"{p} is malformed ({type(e).__name__}: {e}); re-run `auditmi calibrate`.") from e
    if not attacks:
        raise CalibrationError(f"{mp} holds no classifier.")
    default = meta.get("default_attack")
    if default not in attacks:
        raise CalibrationError(
            f"{mp} names default_attack {default!r}, which is not one of its classifiers ({', '.join(attacks)}). {_FIX}"
        )
    return Calibration(views=views, attacks=attacks, default_attack=default, meta=meta, path=root, sha256=sha256_file(mp))
