"""Hypothesis tests: per-image p-values, Benjamini-Hochberg, and the dataset-level rank,
permutation and binomial tests (dataset inference; see docs/method.md)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as _sps

from auditmi.errors import InputError
from auditmi.stats._common import (
    _check_rate,
    _counts,
    _scores,
    _ToDict,
)

#: Note attached to every binomial test: its validity rests on this assumption.
BINOMIAL_NOTE = (
    "relies on the calibrated false-positive rate transferring from the shadow encoder "
    "to the audited encoder"
)
# Sample sizes up to which rank_test uses the exact null distribution of U (when no ties).
_EXACT_MAX_N = 50



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
        expected_fpr: The false-positive rate tested against: the calibrated rate itself, or (from
            :func:`calibrated_binomial_test`) its upper confidence bound.
        flag_rate: ``n_flagged / n_total``.
        note: The assumption the test relies on.
        calibrated_fpr: The point estimate ``heldout_false_positives / heldout_non_members``
            (None when the rate was given directly).
        heldout_non_members: Held-out shadow non-members the rate was measured on (or None).
        heldout_false_positives: How many of them were flagged (or None).
        bound_confidence: Confidence of the Clopper-Pearson upper bound ``expected_fpr`` (or None).
        p_value_at_bound: The binomial tail probability at the bound, before the bound's own
            error probability ``1 - bound_confidence`` is added to make ``p_value`` (or None).
    """

    p_value: float
    n_flagged: int
    n_total: int
    expected_fpr: float
    flag_rate: float
    note: str = BINOMIAL_NOTE
    calibrated_fpr: float | None = None
    heldout_non_members: int | None = None
    heldout_false_positives: int | None = None
    bound_confidence: float | None = None
    p_value_at_bound: float | None = None



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


def tie_breakers(keys: Sequence[str], seed: int) -> np.ndarray:
    """One Uniform(0, 1) number per image, from ``(seed, key)`` (the image's sha256).

    Reproducible (same image, same seed: same number, on any machine) and independent of the
    image's score for every practical purpose (a cryptographic hash of the content). Used by
    :func:`conformal_pvalues` to place a suspect inside the gap between two reference scores.
    """
    out = np.empty(len(keys))
    for i, k in enumerate(keys):
        h = hashlib.sha256(f"auditmi-tie-break:{int(seed)}:{k}".encode()).digest()
        out[i] = (int.from_bytes(h[:7], "big") + 0.5) / 2.0**56
    return out


def conformal_pvalues(scores: Any, reference_scores: Any, tie_break: Any) -> np.ndarray:
    """Exact per-image p-values against known non-members (randomised conformal p-values).

    ``p = (#{ref > s} + u * (1 + #{ref == s})) / (1 + n_ref)`` with ``u`` the image's
    tie-breaker in (0, 1) (:func:`tie_breakers`). If a suspect's score is exchangeable with the
    reference scores (the null: it is a non-member like them), ``p`` is exactly Uniform(0, 1),
    so a test at level ``a`` rejects with probability exactly ``a``; and Benjamini-Hochberg over
    such p-values controls the false-discovery rate (conformal p-values are positively dependent
    through the shared reference: Bates, Candes, Lei, Romano and Sesia, Annals of Statistics
    2023). :func:`empirical_pvalues` is the same with ``u = 1``: valid but conservative, and never
    below ``1 / (1 + n_ref)``, so with 200 reference images Benjamini-Hochberg at 0.05 over 40
    suspects could never flag a lone image.

    The tie-breaker only decides where, inside the gap between two neighbouring reference
    scores, a suspect's p-value falls: p-values are ordered like the scores up to ``1 / (1 + n_ref)``.

    Args:
        scores: Suspect scores (higher = more member-like).
        reference_scores: Scores of known non-members (for EncoderMI-R: out-of-fold).
        tie_break: One number in (0, 1) per suspect.

    Returns:
        Float array of p-values in ``(0, 1)``, same order as ``scores``.

    Raises:
        InputError: On empty reference, non-finite scores, or tie-breakers outside (0, 1).
    """
    s = _scores(scores, "scores", allow_empty=True)
    ref = np.sort(_scores(reference_scores, "reference_scores"))
    u = np.asarray(tie_break, dtype=np.float64).ravel()
    if u.shape != s.shape or not np.all((u > 0) & (u < 1)):
        raise InputError("conformal p-values need one tie-breaker in (0, 1) per score.")
    n_gt = ref.size - np.searchsorted(ref, s, side="right")
    n_eq = np.searchsorted(ref, s, side="right") - np.searchsorted(ref, s, side="left")
    return (n_gt + u * (1.0 + n_eq)) / (1.0 + ref.size)




def fpr_upper_bound(false_positives: int, non_members: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper confidence bound on a false-positive rate.

    With ``false_positives`` of ``non_members`` flagged, the true rate is at most the returned
    value with probability ``confidence`` (exact, conservative). 0 of 40 at 97.5 % gives 0.088:
    a zero count on a small held-out set is not a zero rate.

    Raises:
        InputError: On invalid counts or a confidence outside (0, 1).
    """
    k, n = _counts(false_positives, non_members)
    c = float(confidence)
    if not (math.isfinite(c) and 0 < c < 1):
        raise InputError(f"confidence must lie in (0, 1), got {confidence!r}.")
    if k >= n:
        return 1.0
    return float(_sps.beta.ppf(c, k + 1, n - k))


def calibrated_binomial_test(n_flagged: int, n_total: int, heldout_false_positives: int, heldout_non_members: int,
                             bound_error: float) -> BinomialTest:
    """Binomial test of the flag count against an upper confidence bound on the calibrated FPR.

    The threshold's false-positive rate is only estimated, from ``heldout_false_positives`` of
    ``heldout_non_members`` held-out shadow non-members. Testing against that estimate (or
    ``(fp + 1) / (n + 1)``) rejects far too often when the held-out set is small. Instead the
    test uses the Clopper-Pearson upper bound ``u`` at confidence ``1 - bound_error`` and
    reports ``p = min(1, P(Binomial(n_total, u) >= n_flagged) + bound_error)`` (Berger & Boos
    1994): whatever the true rate ``f``, ``P(p <= t) <= P(u < f) + P(tail(f) <= t - bound_error)
    <= t``, so ``p`` is a valid p-value, given that the rate transfers from the shadow encoder
    to the audited one. The scan uses ``bound_error = alpha / 2``.

    Raises:
        InputError: On invalid counts, or ``bound_error`` outside (0, 1).
    """
    fp, n0 = _counts(heldout_false_positives, heldout_non_members)
    if n0 < 1:
        raise InputError("need at least one held-out non-member to bound the false-positive rate.")
    b = float(bound_error)
    if not (math.isfinite(b) and 0 < b < 1):
        raise InputError(f"bound_error must lie in (0, 1), got {bound_error!r}.")
    u = fpr_upper_bound(fp, n0, 1 - b)
    raw = binomial_test(n_flagged, n_total, u)
    return BinomialTest(p_value=min(1.0, raw.p_value + b), n_flagged=raw.n_flagged, n_total=raw.n_total, expected_fpr=u,
                        flag_rate=raw.flag_rate, calibrated_fpr=fp / n0, heldout_non_members=n0, heldout_false_positives=fp,
                        bound_confidence=1 - b, p_value_at_bound=raw.p_value)
