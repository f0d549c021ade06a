"""``scan``: was this encoder trained on these images? Returns a typed :class:`ScanResult`.

The job runs as a chain of steps, one function each, so that a step can be replaced or extended
without touching the others:

    gather_images -> load_setup -> embed -> separate -> score -> statistics -> verdict.decide -> ScanResult

``embed`` is one engine call (:func:`auditmi.engines.compute_sets`) over suspects and reference:
the audited encoder's features and, when EncoderMI-R will score, its raw signals from the same
views (``what="both"``: each image is embedded once) and every shadow's signals; with
``--engine ray`` that is one Ray run for the whole scan.

* Suspects that are also reference images are left out of the suspects and reported; duplicate
  images count once in every test (:mod:`auditmi.jobs.sets`).
* With a reference set of known non-members, the dataset-level test is a one-sided
  Mann-Whitney rank test "suspects score higher than the reference" (valid for small sets), and
  per-image conformal p-values against the reference are flagged with Benjamini-Hochberg.
  Before any "likely-used", an encoder-free shift check asks whether suspects and reference
  differ in ways that are not membership; if they do, the verdict is "inconclusive".
* Without a reference, a binomial test compares the flagged count with the calibrated
  false-positive rate's upper confidence bound (``stats.calibrated_binomial_test``); the reason
  says it relies on calibration transfer from the shadow encoder to the audited one.

The JSON layout of the report is not known here: :mod:`auditmi.report.build` turns the result
into the document.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from auditmi import stats as S
from auditmi._paths import check_rates
from auditmi.cache import FeatureCache, default_cache_dir
from auditmi.calibrated_scan import MIN_REFERENCE, ScoreUsed, encodermi_r_step, reference_free_mismatch, shadow_heads, too_small_reason
from auditmi.calibration import AttackCalibration, Calibration, load_calibration
from auditmi.encoders import Encoder, load_encoder
from auditmi.engines import EngineOptions, Head, compute_sets
from auditmi.errors import InputError
from auditmi.features import feature_config
from auditmi.jobs.common import Progress, discover_set, environment, require_usable
from auditmi.jobs.scan_result import (
    CalibrationUsed,
    IgnoredFiles,
    ReferenceSummary,
    ScanConfig,
    ScanResult,
    ScanStatistics,
    ScanTiming,
    ScoredImage,
    SkippedFile,
    Threshold,
)
from auditmi.jobs.sets import Overlap, Separated, duplicate_groups, overlapping_files, separate
from auditmi.measures import BOTH, FEATURES, Measure
from auditmi.pipeline import FeatureSet, cache_key
from auditmi.shadow_set import NO_SHADOWS_REASON, ShadowSet, load_shadows
from auditmi.shift import shift_check
from auditmi.verdict import decide
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
    truth: str | Path | None = None  # the --truth file (read by the CLI): not counted as an ignored file


# ------------------------------------------------------------------------------------- results


# --------------------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class ScanInputs:
    """Step 1: the image files to scan, and the reference files (possibly none)."""

    suspects: list[Path]
    reference: list[Path]
    same_file: list[Path] = field(default_factory=list)  # suspect paths left out: they are reference files
    unreadable: list[SkippedFile] = field(default_factory=list)  # sub-folders that could not be listed
    ignored: list[IgnoredFiles] = field(default_factory=list)


@dataclass(frozen=True)
class ScanSetup:
    """Step 2: calibration, classifier, encoder, views and feature cache."""

    calibration: Calibration
    attack: AttackCalibration
    kind: str
    encoder: Encoder
    views: ViewConfig
    cache: FeatureCache | None
    shadows: ShadowSet | None = None  # the bundle's shadow encoders (EncoderMI-R), if any


@dataclass(frozen=True)
class Scores:
    """Step 4: per-image scores, probabilities and flags, and the reference scores."""

    scores: np.ndarray
    probabilities: np.ndarray
    flags: np.ndarray
    threshold: Threshold
    reference: np.ndarray | None
    used: ScoreUsed | None = None


def gather_images(images: Sequence[str | Path], opts: ScanOptions) -> ScanInputs:
    """Step 1: find the suspect and reference image files.

    Suspect files that are also reference files (a suspect folder that contains the reference
    folder, or the same folder given twice) are left out of the suspects before any work; when
    nothing else is left, the scan is refused.
    """
    sd = discover_set(images, "suspect")
    rd = discover_set(opts.reference, "reference") if opts.reference else None
    unreadable, ignored = [], []
    for what, d in (("suspect", sd), ("reference", rd)):
        if d is not None:
            if opts.truth is not None:  # the truth file kept next to the images is input, not an ignored file
                truth = set(overlapping_files(d.ignored, [Path(opts.truth)]))
                d = replace(d, ignored=[p for p in d.ignored if p not in truth])
            unreadable += [SkippedFile(s.path, s.reason, what, folder=True) for s in d.unreadable]
            ignored += [IgnoredFiles(what, k, n) for k, n in d.ignored_counts().items()]
    suspects, refs = sd.images, (rd.images if rd else [])
    same = overlapping_files(suspects, refs)
    if same:
        gone = set(same)
        suspects = [p for p in suspects if p not in gone]
        if not suspects:
            raise InputError(f"every suspect image is also a reference image ({len(same)} files): the suspects and the reference "
                             "must be different images. Give the reference (known non-members) and the images to audit as separate folders.")
    return ScanInputs(suspects, refs, same, unreadable, ignored)


def load_setup(opts: ScanOptions) -> ScanSetup:
    """Step 2: load and check the calibration, then load the encoder."""
    cal = load_calibration(opts.calibration)
    cfg = cal.views if opts.views is None else ViewConfig(n_views=opts.views)
    cal.check_views(cfg)
    ac = cal.get(opts.attack)
    if opts.fpr is not None and not (opts.reference and cal.meta.get("shadows")):  # before any work
        # With a reference and shadows, EncoderMI-R places the --fpr threshold on the reference
        # (its conformal quantile), not on the calibration's held-out set; if the reference turns
        # out too small for it, score() refuses such an --fpr.
        ac.check_fpr(opts.fpr)
    kind = (opts.attack or cal.default_attack).upper()
    enc = load_encoder(opts.encoder, opts.device, amp=opts.amp)
    cache = FeatureCache(opts.cache_dir or default_cache_dir(), cache_key(enc, cfg, opts.seed)) if opts.use_cache else None
    return ScanSetup(cal, ac, kind, enc, cfg, cache, load_shadows(cal.meta, cal.path))


@dataclass(frozen=True)
class Embedded:
    """Step 3: the audited encoder's rows of suspects and reference, and each shadow's signal rows."""

    suspects: FeatureSet
    reference: FeatureSet | None
    shadows: list[list[FeatureSet]] = field(default_factory=list)  # [shadow][suspects, reference]; empty without EncoderMI-R
    encoders: list[Encoder] = field(default_factory=list)  # the audited encoder, then the shadows (EncoderMI-R)


def embed(inputs: ScanInputs, setup: ScanSetup, opts: ScanOptions, progress: Progress | None) -> Embedded:
    """Step 3: membership features (and encoder-free statistics) of suspects and reference, in one
    engine call. When EncoderMI-R can score (a bundle with shadows and a reference of at least
    :data:`MIN_REFERENCE` files), the audited encoder's pass also keeps its raw signals
    (``both``: same views, each image embedded once) and every shadow's signals are computed in
    the same call (one Ray run with ``--engine ray``)."""
    calibrated = setup.shadows is not None and len(inputs.reference) >= MIN_REFERENCE
    root = setup.cache.root if setup.cache is not None else None
    if calibrated:
        assert setup.shadows is not None
        cache = Measure(BOTH, setup.views.n_views).open_cache(root, setup.encoder, setup.views, opts.seed) if root is not None else None
        heads = [Head(setup.encoder, BOTH, cache), *shadow_heads(setup.shadows, setup.encoder.device, setup.views, opts.seed, root)]
    else:
        heads = [Head(setup.encoder, FEATURES, setup.cache)]
    sets = [inputs.suspects, inputs.reference] if inputs.reference else [inputs.suspects]
    stage = "suspect" if not inputs.reference else "embedding suspect and reference images" + (
        f" (encoder and {len(heads) - 1} shadows)" if calibrated else "")
    cb = (lambda d, t: progress(stage, d, t)) if progress else None
    res = compute_sets(sets, heads, setup.views, opts.seed, EngineOptions(opts.engine, opts.workers, opts.batch_size, opts.device), cb)
    fs = res[0][0]
    require_usable(fs, "suspect")
    rs = res[0][1] if inputs.reference else None
    if rs is not None:
        require_usable(rs, "reference")
    return Embedded(fs, rs, res[1:], [h.encoder for h in heads] if calibrated else [])


def score(fs: FeatureSet, rs: FeatureSet | None, ac: AttackCalibration, fpr: float | None) -> Scores:
    """Step 4: score every image, and flag those at or above the decision threshold."""
    scores = ac.attack.score(fs.features)
    probs = ac.attack.member_probability(fs.features)
    if fpr is not None:
        ac.check_fpr(fpr)
        thr, thr_kind = ac.threshold_at(fpr), f"fpr={fpr:g}"
    else:
        thr, thr_kind = ac.thresholds["accuracy"], "accuracy"
    cal_tpr, cal_fpr = ac.tpr_fpr_at(thr)
    null = ac.heldout_labels == 0
    n_null, fp = int(null.sum()), int((ac.heldout_scores[null] >= thr).sum())
    ref_scores = ac.attack.score(rs.features) if rs is not None else None
    return Scores(scores, probs, scores >= thr, Threshold(thr, thr_kind, cal_fpr, cal_tpr, n_null, fp), ref_scores)


def score_calibrated(fs: FeatureSet, rs: FeatureSet, emb: Embedded, setup: ScanSetup, opts: ScanOptions,
                     progress: Progress | None) -> tuple[Scores, FeatureSet]:
    """Step 4 with a reference and a bundle carrying shadows: EncoderMI-R (see auditmi.calibrated_scan)."""
    assert setup.shadows is not None
    fpr = 0.05 if opts.fpr is None else opts.fpr
    r = encodermi_r_step(fs, rs, emb.shadows, setup.shadows, setup.views, opts.seed, fpr, emb.encoders, progress)
    t = r.threshold  # the audited encoder's TPR is unknown: 1.0 makes the used fraction a lower bound
    thr = Threshold(t.threshold, f"reference fpr={fpr:g} (conformal, out-of-fold)", t.expected_fpr, 1.0, t.n_reference, t.reference_above)
    return Scores(r.scores, np.full(len(r.scores), np.nan), r.scores >= t.threshold, thr, r.reference_scores, r.used), rs.subset(r.reference_kept)


def statistics(sc: Scores, fs: FeatureSet, rs: FeatureSet | None, setup: ScanSetup, opts: ScanOptions) -> tuple[ScanStatistics, np.ndarray | None, np.ndarray | None]:
    """Step 5: dataset-level tests (rank test + shift check, or binomial test), power, used fraction.

    ``fs`` and ``rs`` hold distinct images only (see :func:`separate`), so a duplicate counts once.
    Returns the statistics, and the per-image p-values and BH flags (None without a reference).
    """
    n, k = len(sc.scores), int(sc.flags.sum())
    rank = binom = shift = None
    pvals = bh = None
    if rs is not None:
        assert sc.reference is not None
        rank = S.rank_test(sc.scores, sc.reference)
        # Exact conformal p-values (the tie-breaker comes from the seed and the image's content).
        pvals = S.conformal_pvalues(sc.scores, sc.reference, S.tie_breakers([r.sha256 for r in fs.rows], opts.seed))
        bh = S.benjamini_hochberg(pvals, opts.fdr)
        shift = shift_check(fs.stats, rs.stats, seed=opts.seed)
        power = S.required_sample_size(rank.auc, alpha=opts.alpha, reference_size=rs.n)
    else:
        # Half of alpha bounds the calibrated FPR, half tests against the bound (calibrated_binomial_test).
        thr = sc.threshold
        binom = S.calibrated_binomial_test(k, n, thr.heldout_false_positives, thr.heldout_non_members, opts.alpha / 2)
        fpr = binom.expected_fpr
        need = S.binomial_sample_size(k / n, fpr, opts.alpha / 2)
        auc = float(setup.attack.metrics.get("roc_auc") or float("nan"))
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
    if opts.engine == "ray":  # Ray starts while the images, the bundle and the encoders load
        from auditmi.engines.ray_connect import start_connecting

        start_connecting()
    inputs = gather_images(images, opts)
    setup = load_setup(opts)
    emb = embed(inputs, setup, opts, progress)
    sep = separate(emb.suspects, emb.reference, inputs.same_file)
    fs, rs = sep.tested, sep.reference
    if rs is not None and emb.shadows and rs.n >= MIN_REFERENCE:
        sc, rs = score_calibrated(fs, rs, emb, setup, opts, progress)
    else:
        sc = score(fs, rs, setup.attack, opts.fpr)
        note = None if rs is None else (NO_SHADOWS_REASON if setup.shadows is None else too_small_reason(rs.n))
        sc = replace(sc, used=ScoreUsed(name=setup.attack.attack.name, calibrated=False, shadows=[], note=note))
    st, pvals, bh = statistics(sc, fs, rs, setup, opts)
    transfer = None if rs is not None else reference_free_mismatch(setup.encoder.describe(), (setup.calibration.meta.get("shadow") or {}).get("encoder"))
    verdict = decide(opts.alpha, rank=st.rank_test, shift=st.shift_check, power=st.power, binomial=st.binomial_test, transfer=transfer)

    rows = [ScoredImage(path=r.path, sha256=r.sha256, score=float(sc.scores[i]),
                        member_probability=None if sc.used and sc.used.calibrated else float(np.clip(sc.probabilities[i], 0, 1)),
                        member=bool(sc.flags[i]),
                        p_value=float(pvals[i]) if pvals is not None else None,
                        bh_flag=bool(bh[i]) if bh is not None else None)
            for i, r in zip(sep.inverse.tolist(), sep.suspects.rows, strict=True)]
    if opts.parquet is not None:
        from auditmi.parquet import write_image_table

        write_image_table(opts.parquet, rows, sep.suspects, feature_config(setup.views.n_views))
    skipped = [u for u in inputs.unreadable if u.set == "suspect"] + [SkippedFile(s.path, s.reason, "suspect") for s in fs.skipped]
    skipped += [u for u in inputs.unreadable if u.set == "reference"]
    if rs is not None:
        skipped += [SkippedFile(s.path, s.reason, "reference") for s in rs.skipped]
    reference = None
    if rs is not None and sc.reference is not None:
        reference = ReferenceSummary([str(p) for p in opts.reference], len(inputs.reference), len(rs.skipped),
                                     [float(s) for s in sc.reference], n_distinct=rs.n)
    cal, ac = setup.calibration, setup.attack
    calibration = CalibrationUsed(path=cal.path, bundle_sha256=cal.sha256, attack=setup.kind, attack_name=ac.attack.name,
                                  default_attack=cal.default_attack, held_out_metrics=ac.metrics, roc=ac.roc,
                                  thresholds=dict(ac.thresholds), shadow=cal.meta.get("shadow"), finest_fpr=ac.finest_fpr)
    config = ScanConfig(views=setup.views, features=feature_config(setup.views.n_views), seed=opts.seed, batch_size=int(fs.timing.get("batch_size", 0)), device=str(setup.encoder.device),
                        fpr=opts.fpr, fdr=opts.fdr, alpha=opts.alpha, cache=setup.cache.dir if setup.cache else None,
                        engine=opts.engine)
    t1 = _dt.datetime.now(_dt.timezone.utc)
    timing = ScanTiming(started=t0, finished=t1, suspect=fs.timing, reference=rs.timing if rs else None,
                        from_cache=fs.n_from_cache + (rs.n_from_cache if rs else 0))
    n_dup = len(sep.suspects.rows) - fs.n  # copies of a distinct suspect image (counted once in the tests)
    return ScanResult(verdict=verdict, images=rows, n_images=len(inputs.suspects), n_duplicates=n_dup,
                      mean_score=float(np.mean(sc.scores)), threshold=sc.threshold, statistics=st, reference=reference,
                      skipped=skipped, duplicates=duplicate_groups(sep.suspects), encoder=setup.encoder.describe(),
                      calibration=calibration, config=config, environment=environment(), timing=timing,
                      n_distinct=fs.n, overlap=sep.overlap, ignored=inputs.ignored, score=sc.used)


__all__ = [
    "CalibrationUsed",
    "Embedded",
    "IgnoredFiles",
    "ReferenceSummary",
    "ScanConfig",
    "ScanInputs",
    "ScanOptions",
    "ScanResult",
    "ScanSetup",
    "ScanStatistics",
    "ScanTiming",
    "Overlap",
    "Separated",
    "ScoredImage",
    "Scores",
    "SkippedFile",
    "Threshold",
    "embed",
    "gather_images",
    "load_setup",
    "run_scan",
    "score",
    "separate",
    "statistics",
]
