"""Encoder-free distribution-shift check between the suspect and the reference images.

A dataset-level audit asks whether the data owner's images (the *suspects*) get higher
membership scores from the audited encoder than images known not to be in its training set
(the *reference*). That comparison only measures membership if the two sets are otherwise
alike. Later work showed that they often are not, and that this alone fakes membership: on a
distribution-matched CLIP benchmark published attacks fall to about 51 % AUC (Gomez, AAAI
2026), and "blind" classifiers that never look at the model beat many published attacks
(Das, Zhang & Tramer 2025); see docs/method.md, "What later work showed".

This module runs such a blind classifier *against ourselves* before a verdict is trusted:

* :func:`auditmi.descriptors.image_statistics` turns one image into a short vector of simple
  statistics that do not involve any encoder (colour, brightness, contrast, sharpness, size, ...);
* :func:`shift_check` asks whether a cross-validated logistic regression on those statistics
  can tell suspects from references better than chance (permutation test). If it can, the
  audit must report "inconclusive" rather than "likely used": a higher membership score could
  come from the difference between the sets, not from training.

Passing the check does not prove the sets are comparable (a shift the statistics do not see,
e.g. in content, can remain); failing it shows that they are not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as _sps

from auditmi.blind_classifier import _CVAuc
from auditmi.descriptors import STAT_DESCRIPTIONS, STAT_NAMES
from auditmi.errors import InputError
from auditmi.stats import _delong_variance, _jsonable

__all__ = [
    "STAT_NAMES",
    "STAT_DESCRIPTIONS",
    "MIN_PER_SET",
    "ShiftCheck",
    "shift_check",
]

# --------------------------------------------------------------------------------------
# The shift check
# --------------------------------------------------------------------------------------

#: Minimum number of images per set for a shift check.
MIN_PER_SET = 5
_TOO_FEW_REASON = "too few images for a shift check (need >= 5 per set)"

# Sequential permutation test (Besag & Clifford 1991): stop once this many permuted AUCs have
# reached the observed one (or more, when alpha needs it; see shift_check), since p can then
# no longer fall below alpha. 10 hits also make the reported p-value precise to about +-30 %.
# Permutations run in chunks so that a clearly null check stops after a few dozen.
_SEQ_HITS = 10
_FIRST_CHUNK = 20
_CHUNK = 60


@dataclass(frozen=True)
class ShiftCheck:
    """Result of :func:`shift_check`.

    Attributes:
        distinguishable: True when the suspect and reference images can be told apart without
            the encoder (``p_value < alpha`` and ``auc >= threshold_auc``); the audit must
            then say "inconclusive" instead of "likely used".
        auc: Cross-validated ROC AUC of the blind classifier (0.5 = chance; CV on pure noise
            tends to land slightly below 0.5); NaN when there were too few images.
        auc_ci: Approximate 95 % interval for ``auc`` (DeLong variance of the pooled
            out-of-fold scores; it ignores the extra variance from cross-validation), or None.
        p_value: Permutation p-value of ``auc`` (one-sided); NaN when not computed.
        n_suspects: Number of suspect images.
        n_reference: Number of reference images.
        method: How the check was done, in words.
        threshold_auc: Smallest AUC that counts as a shift.
        alpha: Significance level of the permutation test.
        top_differences: Up to 3 statistics with the largest absolute standardised difference
            (suspects minus reference, in pooled within-set standard deviations), as dicts
            with keys ``statistic``, ``description``, ``suspect_mean``, ``reference_mean``,
            ``standardised_difference``.
        reason: One sentence for the user.
        n_permutations: Number of permutations actually run (fewer than requested when the
            sequential test stopped early because the AUC was clearly null).
    """

    distinguishable: bool
    auc: float
    auc_ci: tuple[float, float] | None
    p_value: float
    n_suspects: int
    n_reference: int
    method: str
    threshold_auc: float
    alpha: float
    top_differences: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    n_permutations: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-able dict (NaN -> None, tuples -> lists)."""
        return _jsonable(asdict(self))


def _stat_matrix(values: Any, name: str) -> np.ndarray:
    """Validate an (N, S) matrix of finite statistics and return it as float64."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be an (N, S) array of numbers ({exc}).") from exc
    if arr.ndim == 2 and arr.shape[0] == 0:
        return arr
    if arr.ndim != 2:
        raise InputError(
            f"{name} must be 2-D (one row of image_statistics per image), got shape {arr.shape}."
        )
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.all(np.isfinite(arr), axis=1)))
        raise InputError(
            f"{name} has {bad} row(s) with NaN or infinite values; recompute them with "
            "auditmi.descriptors.image_statistics or drop those images."
        )
    return arr


def _standardised_differences(
    xs: np.ndarray, xr: np.ndarray, names: list[str]
) -> list[dict[str, Any]]:
    """Top 3 statistics by |mean difference| in pooled within-set standard deviations."""
    ms, mr = xs.mean(axis=0), xr.mean(axis=0)
    vs = xs.var(axis=0, ddof=1) if xs.shape[0] > 1 else np.zeros(xs.shape[1])
    vr = xr.var(axis=0, ddof=1) if xr.shape[0] > 1 else np.zeros(xr.shape[1])
    pooled = np.sqrt((vs + vr) / 2)
    # When a statistic is constant within each set (e.g. the grayscale flag: all colour vs all
    # grayscale), the pooled sd is 0 and Cohen's d infinite; fall back to the sd of both sets
    # together so the difference stays finite and still ranks near the top.
    overall = np.r_[xs, xr].std(axis=0, ddof=0)
    scale = np.where(pooled > 1e-12 * (1 + np.abs(ms) + np.abs(mr)), pooled, overall)
    diff = ms - mr
    d = np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)
    order = np.argsort(-np.abs(d), kind="stable")[:3]
    return [
        {
            "statistic": names[i],
            "description": STAT_DESCRIPTIONS.get(names[i], names[i]),
            "suspect_mean": float(ms[i]),
            "reference_mean": float(mr[i]),
            "standardised_difference": float(d[i]),
        }
        for i in order
        if d[i] != 0
    ]


def _fmt_p(p: float) -> str:
    return f"p={p:.2g}" if p >= 0.001 else "p<0.001"


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def shift_check(
    suspect_stats: np.ndarray,
    reference_stats: np.ndarray,
    *,
    alpha: float = 0.01,
    threshold_auc: float = 0.6,
    seed: int = 0,
    n_permutations: int = 200,
) -> ShiftCheck:
    """Can the suspect and reference images be told apart without the audited encoder?

    A "blind" classifier (Das, Zhang & Tramer 2025): L2 logistic regression (``C = 1``, the
    scikit-learn objective, fitted by batched Newton steps) on the standardised rows of
    :func:`image_statistics`, predicting suspect (1) vs reference (0). Its out-of-fold
    scores from stratified k-fold cross-validation (``k = min(5, smallest set size)``) give
    a ROC AUC; a permutation test re-runs the same cross-validation on shuffled labels and
    reports ``p = (1 + #{permuted AUC >= observed}) / (1 + permutations)`` (Phipson & Smyth
    2010), which is valid (super-uniform) whatever the statistics' distribution. When the
    AUC is clearly null the test stops early (Besag & Clifford 1991 sequential p-value,
    ``hits / permutations run``, after 10 permuted AUCs reach the observed one); it stops
    only when p can no longer fall below ``alpha``, so the decision is the same as with all
    permutations.

    ``distinguishable`` requires **both** ``p_value < alpha`` and ``auc >= threshold_auc``:
    with thousands of images a statistically significant but tiny difference (AUC 0.53) is
    too weak to explain a membership signal and should not block the audit, while with a few
    images a large AUC can be noise, which the p-value guards against.

    Args:
        suspect_stats: ``(n_suspects, S)`` rows of :func:`image_statistics`.
        reference_stats: ``(n_reference, S)`` rows for the reference (non-member) images.
        alpha: Significance level of the permutation test, in (0, 1).
        threshold_auc: Smallest cross-validated AUC that counts as a shift, in [0.5, 1].
        seed: Seed for the fold split and the permutations (results are reproducible).
        n_permutations: Maximum number of permutations; must allow ``p < alpha``
            (``1 / (n_permutations + 1) < alpha``, e.g. >= 100 for ``alpha = 0.01``).

    Returns:
        A :class:`ShiftCheck`. With fewer than 5 images in either set the check is not run:
        ``distinguishable`` is False, ``auc`` and ``p_value`` are NaN and the reason says so.

    Raises:
        InputError: On non-2-D or non-finite statistics, mismatched numbers of statistics,
            or invalid ``alpha`` / ``threshold_auc`` / ``n_permutations``.
    """
    xs = _stat_matrix(suspect_stats, "suspect_stats")
    xr = _stat_matrix(reference_stats, "reference_stats")
    if xs.shape[1] != xr.shape[1] and xs.shape[0] and xr.shape[0]:
        raise InputError(
            f"suspect_stats has {xs.shape[1]} statistics per image but reference_stats has "
            f"{xr.shape[1]}; compute both with the same version of image_statistics."
        )
    a = float(alpha)
    if not (math.isfinite(a) and 0 < a < 1):
        raise InputError(f"alpha must lie in (0, 1), got {alpha!r}.")
    thr = float(threshold_auc)
    if not (math.isfinite(thr) and 0.5 <= thr <= 1):
        raise InputError(f"threshold_auc must lie in [0.5, 1], got {threshold_auc!r}.")
    n_perm = int(n_permutations)
    if n_perm != n_permutations or n_perm < 1:
        raise InputError(f"n_permutations must be a positive integer, got {n_permutations!r}.")
    if 1.0 / (n_perm + 1) >= a:
        raise InputError(
            f"with n_permutations={n_perm} the smallest possible p-value is "
            f"1/{n_perm + 1} >= alpha={a:g}, so no shift could ever be detected; use at "
            f"least {math.floor(1 / a - 1) + 1} permutations."
        )

    n_s, n_r = int(xs.shape[0]), int(xr.shape[0])
    n_stats = xs.shape[1] if n_s else xr.shape[1]
    names = STAT_NAMES if n_stats == len(STAT_NAMES) else [f"stat_{i}" for i in range(n_stats)]
    common: dict[str, Any] = dict(n_suspects=n_s, n_reference=n_r, threshold_auc=thr, alpha=a)
    if min(n_s, n_r) < MIN_PER_SET:
        return ShiftCheck(
            distinguishable=False,
            auc=math.nan,
            auc_ci=None,
            p_value=math.nan,
            method="not run",
            top_differences=[],
            reason=_TOO_FEW_REASON,
            n_permutations=0,
            **common,
        )

    x = np.r_[xs, xr]
    y = np.r_[np.ones(n_s, dtype=np.int64), np.zeros(n_r, dtype=np.int64)]
    k = min(5, n_s, n_r)
    cv = _CVAuc(x, y, k, seed)
    n = y.size
    oof = cv.scores(np.arange(n)[None, :])
    observed = float(cv.auc_of(oof)[0])
    oof = oof[0]
    tol = 1e-12

    # Sequential stopping: once `stop_hits` permuted AUCs reach the observed one, the full
    # test could only give p >= (1 + stop_hits) / (1 + n_perm) >= alpha, and the sequential
    # p-value stop_hits / m >= stop_hits / n_perm >= alpha too, so the decision is unchanged.
    stop_hits = max(_SEQ_HITS, math.ceil(a * (n_perm + 1)))
    rng = np.random.default_rng([seed, 1])
    hits = 0
    done = 0
    stopped = False
    while done < n_perm:
        m = min(_FIRST_CHUNK if done == 0 else _CHUNK, n_perm - done)
        perms = np.argsort(rng.random((m, n)), axis=1)
        perm_aucs = cv.aucs(perms)
        ge = perm_aucs >= observed - tol
        if hits + int(ge.sum()) >= stop_hits:
            # Stop at the permutation where the stop_hits-th hit occurred.
            idx = int(np.flatnonzero(np.cumsum(ge) + hits >= stop_hits)[0])
            done += idx + 1
            hits = stop_hits
            stopped = True
            break
        hits += int(ge.sum())
        done += m
    p_value = hits / done if stopped else (1.0 + hits) / (1.0 + done)

    var = _delong_variance(oof[:n_s], oof[n_s:])
    auc_ci: tuple[float, float] | None = None
    if math.isfinite(var):
        half = float(_sps.norm.ppf(0.975)) * math.sqrt(max(var, 0.0))
        auc_ci = (max(0.0, observed - half), min(1.0, observed + half))

    top = _standardised_differences(xs, xr, names)
    distinguishable = bool(p_value < a and observed >= thr)
    stats_txt = f"AUC {observed:.2f}, {_fmt_p(p_value)}"
    if distinguishable:
        words = list(dict.fromkeys(t["description"] for t in top))
        what = f": they differ mostly in {_join(words)}" if words else ""
        reason = (
            f"suspect and reference images are distinguishable without the encoder "
            f"(cross-validated {stats_txt}){what}, so a higher membership score could come "
            f"from the difference, not from training"
        )
    elif p_value < a:
        reason = (
            f"a small encoder-free difference was detected ({stats_txt}), below the "
            f"AUC {thr:g} needed to count as a distribution shift"
        )
    elif observed >= thr:
        reason = (
            f"no significant encoder-free difference ({stats_txt}); with so few images a "
            f"difference may go unnoticed"
        )
    else:
        reason = f"no encoder-free difference detected ({stats_txt})"
    method = (
        f"logistic regression on {cv.n_features} standardised encoder-free image statistics, "
        f"{k}-fold stratified cross-validation, permutation test "
        f"({done} of {n_perm} permutations{', stopped early' if stopped else ''})"
    )
    return ShiftCheck(
        distinguishable=distinguishable,
        auc=observed,
        auc_ci=auc_ci,
        p_value=float(p_value),
        method=method,
        top_differences=top,
        reason=reason,
        n_permutations=done,
        **common,
    )
