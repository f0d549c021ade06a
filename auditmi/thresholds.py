"""Decision thresholds at a chosen false-positive rate, taken from the reference set.

The reference images are known non-members of the audited encoder; their (out-of-fold) scores
are a sample of the null score distribution. With ``n`` reference scores, flagging a new image
when its score exceeds the ``(m+1)``-th largest reference score gives, for a null image
exchangeable with the reference, a false-positive probability of exactly ``(m+1)/(n+1)``
(continuous scores; ties only lower it). The rule takes the largest ``m`` with
``(m+1)/(n+1) <= fpr`` - the conformal (finite-sample) version of the empirical quantile - and
is equivalent to flagging when the empirical p-value ``(1 + #{ref >= s})/(n+1)`` is ``<= fpr``.

That guarantee is on average over reference sets. For THIS reference set the achieved FPR is
``1 - F(t)``, which is Beta(m+1, n-m) distributed; its central interval is reported so a
reader sees how precisely a small reference pins the rate down.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import beta


@dataclass(frozen=True)
class ReferenceThreshold:
    """A threshold from reference scores and what it achieves."""

    fpr_target: float
    threshold: float  # flag when score >= threshold (inf: the reference is too small for this rate)
    n_reference: int
    reference_above: int  # m: reference scores allowed at or above the threshold
    expected_fpr: float  # (m+1)/(n+1), <= fpr_target
    fpr_interval: tuple[float, float]  # central interval of the achieved FPR given this reference
    confidence: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (an infinite threshold becomes null)."""
        d = asdict(self)
        d["threshold"] = self.threshold if math.isfinite(self.threshold) else None
        d["fpr_interval"] = list(self.fpr_interval)
        return d


def reference_threshold(reference_scores: Any, fpr: float, confidence: float = 0.95) -> ReferenceThreshold:
    """Conservative threshold at ``fpr`` from ``reference_scores`` (higher = more member-like)."""
    a = np.sort(np.asarray(reference_scores, dtype=np.float64).ravel())
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError("reference scores must be a non-empty array of finite numbers")
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must lie strictly between 0 and 1 (got {fpr})")
    n = a.size
    m = math.floor(fpr * (n + 1) + 1e-9) - 1
    lo_q, hi_q = (1 - confidence) / 2, 1 - (1 - confidence) / 2
    if m < 0:
        need = math.ceil(1 / fpr) - 1
        return ReferenceThreshold(fpr, math.inf, n, 0, 0.0, (0.0, 0.0), confidence,
                                  note=f"{n} reference images cannot resolve a false-positive rate of {fpr:g}: at least {need} are needed; nothing is flagged.")
    m = min(m, n - 1)
    t = float(np.nextafter(a[n - m - 1], np.inf))
    lo, hi = float(beta.ppf(lo_q, m + 1, n - m)), float(beta.ppf(hi_q, m + 1, n - m))
    return ReferenceThreshold(fpr, t, n, m, (m + 1) / (n + 1), (lo, hi), confidence)


def predictive_pvalues(scores: Any, reference_scores: Any) -> np.ndarray:
    """Per-image p-values from a Gaussian model of the reference scores (prediction-interval form).

    ``p = P(T_{n-1} >= (s - mean) / (sd * sqrt(1 + 1/n)))``: exact when the null scores are
    Gaussian, which standardised difficulty residuals approximately are. Unlike the empirical
    p-value ``(1 + #{ref >= s})/(n+1)``, it can go below ``1/(n+1)``, so Benjamini-Hochberg over
    40 suspects can flag an image with a 200-image reference (empirically it never can below
    ``p = 0.05/40``). Its level is checked by benchmarks/audit_validity.py on real null splits.
    """
    from scipy.stats import t as student_t

    s = np.asarray(scores, dtype=np.float64).ravel()
    r = np.asarray(reference_scores, dtype=np.float64).ravel()
    if r.size < 3 or not np.all(np.isfinite(r)) or not np.all(np.isfinite(s)):
        raise ValueError("predictive p-values need at least 3 finite reference scores and finite scores")
    n = r.size
    sd = float(np.std(r, ddof=1))
    z = (s - float(np.mean(r))) / (max(sd, 1e-300) * math.sqrt(1 + 1 / n))
    return np.asarray(student_t.sf(z, df=n - 1), dtype=np.float64)
