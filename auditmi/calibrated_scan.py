"""The EncoderMI-R step of a scan: signals of suspects and reference under the audited encoder and
every shadow of the bundle (same view parameters, each at its own input size, cached), computed
by the scan's engine in one call with the scan's own pass (local worker processes, or one Ray
run whose actors hold every encoder), then the calibrated scores (:mod:`auditmi.difficulty`).

Also the compatibility rule for reference-free verdicts: the EncoderMI-T/V/S classifiers were
fitted on a shadow encoder, and transfer to the audited encoder only when the two are alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auditmi.cache import FeatureCache
from auditmi.difficulty import CalibratedScores, calibrated_scores, uses_neighbours
from auditmi.encoders.base import Encoder
from auditmi.engines import EngineOptions, Head, compute_features, compute_sets
from auditmi.errors import InputError
from auditmi.measures import SIGNALS, decode_files, embed_whole, signal_cache_key
from auditmi.neighbours import reference_nn, suspect_nn
from auditmi.pipeline import FeatureSet
from auditmi.shadow_set import ShadowSet, shadow_encoder
from auditmi.signals import SignalSet, summaries
from auditmi.stats import ReferenceThreshold, reference_threshold
from auditmi.views import ViewConfig, working_side

Progress = Callable[[str, int, int], None]

#: Fewest reference images EncoderMI-R fits its difficulty model on (10 cross-fitting folds of a
#: regression on up to 12 signals); below it a scan falls back to the reference-free classifier.
MIN_REFERENCE = 30


def too_small_reason(n_reference: int) -> str:
    """Why a bundle with shadows still scores with the reference-free classifier."""
    return (f"the reference has {n_reference} usable images; EncoderMI-R needs at least {MIN_REFERENCE} to fit and cross-fit its "
            "difficulty model, so the reference-free classifier scored the images. Add reference images for per-image calibration.")


def cached_signals(paths: Sequence[Path], encoder: Encoder, views: ViewConfig, seed: int, cache_root: Path | None,
                   progress: Callable[[int, int], None] | None = None, engine: EngineOptions | None = None) -> SignalSet:
    """Raw signals of ``paths`` under ``encoder``, computed by the engine (local workers or Ray
    actors, :mod:`auditmi.engines`) and cached shard by shard: only images missing from the
    cache are embedded, and a killed pass resumes where it stopped."""
    opts = engine or EngineOptions()
    cache = FeatureCache(cache_root, signal_cache_key(encoder, views, seed)) if cache_root is not None else None
    fs = compute_features(paths, encoder, views, seed=seed, batch_size=opts.batch_size, cache=cache, num_workers=opts.workers,
                          progress=progress, engine=opts.engine, device=opts.device, what="signals")
    return SignalSet([r.path for r in fs.rows], [r.sha256 for r in fs.rows], fs.features, fs.skipped)


def shadow_heads(shadows: ShadowSet, device: torch.device, views: ViewConfig, seed: int, cache_root: Path | None) -> list[Head]:
    """The bundle's shadows as signal heads of an engine pass (each with its signal cache)."""
    dev = device if device.type == "cuda" else torch.device("cpu")
    heads = []
    for sh in shadows.shadows:
        enc = shadow_encoder(sh, dev)
        heads.append(Head(enc, SIGNALS, FeatureCache(cache_root, signal_cache_key(enc, views, seed)) if cache_root is not None else None))
    return heads


def signal_set(fs: FeatureSet) -> SignalSet:
    """The raw signals of a ``signals`` or ``both`` pass as a :class:`SignalSet`."""
    raw = fs.signals if fs.signals is not None else fs.features
    return SignalSet([r.path for r in fs.rows], [r.sha256 for r in fs.rows], raw, fs.skipped)


def score_signals(ts: SignalSet, tr: SignalSet, shadow_sets: Sequence[Sequence[FeatureSet]], shadows: ShadowSet, views: ViewConfig,
                  seed: int, encoders: Sequence[Encoder], progress: Progress | None = None) -> CalibratedScores:
    """EncoderMI-R scores from the audited encoder's signals of suspects (``ts``) and reference
    (``tr``) and each shadow's signal rows (``shadow_sets[k]``: its FeatureSets, any lists,
    matched to ``ts`` and ``tr`` by sha256). ``encoders``: the audited encoder, then the shadows,
    for a score that uses the neighbourhood signal (:func:`with_neighbours`)."""
    n_views = views.n_views
    nn = uses_neighbours(shadows.spec)

    def prog(stage: str) -> Callable[[int, int], None] | None:
        return (lambda d, t: progress(stage, d, t)) if progress else None

    decoded: dict[int, list[torch.Tensor]] = {}  # working side -> suspects + reference, decoded once for every encoder

    def with_nn(sus: np.ndarray, ref: np.ndarray, enc: Encoder, stage: str) -> tuple[np.ndarray, np.ndarray]:
        side = working_side(enc.input_size, views)
        if side not in decoded:
            decoded[side] = decode_files([*ts.paths, *tr.paths], side)
        return with_neighbours(sus, ref, ts.sha256, embed_whole(enc, decoded[side]), seed, prog(stage))

    sus_k, ref_k = [], []
    for i, sets in enumerate(shadow_sets):
        by_sha = {r.sha256: row for fs in sets for r, row in zip(fs.rows, fs.features, strict=True)}
        missing = [str(p) for p, h in [*zip(ts.paths, ts.sha256, strict=True), *zip(tr.paths, tr.sha256, strict=True)] if h not in by_sha]
        if missing:  # the local engine reads the files once per encoder: one changed or vanished meanwhile
            raise InputError(f"{len(missing)} image(s) could not be read again for the shadow encoders: {', '.join(missing[:5])}. "
                             "Keep the image folders unchanged while a scan runs, then re-run it (cached work is kept).")
        sus_k.append(summaries(np.stack([by_sha[h] for h in ts.sha256]), n_views))
        ref_k.append(summaries(np.stack([by_sha[h] for h in tr.sha256]), n_views))
        if nn:
            sus_k[-1], ref_k[-1] = with_nn(sus_k[-1], ref_k[-1], encoders[i + 1], f"neighbours: shadow {i + 1}/{shadows.k}")
    t_sus, t_ref = summaries(ts.raw, n_views), summaries(tr.raw, n_views)
    if nn:
        t_sus, t_ref = with_nn(t_sus, t_ref, encoders[0], "neighbours: audited encoder")
    return calibrated_scores(t_sus, np.stack(sus_k, axis=1), ts.sha256, t_ref, np.stack(ref_k, axis=1), tr.sha256, shadows, seed=seed)


@dataclass
class EncoderMIR:
    """EncoderMI-R result of a scan, aligned with the suspect and reference signal rows."""

    scores: CalibratedScores
    suspects: SignalSet
    reference: SignalSet


def run_encodermi_r(suspects: Sequence[Path], reference: Sequence[Path], encoder: Encoder, shadows: ShadowSet, views: ViewConfig,
                    seed: int, cache_root: Path | None, progress: Progress | None = None,
                    engine: EngineOptions | None = None) -> EncoderMIR:
    """Score suspects against the reference with EncoderMI-R (see module docstring).

    The signals of the audited encoder and of every shadow over suspects and reference, in one
    engine call (:func:`auditmi.engines.compute_sets`: one Ray run with ``--engine ray``). A
    scan takes the audited encoder's signals from its own pass instead (:func:`encodermi_r_step`).
    """
    cache = FeatureCache(cache_root, signal_cache_key(encoder, views, seed)) if cache_root is not None else None
    heads = [Head(encoder, SIGNALS, cache), *shadow_heads(shadows, encoder.device, views, seed, cache_root)]
    cb = (lambda d, t: progress(f"signals: encoder and {shadows.k} shadows", d, t)) if progress else None
    res = compute_sets([suspects, reference], heads, views, seed, engine, cb)
    ts, tr = signal_set(res[0][0]), signal_set(res[0][1])
    return EncoderMIR(score_signals(ts, tr, res[1:], shadows, views, seed, [h.encoder for h in heads], progress), ts, tr)


def with_neighbours(sus: np.ndarray, ref: np.ndarray, sus_sha256: Sequence[str], emb: np.ndarray, seed: int,
                    progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Suspect and reference summaries with the neighbourhood signal appended (:mod:`auditmi.neighbours`),
    from one encoder's whole-image embeddings ``emb`` of the suspects, then the reference."""
    n_sus = len(sus_sha256)
    e_sus, e_ref = emb[:n_sus], emb[n_sus:]
    if progress:
        progress(len(emb), len(emb))
    return (np.c_[sus, suspect_nn(e_sus, e_ref, sus_sha256, seed)], np.c_[ref, reference_nn(e_ref)])


def _family(desc: dict[str, Any]) -> str | None:
    arch = desc.get("architecture")
    if isinstance(arch, dict):
        return str(arch.get("arch"))
    if isinstance(arch, str):
        return arch
    return desc.get("model") or desc.get("backend")


def reference_free_mismatch(encoder: dict[str, Any], shadow: dict[str, Any] | None) -> str | None:
    """Why a reference-free verdict cannot be trusted for this encoder (None when it can).

    The reference-free classifiers were fitted on a shadow encoder; when the audited encoder has a
    different input size or architecture family, their calibrated rates do not transfer.
    """
    if not shadow:
        return None
    diffs = []
    if shadow.get("input_size") and encoder.get("input_size") and int(shadow["input_size"]) != int(encoder["input_size"]):
        diffs.append(f"input size {encoder['input_size']} vs the shadow's {shadow['input_size']}")
    fa, fb = _family(encoder), _family(shadow)
    if fa and fb and fa != fb:
        diffs.append(f"architecture family {fa} vs the shadow's {fb}")
    if not diffs:
        return None
    return ("the audited encoder differs from the shadow encoder the classifiers were calibrated on (" + "; ".join(diffs) +
            "), so their false-positive rate does not carry over. Give --reference with known non-members: images from the "
            "same source as the suspects, published after the encoder's release (so it cannot have trained on them).")


#: How per-image p-values are computed whenever there is a reference (see stats.conformal_pvalues).
P_VALUES = ("conformal: (#{reference > s} + u * (1 + #{reference = s})) / (1 + n_reference), u in (0, 1) from the seed and "
            "the image's sha256; exact under the null")


@dataclass(frozen=True)
class ScoreUsed:
    """Which score a scan used, and with EncoderMI-R how the calibration fits (for reports)."""

    name: str  # "EncoderMI-R" or the reference-free classifier's name
    calibrated: bool
    shadows: list[dict[str, Any]]
    spec: dict[str, Any] | None = None
    difficulty_r2: dict[str, float] | None = None
    r2_out_of_fold: float | None = None
    p_values: str = P_VALUES
    threshold: dict[str, Any] | None = None
    shadow_training_overlap: list[dict[str, Any]] | None = None
    note: str | None = None


@dataclass(frozen=True)
class RStep:
    """EncoderMI-R scores aligned with the scan's suspect and reference rows."""

    suspect_kept: np.ndarray  # bool over the suspect rows
    reference_kept: np.ndarray  # bool over the reference rows
    scores: np.ndarray  # kept suspects
    reference_scores: np.ndarray  # kept reference images, out-of-fold
    threshold: ReferenceThreshold
    used: ScoreUsed


def encodermi_r_step(suspects: FeatureSet, reference: FeatureSet, shadow_sets: Sequence[Sequence[FeatureSet]], shadows: ShadowSet,
                     views: ViewConfig, seed: int, fpr: float, encoders: Sequence[Encoder], progress: Progress | None = None) -> RStep:
    """The scoring step of a scan with EncoderMI-R: scores, out-of-fold reference scores, threshold at ``fpr``.

    ``suspects`` and ``reference``: the scan's distinct images from the audited encoder's ``both``
    pass (rows with their raw signals); ``shadow_sets``: each shadow's signal rows from the same
    engine call (:func:`auditmi.engines.compute_sets`); ``encoders``: the audited encoder, then the
    shadows (for the neighbourhood signal). Reference images every shadow trained on
    are left out (``reference_kept``; listed in the score section); a suspect every shadow trained
    on is refused with the reason, since its difficulty cannot be estimated.
    """
    ts, tr = signal_set(suspects), signal_set(reference)
    cs = score_signals(ts, tr, shadow_sets, shadows, views, seed, encoders, progress)
    if not cs.suspect_kept.all():
        bad = [str(p) for p, k in zip(ts.paths, cs.suspect_kept, strict=True) if not k]
        raise InputError(f"{len(bad)} suspect image(s) were training images of every shadow encoder of the calibration, so their "
                         f"difficulty cannot be estimated: {', '.join(bad[:5])}. Remove them from the suspects, or calibrate with "
                         "public images that do not include them.")
    thr = reference_threshold(cs.reference_scores, fpr)
    used = ScoreUsed(name="EncoderMI-R", calibrated=True, shadows=[s.describe() for s in shadows.shadows], spec=shadows.spec.to_dict(),
                     difficulty_r2=cs.r2, r2_out_of_fold=cs.r2_out_of_fold,
                     threshold=thr.to_dict(), shadow_training_overlap=cs.overlap, note=thr.note or None)
    return RStep(np.asarray(cs.suspect_kept, dtype=bool), np.asarray(cs.reference_kept, dtype=bool),
                 cs.suspect_scores, cs.reference_scores, thr, used)
