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

The package is split by concern: :mod:`~auditmi.stats.metrics` (per-image metrics and
thresholds), :mod:`~auditmi.stats.hypothesis` (p-values, multiple testing, dataset-level tests)
and :mod:`~auditmi.stats.estimates` (used fraction, power). Every public name is
re-exported here, so ``from auditmi import stats as S; S.rank_test(...)`` works.
"""

from __future__ import annotations

from auditmi.stats._common import _jsonable, jsonable
from auditmi.stats.estimates import (
    NO_POWER_NOTE,
    FractionEstimate,
    PowerEstimate,
    binomial_sample_size,
    required_sample_size,
    used_fraction,
)
from auditmi.stats.hypothesis import (
    BINOMIAL_NOTE,
    BinomialTest,
    RankTest,
    _delong_variance,
    benjamini_hochberg,
    binomial_test,
    calibrated_binomial_test,
    conformal_pvalues,
    empirical_pvalues,
    fpr_upper_bound,
    permutation_test,
    rank_test,
    tie_breakers,
)
from auditmi.stats.metrics import (
    BinaryMetrics,
    ReferenceThreshold,
    accuracy_threshold,
    binary_metrics,
    fpr_resolution,
    reference_threshold,
    roc_points,
    threshold_at_fpr,
    tpr_at_fpr,
)

__all__ = [
    "BINOMIAL_NOTE",
    "NO_POWER_NOTE",
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
    "conformal_pvalues",
    "tie_breakers",
    "reference_threshold",
    "ReferenceThreshold",
    "binomial_sample_size",
    "benjamini_hochberg",
    "rank_test",
    "permutation_test",
    "binomial_test",
    "calibrated_binomial_test",
    "fpr_upper_bound",
    "used_fraction",
    "required_sample_size",
    "binomial_sample_size",
    "jsonable",
    "_jsonable",
    "_delong_variance",
]
