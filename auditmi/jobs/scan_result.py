"""The typed result of ``scan``: per-image rows, statistics, provenance (no JSON layout here).

:mod:`auditmi.jobs.scan` produces a :class:`ScanResult`; :mod:`auditmi.report.build` is the one
module that turns it into the report document.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditmi import stats as S
from auditmi.calibrated_scan import ScoreUsed
from auditmi.jobs.sets import Overlap
from auditmi.shift import ShiftCheck
from auditmi.verdict import Verdict
from auditmi.views import ViewConfig


@dataclass(frozen=True)
class ScoredImage:
    """One scored suspect image."""

    path: Path
    sha256: str
    score: float
    member_probability: float | None  # None with EncoderMI-R (a p-value, not a calibrated probability)
    member: bool  # flagged at the decision threshold
    p_value: float | None  # conformal p-value against the reference (None without one)
    bh_flag: bool | None  # Benjamini-Hochberg flag at the FDR (None without a reference)


@dataclass(frozen=True)
class SkippedFile:
    """A file that could not be used, the reason, and the set it belonged to."""

    path: Path
    reason: str
    set: str  # "suspect" or "reference"
    folder: bool = False  # a sub-folder that could not be listed (its files were never found)


@dataclass(frozen=True)
class IgnoredFiles:
    """Files left out while searching a set's folders (never opened), counted by reason."""

    set: str  # "suspect" or "reference"
    reason: str  # "hidden", "no extension", "extension .heic", "not a regular file"
    count: int


@dataclass(frozen=True)
class Threshold:
    """The per-image decision threshold and its calibrated rates."""

    value: float
    kind: str  # "accuracy" or "fpr=<rate>"
    expected_fpr: float  # calibrated false-positive rate at this threshold
    calibrated_tpr: float
    heldout_non_members: int  # held-out shadow non-members the rates were measured on
    heldout_false_positives: int  # how many of them the threshold flags


@dataclass(frozen=True)
class ScanStatistics:
    """The dataset-level statistics behind the verdict."""

    n_flagged: int
    used_fraction: S.FractionEstimate
    rank_test: S.RankTest | None
    binomial_test: S.BinomialTest | None
    power: S.PowerEstimate | None
    shift_check: ShiftCheck | None
    n_bh_flagged: int | None
    fdr: float | None


@dataclass(frozen=True)
class ReferenceSummary:
    """The reference (known non-member) set as used."""

    roots: list[str]  # the reference paths as given
    n_images: int
    n_skipped: int
    scores: list[float]  # one per distinct reference image
    n_distinct: int | None = None  # distinct reference images tested


@dataclass(frozen=True)
class CalibrationUsed:
    """Which calibration bundle and classifier scored the images."""

    path: Path | None
    bundle_sha256: str | None
    attack: str
    attack_name: str
    default_attack: str
    held_out_metrics: dict[str, Any]
    roc: dict[str, list[float]] | None
    thresholds: dict[str, float]  # only those at a target FPR the held-out set resolves
    shadow: dict[str, Any] | None
    finest_fpr: float | None = None  # the finest --fpr the calibration supports (1 / held-out shadow non-members)


@dataclass(frozen=True)
class ScanConfig:
    """The configuration that reproduces the scan."""

    views: ViewConfig
    features: dict[str, Any]  # the membership feature definition (auditmi.features.feature_config)
    seed: int
    batch_size: int
    device: str
    fpr: float | None
    fdr: float
    alpha: float
    cache: Path | None
    engine: str = "local"  # where the features were computed (auditmi.engines)


@dataclass(frozen=True)
class ScanTiming:
    """When the scan ran and how long its parts took."""

    started: _dt.datetime
    finished: _dt.datetime
    suspect: dict[str, float]
    reference: dict[str, float] | None
    from_cache: int


@dataclass(frozen=True)
class ScanResult:
    """Everything a scan found, with the provenance needed to reproduce it."""

    verdict: Verdict
    images: list[ScoredImage]
    n_images: int  # suspect image files found (scored + skipped)
    n_duplicates: int
    mean_score: float
    threshold: Threshold
    statistics: ScanStatistics
    reference: ReferenceSummary | None
    skipped: list[SkippedFile]
    duplicates: list[list[Path]]
    encoder: dict[str, Any]
    calibration: CalibrationUsed
    config: ScanConfig
    environment: dict[str, Any]
    timing: ScanTiming
    truth: dict[str, Any] | None = None  # comparison with known membership (added by the caller)
    score: ScoreUsed | None = None  # which score was used (EncoderMI-R or a reference-free classifier)
    n_distinct: int | None = None  # distinct suspect images tested (duplicates count once)
    overlap: Overlap | None = None  # suspects left out because they are reference images
    ignored: list[IgnoredFiles] = field(default_factory=list)  # files left out of the folder search


__all__ = ["CalibrationUsed", "IgnoredFiles", "ReferenceSummary", "ScanConfig", "ScanResult", "ScanStatistics", "ScanTiming", "ScoredImage", "SkippedFile", "Threshold"]
