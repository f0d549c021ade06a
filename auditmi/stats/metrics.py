"""Per-image metrics, ROC curves and decision thresholds (label 1 = member; higher score = more member-like)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import metrics as _skm

from auditmi.errors import InputError
from auditmi.stats._common import (
    _check_rate,
    _labels_scores,
    _scores,
    _ToDict,
)


def _max_false_positives(fpr: float, n: int) -> int:
    """Largest count k of non-members allowed above a threshold so that k / n <= fpr.

    Rounding to 9 decimals first stops float noise (0.29 * 100 = 28.999...) from dropping
    an allowed false positive.
    """
    return int(math.floor(round(fpr * n, 9)))


def _roc_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (true-positive, false-positive) counts at every achievable threshold.

    Returns ``thresholds, tp, fp`` where index 0 is the "flag nothing" point (threshold just
    above the maximum score, tp = fp = 0) and index i >= 1 is the decision
    ``score >= thresholds[i]`` for the i-th largest distinct score.
    """
    order = np.argsort(-scores, kind="mergesort")
    s = scores[order]
    y = labels[order]
    # Last index of each run of equal scores: only there is a threshold achievable.
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    tp = np.cumsum(y)[ends]
    fp = (ends + 1) - tp
    thresholds = s[ends]
    top = np.nextafter(s[0], np.inf) if s.size else np.inf
    return np.r_[top, thresholds], np.r_[0, tp], np.r_[0, fp]




@dataclass(frozen=True)
class BinaryMetrics(_ToDict):
    """Per-image membership metrics at one threshold (decision: ``score >= threshold``).

    Attributes:
        accuracy: Fraction of correct decisions.
        precision: Members among flagged images; 0.0 when nothing is flagged.
        recall: Flagged among members (= TPR); NaN when there are no members.
        roc_auc: Threshold-free ROC AUC; NaN unless both classes are present.
        tpr_at_1pct_fpr: See :func:`tpr_at_fpr` with ``fpr=0.01``.
        tpr_at_0_1pct_fpr: See :func:`tpr_at_fpr` with ``fpr=0.001``.
        n_members: Number of label-1 samples.
        n_non_members: Number of label-0 samples.
        threshold: The threshold the decisions used.
        fpr_resolution: ``1 / n_non_members``: FPR targets below it cannot be resolved, so
            the low-FPR TPRs then fall back to the zero-false-positive point (NaN if no
            non-members).
    """

    accuracy: float
    precision: float
    recall: float
    roc_auc: float
    tpr_at_1pct_fpr: float
    tpr_at_0_1pct_fpr: float
    n_members: int
    n_non_members: int
    threshold: float
    fpr_resolution: float


def binary_metrics(labels: Any, scores: Any, threshold: float) -> BinaryMetrics:
    """Accuracy, precision, recall, ROC AUC and low-FPR TPRs of ``score >= threshold``.

    Args:
        labels: 1 = member, 0 = non-member.
        scores: Membership scores (higher = more member-like), same length as ``labels``.
        threshold: Decision threshold; an image is flagged as a member if its score is
            ``>= threshold``.

    Returns:
        A :class:`BinaryMetrics`. Metrics undefined for the given labels are NaN
        (``None`` in ``to_dict()``): ROC AUC and TPR@FPR need both classes, recall needs a
        member. Precision with no flagged image is 0.0 (scikit-learn ``zero_division=0``).

    Raises:
        InputError: On mismatched lengths, labels other than 0/1, or non-finite scores.
    """
    y, s = _labels_scores(labels, scores)
    t = float(threshold)
    if math.isnan(t):
        raise InputError("threshold is NaN; pass a number (e.g. from accuracy_threshold).")
    pred = (s >= t).astype(np.int64)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    both = n_pos > 0 and n_neg > 0
    return BinaryMetrics(
        accuracy=float(_skm.accuracy_score(y, pred)),
        precision=float(_skm.precision_score(y, pred, pos_label=1, zero_division=0)),
        recall=float(_skm.recall_score(y, pred, pos_label=1, zero_division=0))
        if n_pos > 0
        else math.nan,
        roc_auc=float(_skm.roc_auc_score(y, s)) if both else math.nan,
        tpr_at_1pct_fpr=tpr_at_fpr(y, s, 0.01),
        tpr_at_0_1pct_fpr=tpr_at_fpr(y, s, 0.001),
        n_members=n_pos,
        n_non_members=n_neg,
        threshold=t,
        fpr_resolution=fpr_resolution(n_neg) if n_neg > 0 else math.nan,
    )


def tpr_at_fpr(labels: Any, scores: Any, fpr: float) -> float:
    """True-positive rate at a target false-positive rate, never optimistic.

    Among the achievable ROC points (one per distinct score used as threshold, plus the
    "flag nothing" point at TPR = FPR = 0), returns the highest TPR whose FPR is **at most**
    ``fpr``. No interpolation between ROC points is done, so the value is one a real
    threshold attains on these scores. When ``fpr < 1 / n_non_members`` the only eligible
    points have zero false positives, so the result is the TPR at FPR = 0 (possibly 0.0):
    the target cannot be resolved with so few non-members (see :func:`fpr_resolution`).

    Args:
        labels: 1 = member, 0 = non-member.
        scores: Membership scores, higher = more member-like.
        fpr: Target false-positive rate in [0, 1].

    Returns:
        The TPR in [0, 1], or NaN when either class is missing.

    Raises:
        InputError: On invalid labels/scores or an ``fpr`` outside [0, 1].
    """
    y, s = _labels_scores(labels, scores)
    target = _check_rate(fpr, "fpr")
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return math.nan
    _, tp, fp = _roc_counts(y, s)
    # Compare integer counts, not float rates, so k / n == target is never lost to rounding.
    ok = fp <= _max_false_positives(target, n_neg)
    return float(tp[ok].max() / n_pos)


def roc_points(labels: Any, scores: Any, max_points: int = 200) -> dict[str, list[float]]:
    """ROC curve points for plotting (e.g. on log-log axes), downsampled.

    Uses scikit-learn's ``roc_curve`` (with collinear points dropped), then keeps at most
    ``max_points`` points evenly spaced along the curve, always including both endpoints
    (0, 0) and (1, 1).

    Args:
        labels: 1 = member, 0 = non-member.
        scores: Membership scores, higher = more member-like.
        max_points: Maximum number of points returned (>= 2).

    Returns:
        ``{"fpr": [...], "tpr": [...]}`` with non-decreasing lists of equal length; both
        lists are empty when either class is missing (no ROC curve exists).

    Raises:
        InputError: On invalid labels/scores or ``max_points < 2``.
    """
    y, s = _labels_scores(labels, scores)
    if int(max_points) < 2:
        raise InputError(f"max_points must be >= 2 to keep both ROC endpoints, got {max_points}.")
    if y.min() == y.max():
        return {"fpr": [], "tpr": []}
    fpr_arr, tpr_arr, _ = _skm.roc_curve(y, s, drop_intermediate=True)
    n = fpr_arr.size
    if n > max_points:
        idx = np.unique(np.round(np.linspace(0, n - 1, int(max_points))).astype(np.int64))
        fpr_arr, tpr_arr = fpr_arr[idx], tpr_arr[idx]
    return {"fpr": [float(v) for v in fpr_arr], "tpr": [float(v) for v in tpr_arr]}


def accuracy_threshold(labels: Any, scores: Any) -> float:
    """Threshold maximising accuracy of ``score >= threshold`` (EncoderMI-T's choice).

    Candidates are every distinct score plus the "flag nothing" threshold just above the
    maximum (``np.nextafter(max, inf)``). Ties in accuracy go to the **largest** threshold,
    i.e. the fewest false positives among equally accurate choices.

    Args:
        labels: 1 = member, 0 = non-member (e.g. shadow members / non-members).
        scores: Membership scores, higher = more member-like.

    Returns:
        The threshold, a finite float.

    Raises:
        InputError: On invalid labels/scores.
    """
    y, s = _labels_scores(labels, scores)
    thresholds, tp, fp = _roc_counts(y, s)
    n_neg = y.size - int(y.sum())
    correct = tp + (n_neg - fp)
    # thresholds are in decreasing order, so argmax's first hit is the largest threshold.
    return float(thresholds[int(np.argmax(correct))])


def fpr_resolution(n: int) -> float:
    """Smallest non-zero false-positive rate measurable with ``n`` non-members: ``1 / n``.

    A target FPR below this cannot be calibrated or verified: with ``n`` non-members, a
    single false positive is already an FPR of ``1 / n``.

    Raises:
        InputError: If ``n < 1``.
    """
    if int(n) < 1:
        raise InputError(f"need at least one non-member to measure a false-positive rate, got n={n}.")
    return 1.0 / int(n)


def threshold_at_fpr(non_member_scores: Any, fpr: float) -> float:
    """Conservative threshold whose empirical false-positive rate is at most ``fpr``.

    Returns the smallest threshold ``t`` among the observed scores (and the point just above
    the maximum) such that the fraction of ``non_member_scores >= t`` is ``<= fpr``. Ties
    are handled exactly: if several non-members share a score, ``t`` moves above the tie
    rather than overshooting the target.

    When ``fpr < 1 / n`` (too few non-members to resolve that rate, see
    :func:`fpr_resolution`), no non-member may be flagged, so the result is
    ``np.nextafter(max(non_member_scores), inf)``, the next float above the maximum: a
    threshold that flags no known non-member, but whose true FPR on new data is not
    established at the requested level. Callers should check ``fpr >= fpr_resolution(n)``
    and warn otherwise.

    Args:
        non_member_scores: Scores of known non-members (e.g. shadow non-members).
        fpr: Target false-positive rate in [0, 1].

    Returns:
        The threshold (decision ``score >= threshold``).

    Raises:
        InputError: On empty or non-finite scores or ``fpr`` outside [0, 1].
    """
    a = np.sort(_scores(non_member_scores, "non_member_scores"))
    target = _check_rate(fpr, "fpr")
    n = a.size
    k = _max_false_positives(target, n)
    uniq = np.unique(a)
    counts = n - np.searchsorted(a, uniq, side="left")  # #{a >= u}, decreasing in u
    ok = np.flatnonzero(counts <= k)
    if ok.size == 0:
        return float(np.nextafter(a[-1], np.inf))
    return float(uniq[ok[0]])


