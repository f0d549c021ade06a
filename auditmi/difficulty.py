"""EncoderMI-R: membership scores calibrated per image against shadow (reference) encoders.

Most of the spread of an alignment score lies between images: some images align well under
augmentation whatever the encoder. Shadow encoders that never saw an image say how well it
aligns "by difficulty alone"; on the reference set (known non-members of the audited encoder)
a regression learns how the audited encoder's signals relate to the shadows' signals, and an
image's score is how much better the audited encoder aligns it than that prediction
(difficulty calibration, Watson et al. 2022; LiRA offline, Carlini et al. 2022; SSLMem's
"alignment under encoders not trained on x" baseline, Wang et al. 2024).

Inputs are the signals of :data:`auditmi.signals.SCORE_SIGNALS` in that order: the summary
signals of :mod:`auditmi.signals`, then (when the score uses it) the neighbourhood signal of
:mod:`auditmi.neighbours`; a score that does not use the last may be given the summaries alone:

* ``target``: (N, d) for the audited encoder,
* ``shadows``: (N, K, d) for K shadows, NaN where a shadow must not be used for an image (it
  trained on it; only happens when a shadow plays the target, see :func:`shadow_game`).

A :class:`ScoreSpec` fixes the regression and the combination. It is chosen on the shadows
themselves (:func:`choose_spec`: one shadow plays the target, the others the references, and
its own training images and held-out public images give the labels), never on the images an
audit reports.

:func:`calibrated_scores` scores a scan: suspects by the model fitted on ALL usable reference
images (a suspect's score depends only on that image, the encoder, the bundle, the reference set
and the seed), the reference images out-of-fold (cross-fitting), after masking, per image, the
shadows that trained on it (same sha256; an image every shadow trained on is excluded and
reported).

Everything here is pure numpy: deterministic, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from auditmi.signals import SCORE_SIGNALS, SUMMARY_NAMES

if TYPE_CHECKING:
    from auditmi.shadow_set import ShadowSet

REGRESSIONS = ("diff", "ols_same", "ols_all")
RIDGE = 1e-3  # on standardised regressors: only guards against collinear summaries


@dataclass
class ScoreSpec:
    """How EncoderMI-R turns signals into one score (stored in the bundle)."""

    regression: str = "ols_all"  # "diff": s_T - mean s_ref; "ols_same": s_T ~ mean s_ref of the same signal; "ols_all": on all
    weights: list[float] = field(default_factory=lambda: [1.0] + [0.0] * (len(SUMMARY_NAMES) - 1))
    signals: list[str] = field(default_factory=lambda: list(SUMMARY_NAMES))
    folds: int = 10  # cross-fitting folds for the reference's own scores
    chosen_by: dict[str, Any] = field(default_factory=dict)  # how the choice was made (for reports)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"regression": self.regression, "weights": [float(w) for w in self.weights], "signals": list(self.signals),
                "folds": int(self.folds), "chosen_by": self.chosen_by}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoreSpec:
        """Inverse of :meth:`to_dict`."""
        if d.get("regression") not in REGRESSIONS:
            raise ValueError(f"unknown difficulty regression {d.get('regression')!r}; known: {', '.join(REGRESSIONS)}")
        spec = cls(regression=d["regression"], weights=[float(w) for w in d["weights"]], signals=list(d["signals"]),
                   folds=int(d.get("folds", 10)), chosen_by=dict(d.get("chosen_by", {})))
        if len(spec.weights) != len(spec.signals) or any(s not in SCORE_SIGNALS for s in spec.signals):
            raise ValueError("score spec: weights and signals must match and name known summary signals")
        return spec


@dataclass
class DifficultyFit:
    """A difficulty model fitted on reference images (one linear model per signal)."""

    spec: ScoreSpec
    coef: np.ndarray  # (J, p + 1): intercept first
    x_mean: np.ndarray  # (p,) regressor standardisation
    x_std: np.ndarray
    sigma: np.ndarray  # (J,) residual standard deviation on the fitting images
    r2: np.ndarray  # (J,) in-sample variance explained
    n: int


def _cols(spec: ScoreSpec) -> np.ndarray:
    return np.array([SCORE_SIGNALS.index(s) for s in spec.signals])


def uses_neighbours(spec: ScoreSpec) -> bool:
    """Whether the score needs the neighbourhood signal (:mod:`auditmi.neighbours`) of every image."""
    return any(s not in SUMMARY_NAMES for s in spec.signals)


def shadow_mean(shadows: np.ndarray) -> np.ndarray:
    """(N, K, d) -> (N, d): mean over the shadows usable for each image (NaN-aware)."""
    s = np.asarray(shadows, dtype=np.float64)
    cnt = np.sum(~np.isnan(s[:, :, 0]), axis=1)
    if np.any(cnt == 0):
        raise ValueError("an image has no usable shadow (every shadow trained on it)")
    return np.nanmean(s, axis=1)


def _design(spec: ScoreSpec, ref_mean: np.ndarray, j: int) -> np.ndarray:
    if spec.regression == "ols_all":
        return ref_mean
    return ref_mean[:, [j]]


def fit(target: np.ndarray, shadows: np.ndarray, spec: ScoreSpec) -> DifficultyFit:
    """Fit the difficulty model on known non-members of the audited encoder."""
    t = np.asarray(target, dtype=np.float64)
    m = shadow_mean(shadows)
    cols = _cols(spec)
    if cols.max() >= t.shape[1]:
        raise ValueError(f"the score uses {spec.signals[int(np.argmax(cols))]!r} but the signals given have only {t.shape[1]} columns")
    n = t.shape[0]
    if n < 10:
        raise ValueError(f"the difficulty model needs at least 10 reference images, got {n}")
    x_mean, x_std = m.mean(0), m.std(0) + 1e-12
    mz = (m - x_mean) / x_std
    coefs, sig, r2 = [], [], []
    for j in cols:
        y = t[:, j]
        if spec.regression == "diff":
            c = np.array([float(np.mean(y - m[:, j]))])  # prediction = s_ref + offset
            pred = m[:, j] + c[0]
        else:
            X = _design(spec, mz, j)
            A = np.c_[np.ones(n), X]
            reg = RIDGE * n * np.eye(A.shape[1])
            reg[0, 0] = 0.0
            c = np.linalg.solve(A.T @ A + reg, A.T @ y)
            pred = A @ c
        res = y - pred
        coefs.append(np.pad(c, (0, 1 + mz.shape[1] - c.size), constant_values=0.0))
        s = float(np.std(res, ddof=1)) + 1e-12
        sig.append(s)
        r2.append(1.0 - float(np.var(res)) / max(float(np.var(y)), 1e-24))
    return DifficultyFit(spec, np.array(coefs), x_mean, x_std, np.array(sig), np.array(r2), n)


def residuals(f: DifficultyFit, target: np.ndarray, shadows: np.ndarray) -> np.ndarray:
    """(N, J) standardised residuals: how much higher than predicted each signal is."""
    t = np.asarray(target, dtype=np.float64)
    m = shadow_mean(shadows)
    mz = (m - f.x_mean) / f.x_std
    out = np.empty((t.shape[0], len(f.spec.signals)))
    for k, j in enumerate(_cols(f.spec)):
        c = f.coef[k]
        if f.spec.regression == "diff":
            pred = m[:, j] + c[0]
        elif f.spec.regression == "ols_same":
            pred = c[0] + c[1] * mz[:, j]
        else:
            pred = c[0] + mz @ c[1:]
        out[:, k] = (t[:, j] - pred) / f.sigma[k]
    return out


def score(f: DifficultyFit, target: np.ndarray, shadows: np.ndarray) -> np.ndarray:
    """EncoderMI-R scores (higher = more member-like). Each image's score depends only on its own signals."""
    return residuals(f, target, shadows) @ np.asarray(f.spec.weights, dtype=np.float64)


def fold_ids(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """Seeded balanced fold assignment of n reference images."""
    k = max(2, min(int(folds), n))
    return np.random.default_rng(seed).permutation(np.arange(n) % k)


def cross_fit_scores(target: np.ndarray, shadows: np.ndarray, spec: ScoreSpec, seed: int = 0) -> np.ndarray:
    """Out-of-fold scores of the fitting images: each is scored by a model that never saw it.

    These are the scores to compare suspects with (rank test, p-values, thresholds): a suspect
    is scored by the model fitted on all reference images, which never saw the suspect either.
    """
    t = np.asarray(target, dtype=np.float64)
    s = np.asarray(shadows, dtype=np.float64)
    ids = fold_ids(t.shape[0], spec.folds, seed)
    out = np.empty(t.shape[0])
    for k in np.unique(ids):
        tr = ids != k
        f = fit(t[tr], s[tr], spec)
        out[~tr] = score(f, t[~tr], s[~tr])
    return out


def cross_fit_residuals(target: np.ndarray, shadows: np.ndarray, spec: ScoreSpec, seed: int = 0) -> np.ndarray:
    """Out-of-fold standardised residuals (N, J) of the fitting images."""
    t = np.asarray(target, dtype=np.float64)
    s = np.asarray(shadows, dtype=np.float64)
    ids = fold_ids(t.shape[0], spec.folds, seed)
    out = np.empty((t.shape[0], len(spec.signals)))
    for k in np.unique(ids):
        tr = ids != k
        out[~tr] = residuals(fit(t[tr], s[tr], spec), t[~tr], s[~tr])
    return out


# ------------------------------------------------------------------ scoring a scan


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


def fit_quality(target_ref: np.ndarray, shadow_ref: np.ndarray, spec: ScoreSpec, seed: int = 0) -> float:
    """Out-of-fold R^2 of the difficulty model on the reference, for the signals the score uses
    (weighted by |weight|): the share of the reference's between-image variance the shadows explain."""
    z = cross_fit_residuals(target_ref, shadow_ref, spec, seed=seed)
    f = fit(target_ref, shadow_ref, spec)
    cols = [SCORE_SIGNALS.index(s) for s in spec.signals]
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
    f = fit(tr, sr, spec)
    sus = score(f, np.asarray(target_sus, dtype=np.float64)[keep_s], ss[keep_s])
    ref = cross_fit_scores(tr, sr, spec, seed=seed)
    return CalibratedScores(sus, ref, keep_s, keep_r, dict(zip(spec.signals, (float(v) for v in f.r2), strict=True)),
                            fit_quality(tr, sr, spec, seed), overlap)
