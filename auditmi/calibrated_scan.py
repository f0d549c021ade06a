"""The EncoderMI-R step of a scan: signals of suspects and reference under the audited encoder and
every shadow of the bundle (same view parameters, each at its own input size, cached), computed
by the scan's engine (local worker processes or Ray actors), then the calibrated scores
(:mod:`auditmi.difficulty`).

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
from auditmi.engines import EngineOptions, compute_features
from auditmi.errors import InputError
from auditmi.images import Skipped
from auditmi.measures import embed_whole_files, signal_cache_key
from auditmi.neighbours import reference_nn, suspect_nn
from auditmi.shadow_set import ShadowSet, shadow_encoder
from auditmi.signals import SignalSet, summaries
from auditmi.stats import ReferenceThreshold, reference_threshold
from auditmi.views import ViewConfig

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


def _split(ss: SignalSet, first: Sequence[Path], second: Sequence[Path]) -> tuple[SignalSet, SignalSet]:
    """Split the signals of ``first + second`` back into the two lists (rows and skipped files
    both come in path order, so each occurrence of a path is matched in turn)."""
    rows: list[list[int]] = [[], []]
    skipped: list[list[Skipped]] = [[], []]
    k = j = 0
    for part, ps in enumerate((first, second)):
        for p in ps:
            if k < len(ss.paths) and Path(ss.paths[k]) == Path(p):
                rows[part].append(k)
                k += 1
            elif j < len(ss.skipped) and Path(ss.skipped[j].path) == Path(p):
                skipped[part].append(ss.skipped[j])
                j += 1
    a, b = (SignalSet([ss.paths[i] for i in r], [ss.sha256[i] for i in r], ss.raw[r], skipped[part]) for part, r in enumerate(rows))
    return a, b


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

    One signal pass per encoder (the audited one, then each shadow) over suspects and reference
    together, run by ``engine`` (default: the local engine with its default workers).
    """
    def prog(stage: str) -> Callable[[int, int], None] | None:
        return (lambda d, t: progress(stage, d, t)) if progress else None

    both = [*suspects, *reference]
    ts, tr = _split(cached_signals(both, encoder, views, seed, cache_root, prog("signals: audited encoder"), engine), suspects, reference)
    sus_k, ref_k = [], []
    for i, sh in enumerate(shadows.shadows):
        enc = shadow_encoder(sh, encoder.device if encoder.device.type == "cuda" else torch.device("cpu"))
        a, b = _split(cached_signals([*ts.paths, *tr.paths], enc, views, seed, cache_root,
                                     prog(f"signals: shadow {i + 1}/{shadows.k}"), engine), ts.paths, tr.paths)
        if a.paths != ts.paths or b.paths != tr.paths:  # a file that changed or vanished since the audited encoder's pass
            gone = sorted({str(p) for p in [*ts.paths, *tr.paths]} - {str(p) for p in [*a.paths, *b.paths]})
            raise InputError(f"{len(gone)} image(s) could not be read again for the shadow encoders: {', '.join(gone[:5])}. "
                             "Keep the image folders unchanged while a scan runs, then re-run it (cached work is kept).")
        sus_k.append(summaries(a.raw, views.n_views))
        ref_k.append(summaries(b.raw, views.n_views))
        if uses_neighbours(shadows.spec):
            sus_k[-1], ref_k[-1] = with_neighbours(sus_k[-1], ref_k[-1], ts, tr, enc, views, seed, prog(f"neighbours: shadow {i + 1}/{shadows.k}"))
    n = views.n_views
    t_sus, t_ref = summaries(ts.raw, n), summaries(tr.raw, n)
    if uses_neighbours(shadows.spec):
        t_sus, t_ref = with_neighbours(t_sus, t_ref, ts, tr, encoder, views, seed, prog("neighbours: audited encoder"))
    cs = calibrated_scores(t_sus, np.stack(sus_k, axis=1), ts.sha256, t_ref, np.stack(ref_k, axis=1), tr.sha256, shadows, seed=seed)
    return EncoderMIR(cs, ts, tr)


def with_neighbours(sus: np.ndarray, ref: np.ndarray, ts: SignalSet, tr: SignalSet, encoder: Encoder, views: ViewConfig, seed: int,
                    progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Suspect and reference summaries with the neighbourhood signal under ``encoder`` appended
    (:mod:`auditmi.neighbours`; one whole-image embedding per image, in this process)."""
    total = len(ts.paths) + len(tr.paths)
    emb = embed_whole_files([*ts.paths, *tr.paths], encoder, views)
    if progress:
        progress(total, total)
    e_sus, e_ref = emb[: len(ts.paths)], emb[len(ts.paths):]
    return (np.c_[sus, suspect_nn(e_sus, e_ref, ts.sha256, seed)], np.c_[ref, reference_nn(e_ref)])


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


def encodermi_r_step(suspect_rows: Sequence[Any], reference_rows: Sequence[Any], encoder: Encoder, shadows: ShadowSet,
                     views: ViewConfig, seed: int, cache_root: Path | None, fpr: float, progress: Progress | None = None,
                     engine: EngineOptions | None = None) -> RStep:
    """The scoring step of a scan with EncoderMI-R: scores, out-of-fold reference scores, threshold at ``fpr``.

    Rows are the scan's image rows (``.path``). Reference images every shadow trained on are left
    out (``reference_kept``; listed in the score section); a suspect every shadow trained on is
    refused with the reason, since its difficulty cannot be estimated.
    """
    suspect_paths, reference_paths = [x.path for x in suspect_rows], [x.path for x in reference_rows]
    r = run_encodermi_r(suspect_paths, reference_paths, encoder, shadows, views, seed, cache_root, progress, engine)
    cs = r.scores
    if not cs.suspect_kept.all():
        bad = [str(p) for p, k in zip(r.suspects.paths, cs.suspect_kept, strict=True) if not k]
        raise InputError(f"{len(bad)} suspect image(s) were training images of every shadow encoder of the calibration, so their "
                         f"difficulty cannot be estimated: {', '.join(bad[:5])}. Remove them from the suspects, or calibrate with "
                         "public images that do not include them.")

    def kept(paths: Sequence[Path], ss: SignalSet, keep: np.ndarray) -> np.ndarray:
        ok = {p for p, k in zip(ss.paths, keep, strict=True) if k}
        return np.array([Path(p) in ok for p in paths], dtype=bool)

    thr = reference_threshold(cs.reference_scores, fpr)
    used = ScoreUsed(name="EncoderMI-R", calibrated=True, shadows=[s.describe() for s in shadows.shadows], spec=shadows.spec.to_dict(),
                     difficulty_r2=cs.r2, r2_out_of_fold=cs.r2_out_of_fold,
                     threshold=thr.to_dict(), shadow_training_overlap=cs.overlap, note=thr.note or None)
    return RStep(kept(suspect_paths, r.suspects, cs.suspect_kept), kept(reference_paths, r.reference, cs.reference_kept),
                 cs.suspect_scores, cs.reference_scores, thr, used)
