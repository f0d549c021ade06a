"""``scan``: was this encoder trained on these images? Returns a typed :class:`ScanResult`.

The job runs as a chain of steps, one function each, so that a step can be replaced or extended
without touching the others:

    gather_images -> load_setup -> embed -> score -> statistics -> verdict.decide -> ScanResult

* With a reference set of known non-members, the dataset-level test is a one-sided
  Mann-Whitney rank test "suspects score higher than the reference" (valid for small sets), and
  per-image empirical p-values against the reference are flagged with Benjamini-Hochberg.
  Before any "likely-used", an encoder-free shift check asks whether suspects and reference
  differ in ways that are not membership; if they do, the verdict is "inconclusive".
* Without a reference, a binomial test compares the flagged count with the calibrated
  false-positive rate of the decision threshold; the reason says it relies on calibration
  transfer from the shadow encoder to the audited one.

The JSON layout of the report is not known here: :mod:`auditmi.report.build` turns the result
into the document.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from auditmi import stats as S
from auditmi._paths import check_rates
from auditmi.cache import FeatureCache, default_cache_dir
from auditmi.calibration import AttackCalibration, Calibration, load_calibration
from auditmi.encoders import Encoder, load_encoder
from auditmi.features import feature_config
from auditmi.jobs.common import Progress, discover_images, environment, features, require_usable
from auditmi.pipeline import FeatureSet, cache_key
from auditmi.shift import ShiftCheck, shift_check
from auditmi.verdict import Verdict, decide
from auditmi.views import ViewConfig


@dataclass
class ScanOptions:
    """Everything a scan needs besides the images."""

    encoder: str
    calibration: str | Path
    attack: str | None = None
    views: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    seed: int = 0
    fpr: float | None = None
    fdr: float = 0.05
    alpha: float = 0.05
    reference: list[str | Path] = field(default_factory=list)
    cache_dir: str | Path | None = None
    use_cache: bool = True
    workers: int | None = None
    amp: bool = True
    engine: str = "local"  # local or ray (auditmi.engines)
    parquet: str | Path | None = None  # also write one row per scored image to this Parquet file


# ------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ScoredImage:
    """One scored suspect image."""

    path: Path
    sha256: str
    score: float
    member_probability: float
    member: bool  # flagged at the decision threshold
    p_value: float | None  # empirical p-value against the reference (None without one)
    bh_flag: bool | None  # Benjamini-Hochberg flag at the FDR (None without a reference)


@dataclass(frozen=True)
class SkippedFile:
    """A file that could not be used, the reason, and the set it belonged to."""

    path: Path
    reason: str
    set: str  # "suspect" or "reference"


@dataclass(frozen=True)
class Threshold:
    """The per-image decision threshold and its calibrated rates."""

    value: float
    kind: str  # "accuracy" or "fpr=<rate>"
    expected_fpr: float  # calibrated false-positive rate at this threshold
    calibrated_tpr: float
    test_fpr: float  # the conservative FPR the binomial test uses: (fp + 1) / (n + 1)


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
    scores: list[float]


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
    thresholds: dict[str, float]
    shadow: dict[str, Any] | None


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


# --------------------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class ScanInputs:
    """Step 1: the image files to scan, and the reference files (possibly none)."""

    suspects: list[Path]
    reference: list[Path]


@dataclass(frozen=True)
class ScanSetup:
    """Step 2: calibration, classifier, encoder, views and feature cache."""

    calibration: Calibration
    attack: AttackCalibration
    kind: str
    encoder: Encoder
    views: ViewConfig
    cache: FeatureCache | None


@dataclass(frozen=True)
class Scores:
    """Step 4: per-image scores, probabilities and flags, and the reference scores."""

    scores: np.ndarray
    probabilities: np.ndarray
    flags: np.ndarray
    threshold: Threshold
    reference: np.ndarray | None


def gather_images(images: Sequence[str | Path], opts: ScanOptions) -> ScanInputs:
    """Step 1: find the suspect and reference image files."""
    suspects = discover_images(images, "suspect")
    refs = discover_images(opts.reference, "reference") if opts.reference else []
    return ScanInputs(suspects, refs)


def load_setup(opts: ScanOptions) -> ScanSetup:
    """Step 2: load and check the calibration, then load the encoder."""
    cal = load_calibration(opts.calibration)
    cfg = cal.views if opts.views is None else ViewConfig(n_views=opts.views)
    cal.check_views(cfg)
    ac = cal.get(opts.attack)
    kind = (opts.attack or cal.default_attack).upper()
    enc = load_encoder(opts.encoder, opts.device, amp=opts.amp)
    cache = FeatureCache(opts.cache_dir or default_cache_dir(), cache_key(enc, cfg, opts.seed)) if opts.use_cache else None
    return ScanSetup(cal, ac, kind, enc, cfg, cache)


def embed(inputs: ScanInputs, setup: ScanSetup, opts: ScanOptions, progress: Progress | None) -> tuple[FeatureSet, FeatureSet | None]:
    """Step 3: membership features (and encoder-free statistics) of suspects and reference."""
    def run(paths: list[Path], stage: str) -> FeatureSet:
        return features(paths, setup.encoder, setup.views, opts.seed, opts.batch_size, setup.cache, opts.workers, progress, stage,
                        opts.engine, opts.device)

    fs = run(inputs.suspects, "suspect")
    require_usable(fs, "suspect")
    rs = run(inputs.reference, "reference") if inputs.reference else None
    if rs is not None:
        require_usable(rs, "reference")
    return fs, rs


def score(fs: FeatureSet, rs: FeatureSet | None, ac: AttackCalibration, fpr: float | None) -> Scores:
    """Step 4: score every image, and flag those at or above the decision threshold."""
    scores = ac.attack.score(fs.features)
    probs = ac.attack.member_probability(fs.features)
    if fpr is not None:
        thr, thr_kind = ac.threshold_at(fpr), f"fpr={fpr:g}"
    else:
        thr, thr_kind = ac.thresholds["accuracy"], "accuracy"
    cal_tpr, cal_fpr = ac.tpr_fpr_at(thr)
    n_null = int((ac.heldout_labels == 0).sum())
    # A zero observed FPR on a finite held-out set is not a zero rate: use the conservative (fp+1)/(n+1).
    fpr_for_test = (cal_fpr * n_null + 1) / (n_null + 1)
    ref_scores = ac.attack.score(rs.features) if rs is not None else None
    return Scores(scores, probs, scores >= thr, Threshold(thr, thr_kind, cal_fpr, cal_tpr, fpr_for_test), ref_scores)


def _binomial_power(flag_rate: float, fpr: float, alpha: float, power: float = 0.8) -> int | None:
    """Smallest n at which a one-sided binomial test of ``fpr`` rejects with the given power."""
    from scipy.stats import binom

    if not (0 <= fpr < flag_rate <= 1):
        return None
    n = 1
    while n <= 1_000_000:
        crit = int(binom.isf(alpha, n, fpr)) + 1  # smallest k with P(X >= k) <= alpha
        if binom.sf(crit - 1, n, flag_rate) >= power:
            return n
        n = int(n * 1.25) + 1
    return None


def statistics(sc: Scores, fs: FeatureSet, rs: FeatureSet | None, setup: ScanSetup, opts: ScanOptions) -> tuple[ScanStatistics, np.ndarray | None, np.ndarray | None]:
    """Step 5: dataset-level tests (rank test + shift check, or binomial test), power, used fraction.

    Returns the statistics, and the per-image p-values and BH flags (None without a reference).
    """
    n, k = len(sc.scores), int(sc.flags.sum())
    rank = binom = shift = None
    pvals = bh = None
    if rs is not None:
        assert sc.reference is not None
        rank = S.rank_test(sc.scores, sc.reference)
        pvals = S.empirical_pvalues(sc.scores, sc.reference)
        bh = S.benjamini_hochberg(pvals, opts.fdr)
        shift = shift_check(fs.stats, rs.stats, seed=opts.seed)
        power = S.required_sample_size(rank.auc, alpha=opts.alpha, reference_size=rs.n)
    else:
        fpr = sc.threshold.test_fpr
        binom = S.binomial_test(k, n, fpr)
        need = _binomial_power(k / n, fpr, opts.alpha)
        auc = float(setup.calibration.attacks[setup.kind].metrics.get("roc_auc") or float("nan"))
        power = S.PowerEstimate(n_suspects_needed=need, n_reference=None, auc=auc, alpha=opts.alpha, power=0.8,
                                note=("binomial test at the observed flag rate" if need else
                                      "flag rate does not exceed the calibrated FPR: no sample size reaches significance"))
    frac = S.used_fraction(k, n, sc.threshold.calibrated_tpr, sc.threshold.expected_fpr)
    st = ScanStatistics(n_flagged=k, used_fraction=frac, rank_test=rank, binomial_test=binom, power=power, shift_check=shift,
                        n_bh_flagged=int(bh.sum()) if bh is not None else None, fdr=opts.fdr if bh is not None else None)
    return st, pvals, bh


def run_scan(images: Sequence[str | Path], opts: ScanOptions, progress: Progress | None = None) -> ScanResult:
    """Audit ``images`` against an encoder; returns a :class:`ScanResult`."""
    t0 = _dt.datetime.now(_dt.timezone.utc)
    check_rates(opts.fpr, opts.fdr, opts.alpha)
    inputs = gather_images(images, opts)
    setup = load_setup(opts)
    fs, rs = embed(inputs, setup, opts, progress)
    sc = score(fs, rs, setup.attack, opts.fpr)
    st, pvals, bh = statistics(sc, fs, rs, setup, opts)
    verdict = decide(opts.alpha, rank=st.rank_test, shift=st.shift_check, power=st.power, binomial=st.binomial_test)

    rows = [ScoredImage(path=r.path, sha256=r.sha256, score=float(sc.scores[i]),
                        member_probability=float(np.clip(sc.probabilities[i], 0, 1)), member=bool(sc.flags[i]),
                        p_value=float(pvals[i]) if pvals is not None else None,
                        bh_flag=bool(bh[i]) if bh is not None else None)
            for i, r in enumerate(fs.rows)]
    if opts.parquet is not None:
        from auditmi.parquet import write_image_table

        write_image_table(opts.parquet, rows, fs, feature_config(setup.views.n_views))
    skipped = [SkippedFile(s.path, s.reason, "suspect") for s in fs.skipped]
    if rs is not None:
        skipped += [SkippedFile(s.path, s.reason, "reference") for s in rs.skipped]
    reference = None
    if rs is not None and sc.reference is not None:
        reference = ReferenceSummary([str(p) for p in opts.reference], len(inputs.reference), len(rs.skipped),
                                     [float(s) for s in sc.reference])
    cal, ac = setup.calibration, setup.attack
    calibration = CalibrationUsed(path=cal.path, bundle_sha256=cal.sha256, attack=setup.kind, attack_name=ac.attack.name,
                                  default_attack=cal.default_attack, held_out_metrics=ac.metrics, roc=ac.roc,
                                  thresholds=dict(ac.thresholds), shadow=cal.meta.get("shadow"))
    config = ScanConfig(views=setup.views, features=feature_config(setup.views.n_views), seed=opts.seed, batch_size=int(fs.timing.get("batch_size", 0)), device=str(setup.encoder.device),
                        fpr=opts.fpr, fdr=opts.fdr, alpha=opts.alpha, cache=setup.cache.dir if setup.cache else None,
                        engine=opts.engine)
    t1 = _dt.datetime.now(_dt.timezone.utc)
    timing = ScanTiming(started=t0, finished=t1, suspect=fs.timing, reference=rs.timing if rs else None,
                        from_cache=fs.n_from_cache + (rs.n_from_cache if rs else 0))
    return ScanResult(verdict=verdict, images=rows, n_images=len(inputs.suspects), n_duplicates=sum(len(g) - 1 for g in fs.duplicates),
                      mean_score=float(np.mean(sc.scores)), threshold=sc.threshold, statistics=st, reference=reference,
                      skipped=skipped, duplicates=[list(g) for g in fs.duplicates], encoder=setup.encoder.describe(),
                      calibration=calibration, config=config, environment=environment(), timing=timing)


__all__ = [
    "CalibrationUsed",
    "ReferenceSummary",
    "ScanConfig",
    "ScanInputs",
    "ScanOptions",
    "ScanResult",
    "ScanSetup",
    "ScanStatistics",
    "ScanTiming",
    "ScoredImage",
    "Scores",
    "SkippedFile",
    "Threshold",
    "embed",
    "gather_images",
    "load_setup",
    "run_scan",
    "score",
    "statistics",
]
