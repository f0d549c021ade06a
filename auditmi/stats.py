"""Statistics for membership audits: per-image metrics, thresholds and dataset-level tests.

Pure numpy / scipy / scikit-learn; no torch.

Conventions used everywhere in this module:

* label ``1`` = member (the positive class), label ``0`` = non-member;
* a higher score = more member-like; a decision is ``score >= threshold``;
* every result dataclass is frozen and has ``to_dict()`` returning JSON-able values
  (Python ``float``/``int``/``str``/``list``; NaN and infinities become ``None``).

Why both per-image and dataset-level statistics: EncoderMI (Liu et al., CCS 2021) reports
per-image accuracy / precision / recall; since Carlini et al. 2022 the standard also asks for
the true-positive rate at low false-positive rates (1 %, 0.1 %) and a ROC curve; and a data
owner's real question ("was my collection used?") is answered by aggregating many per-image
scores against known non-members into one p-value (dataset inference; see docs/method.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
from scipy import stats as _sps
from sklearn import metrics as _skm

from auditmi.errors import InputError

__all__ = [
    "BinaryMetrics",
    "RankTest",
    "BinomialTest",
    "FractionEstimate",
    "PowerEstimate",
    "binary_metrics",
    "tpr_at_fpr",
    "roc_points",
    "accuracy_threshold",
    "threshold_at_fpr",
    "fpr_resolution",
    "empirical_pvalues",
    "benjamini_hochberg",
    "rank_test",
    "permutation_test",
    "binomial_test",
    "used_fraction",
    "required_sample_size",
    "bootstrap_ci",
]

#: Note attached to every binomial test: its validity rests on this assumption.
BINOMIAL_NOTE = (
    "relies on the calibrated false-positive rate transferring from the shadow encoder "
    "to the audited encoder"
)
#: Note used when a threshold's TPR does not exceed its FPR.
NO_POWER_NOTE = "classifier has no power at this threshold"

# Sample sizes up to which rank_test uses the exact null distribution of U (when no ties).
_EXACT_MAX_N = 50


# --------------------------------------------------------------------------------------
# JSON helpers and input validation
# --------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and non-finite floats into JSON-able values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


#: Public name of the JSON conversion used by every result's ``to_dict``.
jsonable = _jsonable


class _ToDict:
    """Mixin giving frozen result dataclasses a JSON-able ``to_dict``."""

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-able dict (NaN/inf -> None, tuples -> lists)."""
        return _jsonable(asdict(self))  # type: ignore[call-overload]


def _scores(values: Any, name: str, *, allow_empty: bool = False) -> np.ndarray:
    """Validate a 1-D array of finite scores and return it as float64."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a 1-D array of numbers ({exc}).") from exc
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {arr.shape}; flatten it first.")
    if arr.size == 0 and not allow_empty:
        raise InputError(f"{name} is empty; at least one score is needed.")
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise InputError(
            f"{name} contains {bad} NaN or infinite value(s); drop or fix those images "
            "before computing statistics."
        )
    return arr


def _labels_scores(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate paired labels (0/1) and scores of equal length."""
    s = _scores(scores, "scores")
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != s.shape[0]:
        raise InputError(
            f"labels (shape {lab.shape}) and scores (shape {s.shape}) must be 1-D and of "
            "equal length."
        )
    if lab.dtype == np.bool_:
        return lab.astype(np.int64), s
    try:
        lab_f = lab.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"labels must be 0 (non-member) or 1 (member) ({exc}).") from exc
    if not np.all((lab_f == 0) | (lab_f == 1)):
        raise InputError("labels must be 0 (non-member) or 1 (member) only.")
    return lab_f.astype(np.int64), s


def _check_rate(value: float, name: str, *, open_low: bool = False, open_high: bool = False) -> float:
    """Validate that ``value`` is a rate in [0, 1] (optionally with open ends)."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a number in [0, 1], got {value!r}.") from exc
    lo_ok = v > 0 if open_low else v >= 0
    hi_ok = v < 1 if open_high else v <= 1
    if not (math.isfinite(v) and lo_ok and hi_ok):
        lo = "(0" if open_low else "[0"
        hi = "1)" if open_high else "1]"
        raise InputError(f"{name} must lie in {lo}, {hi}, got {value!r}.")
    return v


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


# --------------------------------------------------------------------------------------
# Per-image metrics, ROC and thresholds
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Per-image p-values and multiple testing
# --------------------------------------------------------------------------------------


def empirical_pvalues(scores: Any, reference_scores: Any) -> np.ndarray:
    """Per-suspect p-values against known non-members: ``(1 + #{ref >= s}) / (1 + n_ref)``.

    Under the null that a suspect's score is exchangeable with the reference (non-member)
    scores, each p-value is super-uniform: ``P(p <= a) <= a`` for every ``a``. The ``+1``
    counts the suspect itself, so no p-value is ever 0 and ties count against membership.

    Args:
        scores: Suspect scores (higher = more member-like).
        reference_scores: Scores of known non-members.

    Returns:
        Float array of p-values in ``(0, 1]``, same order as ``scores``; the smallest
        attainable value is ``1 / (1 + n_ref)``.

    Raises:
        InputError: On empty reference or non-finite scores.
    """
    s = _scores(scores, "scores", allow_empty=True)
    ref = np.sort(_scores(reference_scores, "reference_scores"))
    n_ge = ref.size - np.searchsorted(ref, s, side="left")
    return (1.0 + n_ge) / (1.0 + ref.size)


def benjamini_hochberg(pvalues: Any, q: float) -> np.ndarray:
    """Benjamini-Hochberg step-up procedure at false-discovery rate ``q``.

    Flags the ``k`` smallest p-values where ``k`` is the largest rank with
    ``p_(k) <= k * q / m``. Controls the FDR at ``q`` for independent (or positively
    dependent, PRDS) p-values; empirical p-values sharing one reference set are PRDS.

    Args:
        pvalues: P-values in [0, 1].
        q: Target false-discovery rate in (0, 1].

    Returns:
        Boolean array, True where the hypothesis is rejected (image flagged), in the
        original order.

    Raises:
        InputError: On p-values outside [0, 1] or ``q`` outside (0, 1].
    """
    p = _scores(pvalues, "pvalues", allow_empty=True)
    if np.any((p < 0) | (p > 1)):
        raise InputError("pvalues must lie in [0, 1].")
    qv = _check_rate(q, "q", open_low=True)
    m = p.size
    flags = np.zeros(m, dtype=bool)
    if m == 0:
        return flags
    order = np.argsort(p, kind="mergesort")
    below = np.flatnonzero(p[order] <= qv * np.arange(1, m + 1) / m)
    if below.size:
        flags[order[: below[-1] + 1]] = True
    return flags


# --------------------------------------------------------------------------------------
# Dataset-level tests
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankTest(_ToDict):
    """One-sided Mann-Whitney U test of "suspects score higher than the reference".

    Attributes:
        p_value: One-sided p-value.
        u_statistic: U for the suspects: #pairs (suspect, reference) where the suspect
            scores higher, ties counting half.
        auc: ``U / (n_suspects * n_reference)``: the probability that a random suspect
            outscores a random reference image (ties half); 0.5 = no signal.
        auc_ci: 95 % confidence interval for ``auc`` (DeLong variance, normal
            approximation, clipped to [0, 1]).
        n_suspects: Number of suspect scores.
        n_reference: Number of reference (known non-member) scores.
        method: ``"exact"`` or ``"asymptotic"`` (how the p-value was computed).
        ci_method: How ``auc_ci`` was computed.
    """

    p_value: float
    u_statistic: float
    auc: float
    auc_ci: tuple[float, float]
    n_suspects: int
    n_reference: int
    method: str
    ci_method: str = "delong"


def _delong_variance(x: np.ndarray, y: np.ndarray) -> float:
    """DeLong et al. (1988) variance of the empirical AUC P(X > Y) + 0.5 P(X = Y).

    Uses the structural components ("placements") computed with midranks, O(n log n).
    """
    n1, n2 = x.size, y.size
    if n1 < 2 or n2 < 2:
        return math.nan
    r_all = _sps.rankdata(np.r_[x, y])
    r_x = _sps.rankdata(x)
    r_y = _sps.rankdata(y)
    # v10[i] = fraction of references that suspect i beats (ties half); v01[j] = fraction of
    # suspects that beat reference j.
    v10 = (r_all[:n1] - r_x) / n2
    v01 = 1.0 - (r_all[n1:] - r_y) / n1
    return float(np.var(v10, ddof=1) / n1 + np.var(v01, ddof=1) / n2)


def rank_test(suspect_scores: Any, reference_scores: Any) -> RankTest:
    """One-sided Mann-Whitney U test: do suspects score higher than known non-members?

    The dataset-level question of a data owner ("was my collection used?"): under the null
    (suspects are exchangeable with the non-member reference) the p-value is valid whatever
    the score distribution. The p-value uses the exact null distribution of U when both
    sets have at most 50 scores and there are no ties; otherwise the normal approximation
    with tie correction and continuity correction (``scipy.stats.mannwhitneyu``).

    The AUC interval uses the DeLong variance with a normal approximation, clipped to
    [0, 1]; it is approximate (about 93-94 % actual coverage for 50 vs 100 scores at
    AUC 0.66 in simulation, closer to 95 % with more scores). It degenerates to a single point at perfect separation (AUC 0 or 1) and is NaN
    with fewer than 2 scores on either side; rely on ``p_value`` for the decision.

    Args:
        suspect_scores: Scores of the data owner's images.
        reference_scores: Scores of images known not to be in the training set, drawn from
            the same distribution as the suspects (otherwise distribution shift alone can
            produce a small p-value; see docs/method.md).

    Returns:
        A :class:`RankTest`.

    Raises:
        InputError: On empty or non-finite score arrays.
    """
    x = _scores(suspect_scores, "suspect_scores")
    y = _scores(reference_scores, "reference_scores")
    n1, n2 = x.size, y.size
    pooled = np.r_[x, y]
    has_ties = np.unique(pooled).size < pooled.size
    method = "exact" if (n1 <= _EXACT_MAX_N and n2 <= _EXACT_MAX_N and not has_ties) else "asymptotic"
    res = _sps.mannwhitneyu(x, y, use_continuity=True, alternative="greater", method=method)
    u = float(res.statistic)
    auc = u / (n1 * n2)
    var = _delong_variance(x, y)
    if math.isnan(var):
        ci = (math.nan, math.nan)
    else:
        half = float(_sps.norm.ppf(0.975)) * math.sqrt(max(var, 0.0))
        ci = (max(0.0, auc - half), min(1.0, auc + half))
    return RankTest(
        p_value=float(res.pvalue),
        u_statistic=u,
        auc=float(auc),
        auc_ci=ci,
        n_suspects=int(n1),
        n_reference=int(n2),
        method=method,
        ci_method="delong",
    )


def permutation_test(
    suspect_scores: Any,
    reference_scores: Any,
    n_permutations: int = 10000,
    seed: int = 0,
) -> float:
    """One-sided permutation test on the difference in means (suspects minus reference).

    The p-value is ``(1 + #{permuted statistic >= observed}) / (1 + n_permutations)``
    (Phipson & Smyth 2010): the ``+1`` makes it valid (never 0, super-uniform under the
    null) for random permutations drawn with replacement from the permutation group.

    Args:
        suspect_scores: Scores of the data owner's images.
        reference_scores: Scores of known non-members.
        n_permutations: Number of random relabellings (>= 1).
        seed: Seed of the numpy Generator, so results are reproducible.

    Returns:
        The one-sided p-value, in ``[1 / (1 + n_permutations), 1]``.

    Raises:
        InputError: On empty or non-finite scores or ``n_permutations < 1``.
    """
    x = _scores(suspect_scores, "suspect_scores")
    y = _scores(reference_scores, "reference_scores")
    b = int(n_permutations)
    if b < 1:
        raise InputError(f"n_permutations must be >= 1, got {n_permutations}.")
    pooled = np.r_[x, y]
    n1, n = x.size, pooled.size
    # With the pooled total fixed, mean(x) - mean(y) is increasing in sum(x), so comparing
    # suspect-group sums is equivalent and cheaper. A small tolerance counts permutations
    # equal to the observed one up to float rounding as ">=", which can only make p larger.
    observed = float(x.sum())
    tol = 1e-10 * float(np.abs(pooled).sum() + 1.0)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(b, 2_000_000 // max(n, 1)))
    hits = 0
    done = 0
    while done < b:
        m = min(chunk, b - done)
        perm = rng.permuted(np.broadcast_to(pooled, (m, n)), axis=1)
        hits += int(np.count_nonzero(perm[:, :n1].sum(axis=1) >= observed - tol))
        done += m
    return (1.0 + hits) / (1.0 + b)


@dataclass(frozen=True)
class BinomialTest(_ToDict):
    """One-sided binomial test: more images flagged than the false-positive rate explains?

    Attributes:
        p_value: ``P(Binomial(n_total, expected_fpr) >= n_flagged)``.
        n_flagged: Number of suspect images flagged as members.
        n_total: Number of suspect images.
        expected_fpr: The calibrated false-positive rate of the threshold used.
        flag_rate: ``n_flagged / n_total``.
        note: The assumption the test relies on.
    """

    p_value: float
    n_flagged: int
    n_total: int
    expected_fpr: float
    flag_rate: float
    note: str = BINOMIAL_NOTE


def _counts(n_flagged: int, n_total: int) -> tuple[int, int]:
    """Validate a (flagged, total) count pair."""
    try:
        k, n = int(n_flagged), int(n_total)
    except (TypeError, ValueError) as exc:
        raise InputError(f"n_flagged and n_total must be integers ({exc}).") from exc
    if k != n_flagged or n != n_total:
        raise InputError(f"n_flagged and n_total must be whole numbers, got {n_flagged}, {n_total}.")
    if n < 1 or not 0 <= k <= n:
        raise InputError(f"need 0 <= n_flagged <= n_total and n_total >= 1, got {k} of {n}.")
    return k, n


def binomial_test(n_flagged: int, n_total: int, fpr: float) -> BinomialTest:
    """One-sided exact binomial test of the flag count against the calibrated FPR.

    If none of the ``n_total`` suspects was used, each is flagged with probability ``fpr``
    (independently), so ``n_flagged ~ Binomial(n_total, fpr)``; a small p-value says more
    were flagged than chance explains. This relies on the FPR calibrated on the shadow
    encoder transferring to the audited encoder (see ``note``); the rank test against real
    non-members of the audited encoder does not need that assumption.

    Args:
        n_flagged: Number of suspects with ``score >= threshold``.
        n_total: Number of suspects.
        fpr: False-positive rate of that threshold, in [0, 1].

    Returns:
        A :class:`BinomialTest`.

    Raises:
        InputError: On invalid counts or rate.
    """
    k, n = _counts(n_flagged, n_total)
    p = _check_rate(fpr, "fpr")
    res = _sps.binomtest(k, n, p, alternative="greater")
    return BinomialTest(
        p_value=float(res.pvalue),
        n_flagged=k,
        n_total=n,
        expected_fpr=p,
        flag_rate=k / n,
    )


@dataclass(frozen=True)
class FractionEstimate(_ToDict):
    """Estimated fraction of a collection that was used for training.

    Attributes:
        estimate: Rogan-Gladen estimate ``(flag_rate - fpr) / (tpr - fpr)`` clipped to
            [0, 1]; None when the classifier has no power (``tpr <= fpr``).
        ci_low: Lower end of the interval (clipped to [0, 1]), or None.
        ci_high: Upper end of the interval (clipped to [0, 1]), or None.
        flag_rate: ``n_flagged / n_total``.
        n_flagged: Number of flagged images.
        n_total: Number of images in the collection.
        tpr: True-positive rate of the threshold (from calibration).
        fpr: False-positive rate of the threshold (from calibration).
        confidence: Confidence level of the interval.
        interval_method: How the flag-rate interval was computed.
        note: Caveats.
    """

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    flag_rate: float
    n_flagged: int
    n_total: int
    tpr: float
    fpr: float
    confidence: float
    interval_method: str
    note: str


def used_fraction(
    n_flagged: int,
    n_total: int,
    tpr: float,
    fpr: float,
    confidence: float = 0.95,
) -> FractionEstimate:
    """Estimate the fraction of a collection used in training from its flag rate.

    If a fraction ``pi`` of the images was used, the expected flag rate is
    ``pi * tpr + (1 - pi) * fpr``; solving gives the Rogan-Gladen (1978) estimator
    ``(flag_rate - fpr) / (tpr - fpr)``, clipped to [0, 1]. The interval is a
    Clopper-Pearson (exact) interval on the flag rate pushed through the same monotone map
    and clipped, so it covers ``pi`` with at least the requested confidence **when** ``tpr``
    and ``fpr`` are the true rates on the audited encoder. Their own calibration error is not
    included, and a TPR measured on a shadow encoder may not transfer.

    Args:
        n_flagged: Number of images with ``score >= threshold``.
        n_total: Number of images in the collection.
        tpr: True-positive rate of the threshold.
        fpr: False-positive rate of the threshold.
        confidence: Two-sided confidence level in (0, 1).

    Returns:
        A :class:`FractionEstimate`; ``estimate`` and the interval are None with the note
        "classifier has no power at this threshold" when ``tpr <= fpr``.

    Raises:
        InputError: On invalid counts, rates or confidence.
    """
    k, n = _counts(n_flagged, n_total)
    t = _check_rate(tpr, "tpr")
    f = _check_rate(fpr, "fpr")
    conf = _check_rate(confidence, "confidence", open_low=True, open_high=True)
    rate = k / n
    common = dict(
        flag_rate=rate,
        n_flagged=k,
        n_total=n,
        tpr=t,
        fpr=f,
        confidence=conf,
        interval_method="clopper-pearson",
    )
    if t <= f:
        return FractionEstimate(estimate=None, ci_low=None, ci_high=None, note=NO_POWER_NOTE, **common)
    ci = _sps.binomtest(k, n).proportion_ci(confidence_level=conf, method="exact")

    def correct(r: float) -> float:
        return min(1.0, max(0.0, (r - f) / (t - f)))

    return FractionEstimate(
        estimate=correct(rate),
        ci_low=correct(float(ci.low)),
        ci_high=correct(float(ci.high)),
        note=(
            "Rogan-Gladen correction; the interval treats tpr and fpr as exact and assumes "
            "they transfer from calibration to the audited encoder"
        ),
        **common,
    )


# --------------------------------------------------------------------------------------
# Power / sample size
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerEstimate(_ToDict):
    """Sample size needed for the one-sided Mann-Whitney test to detect a given AUC.

    Attributes:
        n_suspects_needed: Number of suspect images needed, or None (no effect /
            unreachable).
        n_reference: Number of reference images (given, or computed from the ratio), or None.
        auc: Assumed effect size ``P(suspect score > reference score)``.
        alpha: One-sided significance level.
        power: Requested power.
        note: How the numbers were obtained, or why there are none.
    """

    n_suspects_needed: int | None
    n_reference: int | None
    auc: float
    alpha: float
    power: float
    note: str


def required_sample_size(
    auc: float,
    alpha: float = 0.05,
    power: float = 0.8,
    reference_size: int | None = None,
    ratio: float | None = None,
) -> PowerEstimate:
    """Noether (1987) sample size for the one-sided Mann-Whitney test at effect ``auc``.

    Total size ``N = (z_{1-alpha} + z_{power})^2 / (12 c (1 - c) (auc - 0.5)^2)`` with
    ``c`` the suspects' share of ``N``. Equivalently ``n m / (n + m) >= K`` with
    ``K = (z_{1-alpha} + z_{power})^2 / (12 (auc - 0.5)^2)``, ``n`` suspects and ``m``
    references, which is what the fixed-reference mode solves:
    ``n = ceil(K m / (m - K))``, unreachable when ``m <= K`` (even infinitely many suspects
    cannot beat the reference set's own noise). Noether uses the null variance of U; it is
    accurate near AUC 0.5 and tends to be slightly conservative for larger effects.

    Args:
        auc: Expected ``P(suspect > reference)`` under membership (e.g. from calibration).
        alpha: One-sided significance level in (0, 1).
        power: Desired power in (0, 1).
        reference_size: If given, the fixed number of reference images; solve for suspects.
        ratio: If given (and ``reference_size`` is not), ``n_reference / n_suspects``;
            default 1 (equal sizes, ``c = 0.5``).

    Returns:
        A :class:`PowerEstimate`. ``n_suspects_needed`` is None with note "no effect" when
        ``auc <= 0.5``, and None with an explanatory note when a fixed reference set is too
        small.

    Raises:
        InputError: On invalid arguments, or when both ``reference_size`` and ``ratio`` are
            given.
    """
    a = _check_rate(auc, "auc")
    al = _check_rate(alpha, "alpha", open_low=True, open_high=True)
    pw = _check_rate(power, "power", open_low=True, open_high=True)
    if reference_size is not None and ratio is not None:
        raise InputError("give either reference_size or ratio, not both.")
    m: int | None = None
    if reference_size is not None:
        m = int(reference_size)
        if m != reference_size or m < 1:
            raise InputError(f"reference_size must be a positive integer, got {reference_size!r}.")
    r = 1.0 if ratio is None else float(ratio)
    if not (math.isfinite(r) and r > 0):
        raise InputError(f"ratio (n_reference / n_suspects) must be a positive number, got {ratio!r}.")

    base = dict(auc=a, alpha=al, power=pw)
    if a <= 0.5:
        return PowerEstimate(n_suspects_needed=None, n_reference=m, note="no effect to detect (suspects do not score above the reference, AUC <= 0.5)", **base)
    z = float(_sps.norm.ppf(1 - al) + _sps.norm.ppf(pw))
    k = z * z / (12.0 * (a - 0.5) ** 2)
    if m is not None:
        if m <= k:
            return PowerEstimate(
                n_suspects_needed=None,
                n_reference=m,
                note=(
                    f"unreachable: with {m} reference images the test cannot reach power "
                    f"{pw:g} at AUC {a:g} even with infinitely many suspects; at least "
                    f"{math.floor(k) + 1} reference images are needed"
                ),
                **base,
            )
        n = math.ceil(k * m / (m - k) - 1e-9)
        return PowerEstimate(
            n_suspects_needed=int(n),
            n_reference=m,
            note="Noether (1987) approximation, fixed reference set",
            **base,
        )
    c = 1.0 / (1.0 + r)  # suspects' share of the total
    total = k / (c * (1.0 - c))
    n = math.ceil(c * total - 1e-9)
    return PowerEstimate(
        n_suspects_needed=int(n),
        n_reference=int(math.ceil(r * n - 1e-9)),
        note=f"Noether (1987) approximation, n_reference / n_suspects = {r:g}",
        **base,
    )


def bootstrap_ci(
    values: Any,
    stat: Callable[[np.ndarray], float] = np.mean,
    n: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Seeded percentile-bootstrap confidence interval of ``stat(values)``.

    Args:
        values: 1-D sample.
        stat: Statistic applied to each resample (a 1-D array); default the mean.
        n: Number of bootstrap resamples.
        seed: Seed of the numpy Generator.
        confidence: Two-sided confidence level in (0, 1).

    Returns:
        ``(low, high)`` percentile interval.

    Raises:
        InputError: On empty or non-finite values or invalid ``n``/``confidence``.
    """
    v = _scores(values, "values")
    conf = _check_rate(confidence, "confidence", open_low=True, open_high=True)
    if int(n) < 1:
        raise InputError(f"n (bootstrap resamples) must be >= 1, got {n}.")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(int(n), v.size))
    boot = np.array([float(stat(v[row])) for row in idx])
    lo, hi = np.quantile(boot, [(1 - conf) / 2, 1 - (1 - conf) / 2])
    return float(lo), float(hi)
