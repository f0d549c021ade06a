"""Calibration bundles: shadow features -> fitted EncoderMI-T/-V/-S -> a versioned, hashed folder.

A bundle is a folder with ``calibration.json`` (metadata) and ``arrays.safetensors`` (classifier
weights and held-out shadow scores). The JSON records the sha256 of the arrays file; loading
checks it, the format, the schema version, and every classifier's arrays, and never unpickles.

Protocol (method.md, "The three inference classifiers"): shadow members and non-members are
split, stratified and seeded, into a fitting part and a held-out part (``heldout_fraction``).
Classifiers are fitted on the fitting part. On the held-out part we record the metrics
(accuracy, precision, recall at the accuracy-maximising threshold; ROC AUC; TPR at 1% and 0.1%
FPR), the ROC curve, the thresholds at the accuracy optimum and at 1%/0.1% FPR, and the raw
held-out scores, so a scan can place a threshold at any false-positive rate the user asks for.
The default classifier is the one with the best held-out ROC AUC.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from auditmi import __version__
from auditmi._io import atomic_write, atomic_write_text
from auditmi import stats as S
from auditmi.attacks import ATTACKS, Attack, attack_from_state, make_attack
from auditmi.encoders.base import sha256_file
from auditmi._paths import META_NAME, calibration_meta_path
from auditmi.errors import CalibrationError, InputError
from auditmi.features import feature_config
from auditmi.views import ViewConfig

FORMAT = "auditmi-calibration"
SCHEMA_VERSION = 1
ARRAYS_NAME = "arrays.safetensors"
FPR_TARGETS = (0.01, 0.001)


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
            thresholds[f"fpr={f:g}"] = float(S.threshold_at_fpr(sc[yl == 0], f))
        out[kind] = AttackCalibration(atk, thresholds, m, S.roc_points(yl, sc), sc.astype(np.float64), yl)
    best = max(out, key=lambda k: (out[k].metrics.get("roc_auc") or 0.0, out[k].metrics.get("tpr_at_1pct_fpr") or 0.0))
    m = dict(meta or {})
    m.update({"seed": seed, "heldout_fraction": heldout_fraction, "n_fit": int(len(fit_idx)), "n_heldout": int(len(held_idx)),
              "n_shadow_members": int(len(member_features)), "n_shadow_non_members": int(len(non_member_features))})
    return Calibration(views=views, attacks=out, default_attack=best, meta=m)



def save_calibration(cal: Calibration, path: str | Path) -> Path:
    """Write the bundle folder (arrays first, then the JSON that pins their hash)."""
    from safetensors.numpy import save_file

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
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
    atomic_write(out / ARRAYS_NAME, lambda tmp: save_file(arrays, tmp))
    meta = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "auditmi_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "views": cal.views.to_dict(),
        "features": feature_config(cal.views.n_views),
        "default_attack": cal.default_attack,
        "attacks": attacks_meta,
        "files": {ARRAYS_NAME: sha256_file(out / ARRAYS_NAME)},
        **{k: v for k, v in cal.meta.items() if k not in {"format", "schema_version", "views", "features", "attacks", "files"}},
    }
    atomic_write_text(out / META_NAME, json.dumps(S.jsonable(meta), indent=2))
    cal.path, cal.sha256 = out, sha256_file(out / META_NAME)
    return out


def load_calibration(path: str | Path) -> Calibration:
    """Load and verify a bundle; every problem is a :class:`CalibrationError` with the reason."""
    from safetensors.numpy import load_file

    p = Path(path)
    mp = calibration_meta_path(p)
    root = mp.parent
    try:
        meta = json.loads(mp.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CalibrationError(f"cannot read {mp}: {e}. The bundle is corrupt; re-create or re-copy it.") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CalibrationError(f"{mp} is not an auditmi calibration (format={meta.get('format') if isinstance(meta, dict) else None!r}).")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise CalibrationError(
            f"{mp} has calibration schema_version {meta.get('schema_version')} (written by auditmi {meta.get('auditmi_version')}), "
            f"but this auditmi {__version__} reads version {SCHEMA_VERSION}. Re-run `auditmi calibrate` with this version."
        )
    ap = root / ARRAYS_NAME
    if not ap.is_file():
        raise CalibrationError(f"{ap} is missing: the bundle is incomplete; re-copy the whole folder.")
    files = meta.get("files")
    expected = files.get(ARRAYS_NAME) if isinstance(files, dict) else None
    actual = sha256_file(ap)
    if expected != actual:
        raise CalibrationError(
            f"{ap} does not match the sha256 recorded in {META_NAME} (expected {str(expected)[:12]}..., got {actual[:12]}...): "
            "the bundle was modified or corrupted. Re-copy it from its source or re-run `auditmi calibrate`."
        )
    try:
        arrays = load_file(str(ap))
        views = ViewConfig.from_dict(meta["views"])
        attacks: dict[str, AttackCalibration] = {}
        for kind, am in meta["attacks"].items():
            if kind not in ATTACKS:
                raise CalibrationError(f"{mp} names an unknown classifier {kind!r}.")
            pre = f"{kind}.attack."
            arrs = {k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)}
            missing = set(am.get("array_names", [])) - set(arrs)
            if missing:
                raise CalibrationError(f"classifier {kind} is missing arrays {sorted(missing)} in {ap}.")
            atk = attack_from_state(am["params"], arrs)
            thr = {k: (float(v) if v is not None else float("inf")) for k, v in am["thresholds"].items()}
            attacks[kind] = AttackCalibration(atk, thr, am["heldout_metrics"], am.get("roc") or {"fpr": [], "tpr": []},
                                              arrays[f"{kind}.heldout.scores"], arrays[f"{kind}.heldout.labels"])
    except CalibrationError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, InputError) as e:
        # An edited calibration.json (it is not hash-pinned, only the arrays are) is a bundle problem
        # (exit 3), not a crash, and not a usage error: e.g. n_views < 2 would otherwise blame --views.
        raise CalibrationError(f"{p} is malformed ({type(e).__name__}: {e}); re-run `auditmi calibrate`.") from e
    if not attacks:
        raise CalibrationError(f"{mp} holds no classifier.")
    default = meta.get("default_attack")
    if default not in attacks:
        default = next(iter(attacks))
    return Calibration(views=views, attacks=attacks, default_attack=default, meta=meta, path=root, sha256=sha256_file(mp))
