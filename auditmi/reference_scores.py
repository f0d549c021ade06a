"""EncoderMI-R scores of a scan: suspects against a reference set, calibrated by shadow encoders.

Given the summary signals (:mod:`auditmi.signals`) of the suspects and the reference images under
the audited encoder and under each shadow, this module

* masks, per image, the shadows that trained on it (same sha256): such a shadow would make the
  image look "easy" and bias its difficulty estimate; an image that every shadow trained on is
  excluded and reported;
* fits the difficulty model on ALL usable reference images and scores each suspect with it (a
  suspect's score depends only on that image, the encoder, the bundle, the reference set and the
  seed, never on the other suspects);
* scores the reference images out-of-fold (cross-fitting), so the null scores the suspects are
  compared with come from models that never saw them.

The statistics (rank test, p-values, BH, thresholds) are computed from these two score arrays by
:mod:`auditmi.stats` and :mod:`auditmi.thresholds`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from auditmi import difficulty as D
from auditmi.shadow_bundle import ShadowSet


@dataclass
class CalibratedScores:
    """Suspect and out-of-fold reference scores, and how the difficulty model fits."""

    suspect_scores: np.ndarray  # (n_suspects_kept,)
    reference_scores: np.ndarray  # (n_reference_kept,), out-of-fold
    suspect_kept: np.ndarray  # bool mask over the suspects given
    reference_kept: np.ndarray  # bool mask over the reference images given
    r2: dict[str, float]  # variance of each reference signal explained by the shadows (in-sample)
    r2_out_of_fold: float  # out-of-fold R^2 of the signals the score uses (see :func:`fit_quality`)
    overlap: list[dict[str, Any]] = field(default_factory=list)  # images some shadow trained on

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (scores are reported per image elsewhere)."""
        return {"r2": self.r2, "r2_out_of_fold": self.r2_out_of_fold, "n_suspects": int(self.suspect_kept.sum()),
                "n_reference": int(self.reference_kept.sum()), "shadow_training_overlap": self.overlap}


def _mask(shadow_sig: np.ndarray, shas: Sequence[str], shadows: ShadowSet, which: str,
          overlap: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    s = np.array(shadow_sig, dtype=np.float64, copy=True)
    hits = shadows.overlap(shas)
    keep = np.ones(len(shas), bool)
    for i, h in enumerate(shas):
        if h in hits:
            s[i, hits[h], :] = np.nan
            gone = len(hits[h]) == shadows.k
            keep[i] = not gone
            overlap.append({"set": which, "sha256": h, "shadows": [shadows.shadows[k].name for k in hits[h]],
                            "action": "image excluded (every shadow trained on it)" if gone else "those shadows not used for this image"})
    return s, keep


def fit_quality(target_ref: np.ndarray, shadow_ref: np.ndarray, spec: D.ScoreSpec, seed: int = 0) -> float:
    """Out-of-fold R^2 of the difficulty model on the reference, for the signals the score uses
    (weighted by |weight|): the share of the reference's between-image variance the shadows explain."""
    z = D.cross_fit_residuals(target_ref, shadow_ref, spec, seed=seed)
    f = D.fit(target_ref, shadow_ref, spec)
    cols = [D.SUMMARY_NAMES.index(s) for s in spec.signals]
    w = np.abs(np.asarray(spec.weights))
    r2 = []
    for k, j in enumerate(cols):
        y = np.asarray(target_ref, dtype=np.float64)[:, j]
        res = z[:, k] * f.sigma[k]
        r2.append(1.0 - float(np.var(res)) / max(float(np.var(y)), 1e-24))
    return float(np.sum(w * np.array(r2)) / max(float(w.sum()), 1e-12))


def calibrated_scores(target_sus: np.ndarray, shadow_sus: np.ndarray, sha_sus: Sequence[str],
                      target_ref: np.ndarray, shadow_ref: np.ndarray, sha_ref: Sequence[str],
                      shadows: ShadowSet, seed: int = 0) -> CalibratedScores:
    """EncoderMI-R scores of a scan.

    Args:
        target_sus, target_ref: (N, d) summary signals under the audited encoder.
        shadow_sus, shadow_ref: (N, K, d) summary signals under the bundle's K shadows.
        sha_sus, sha_ref: the images' sha256 (to find shadow training images among them).
        shadows: the bundle's shadows and score specification.
        seed: the scan seed (fixes the cross-fitting folds).
    """
    overlap: list[dict[str, Any]] = []
    ss, keep_s = _mask(shadow_sus, sha_sus, shadows, "suspect", overlap)
    sr, keep_r = _mask(shadow_ref, sha_ref, shadows, "reference", overlap)
    tr, sr = np.asarray(target_ref, dtype=np.float64)[keep_r], sr[keep_r]
    spec = shadows.spec
    f = D.fit(tr, sr, spec)
    sus = D.score(f, np.asarray(target_sus, dtype=np.float64)[keep_s], ss[keep_s])
    ref = D.cross_fit_scores(tr, sr, spec, seed=seed)
    return CalibratedScores(sus, ref, keep_s, keep_r, dict(zip(spec.signals, (float(v) for v in f.r2))),
                            fit_quality(tr, sr, spec, seed), overlap)
