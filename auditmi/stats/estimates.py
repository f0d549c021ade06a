"""Estimates: the used fraction of a collection, power / required sample size."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scipy import stats as _sps

from auditmi.errors import InputError
from auditmi.stats._common import (
    _check_rate,
    _counts,
    _ToDict,
)

#: Note used when a threshold's TPR does not exceed its FPR.
NO_POWER_NOTE = "classifier has no power at this threshold"


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
    common: dict[str, Any] = dict(
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


def binomial_sample_size(flag_rate: float, fpr: float, alpha: float, power: float = 0.8) -> int | None:
    """Smallest n at which a one-sided binomial test of ``fpr`` rejects with the given power.

    ``flag_rate`` is the true flag rate of the suspects; None when it does not exceed ``fpr``
    (no sample size reaches significance) or more than a million images would be needed.
    """
    if not (0 <= fpr < flag_rate <= 1):
        return None
    n = 1
    while n <= 1_000_000:
        crit = int(_sps.binom.isf(alpha, n, fpr)) + 1  # smallest k with P(X >= k) <= alpha
        if _sps.binom.sf(crit - 1, n, flag_rate) >= power:
            return n
        n = int(n * 1.25) + 1
    return None
