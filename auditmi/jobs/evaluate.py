"""``evaluate``: per-classifier metrics on images whose membership the user knows (model builders)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auditmi import stats as S
from auditmi.cache import FeatureCache, default_cache_dir
from auditmi.calibration import load_calibration
from auditmi.encoders import load_encoder
from auditmi.images import Skipped
from auditmi.jobs.common import Progress, discover_set, environment, features, require_usable
from auditmi.jobs.sets import distinct, refuse_overlap
from auditmi.pipeline import cache_key
from auditmi.views import ViewConfig

#: Calibrated false-positive rates at which evaluate also reports the achieved TPR and FPR, those of
#: them the calibration resolves (:meth:`AttackCalibration.supports_fpr`); when it resolves neither,
#: its finest rate (1 / held-out shadow non-members) instead, as ``scan --fpr`` accepts nothing finer.
CALIBRATED_FPRS = (0.01, 0.001)


@dataclass(frozen=True)
class AtCalibratedFpr:
    """A classifier used at the threshold calibrated for a target FPR, measured on known images."""

    target_fpr: float
    threshold: float
    tpr: float
    achieved_fpr: float


@dataclass(frozen=True)
class ClassifierEvaluation:
    """One classifier's metrics on the known members and non-members."""

    kind: str
    metrics: S.BinaryMetrics  # at the accuracy threshold from the shadow calibration
    at_calibrated_fpr: list[AtCalibratedFpr]
    roc: dict[str, list[float]]


@dataclass(frozen=True)
class EvaluateResult:
    """Metrics of every calibrated classifier, with provenance."""

    created: _dt.datetime
    encoder: dict[str, Any]
    calibration_path: Path | None
    calibration_sha256: str | None
    default_attack: str
    finest_fpr: float  # the finest --fpr the calibration supports (1 / held-out shadow non-members)
    n_members: int
    n_non_members: int
    skipped: list[Skipped]
    classifiers: list[ClassifierEvaluation]
    views: ViewConfig
    seed: int
    environment: dict[str, Any]
    n_duplicates: int = 0  # copies of a member or non-member image (same sha256) left out: each image counts once


def run_evaluate(encoder: str, calibration: str | Path, members: Sequence[str | Path], non_members: Sequence[str | Path],
                 seed: int = 0, device: str = "auto", batch_size: int | None = None, cache_dir: str | Path | None = None,
                 use_cache: bool = True, progress: Progress | None = None, workers: int | None = None,
                 engine: str = "local") -> EvaluateResult:
    """Per-classifier metrics on images whose membership the user knows (model builders)."""
    md, nd = discover_set(members, "member"), discover_set(non_members, "non-member")
    refuse_overlap(md.images, nd.images, "member", "non-member")  # before any work
    cal = load_calibration(calibration)
    enc = load_encoder(encoder, device)
    cache = FeatureCache(cache_dir or default_cache_dir(), cache_key(enc, cal.views, seed)) if use_cache else None
    mf = features(md.images, enc, cal.views, seed, batch_size, cache, workers, progress, "members", engine, device)
    nf = features(nd.images, enc, cal.views, seed, batch_size, cache, workers, progress, "non-members", engine, device)
    require_usable(mf, "member")
    require_usable(nf, "non-member")
    refuse_overlap(mf, nf, "member", "non-member")  # the same image under two names
    n_dup = mf.n + nf.n
    mf, nf = distinct(mf), distinct(nf)  # copies of an image count once, as in scan and calibrate
    n_dup -= mf.n + nf.n
    x = np.concatenate([mf.features, nf.features])
    y = np.concatenate([np.ones(mf.n, int), np.zeros(nf.n, int)])
    classifiers = []
    for kind, ac in cal.attacks.items():
        sc = ac.attack.score(x)
        at = []
        for f in [f for f in CALIBRATED_FPRS if ac.supports_fpr(f)] or [ac.finest_fpr]:
            t = ac.threshold_at(f)
            fl = sc >= t
            at.append(AtCalibratedFpr(f, float(t), float(fl[y == 1].mean()), float(fl[y == 0].mean())))
        classifiers.append(ClassifierEvaluation(kind, S.binary_metrics(y, sc, ac.thresholds["accuracy"]), at, S.roc_points(y, sc)))
    return EvaluateResult(created=_dt.datetime.now(_dt.timezone.utc), encoder=enc.describe(), calibration_path=cal.path,
                          calibration_sha256=cal.sha256, default_attack=cal.default_attack,
                          finest_fpr=max(a.finest_fpr for a in cal.attacks.values()), n_members=mf.n, n_non_members=nf.n,
                          skipped=md.unreadable + nd.unreadable + mf.skipped + nf.skipped, classifiers=classifiers, views=cal.views, seed=seed,
                          environment=environment(), n_duplicates=n_dup)
