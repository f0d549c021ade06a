"""The dataset-level verdict: one enum of labels and one pure function that decides it.

The decision is a function of test results only (no I/O, no encoder, no torch), so every branch
is unit-tested in tests/test_verdict.py.

* With a reference set of known non-members the evidence is the one-sided rank test, guarded by
  the encoder-free shift check: if suspects and reference differ without the encoder, a score
  difference cannot be attributed to training, and the verdict is inconclusive.
* Without a reference the evidence is the binomial test of the flag count against the calibrated
  false-positive rate; the reason says it relies on calibration transferring to the audited
  encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the types only: importing this module must stay cheap (the CLI does)
    from auditmi.shift import ShiftCheck
    from auditmi.stats import BinomialTest, PowerEstimate, RankTest

__all__ = ["Label", "TestName", "Verdict", "decide"]


class Label(str, Enum):
    """Verdict labels, as written in reports and accepted by ``--fail-on``."""

    LIKELY_USED = "likely-used"
    NO_EVIDENCE = "no-evidence"
    INCONCLUSIVE = "inconclusive"


class TestName(str, Enum):
    """The dataset-level test a verdict rests on."""

    __test__ = False  # not a pytest test class, despite the name

    RANK = "rank-test"
    BINOMIAL = "binomial-test"
    NONE = "none"


@dataclass(frozen=True)
class Verdict:
    """A decided verdict: label, the test it rests on, its p-value and an English reason."""

    label: Label
    test: TestName
    p_value: float | None
    reason: str
    alpha: float


def decide(
    alpha: float,
    *,
    rank: RankTest | None = None,
    shift: ShiftCheck | None = None,
    power: PowerEstimate | None = None,
    binomial: BinomialTest | None = None,
) -> Verdict:
    """Decide the verdict from the tests that were run.

    Args:
        alpha: Significance level of the dataset-level test.
        rank: The rank test against reference non-members (given when a reference was used;
            then ``shift`` is required too).
        shift: The encoder-free shift check between suspects and reference.
        power: Sample-size estimate, quoted in a no-evidence reason.
        binomial: The reference-free binomial test (used when ``rank`` is None).

    Returns:
        The :class:`Verdict`.

    Raises:
        ValueError: Neither a rank test nor a binomial test was given, or a rank test without
            its shift check.
    """
    if rank is not None:
        if shift is None:
            raise ValueError("a rank-test verdict needs the shift check")
        return _with_reference(alpha, rank, shift, power)
    if binomial is not None:
        return _without_reference(alpha, binomial)
    raise ValueError("decide() needs a rank test or a binomial test")


def _with_reference(alpha: float, rank: RankTest, shift: ShiftCheck, power: PowerEstimate | None) -> Verdict:
    if shift.distinguishable:
        label = Label.INCONCLUSIVE
        reason = ("suspects and reference differ without the encoder, so a score difference cannot be attributed to training: "
                  + shift.reason)
    elif rank.p_value < alpha:
        label = Label.LIKELY_USED
        reason = (f"suspect images score higher than the {rank.n_reference} reference non-members (one-sided rank test "
                  f"p={rank.p_value:.2g} < {alpha:g}; AUC {rank.auc:.2f}); no encoder-free difference between the sets was detected.")
    else:
        label = Label.NO_EVIDENCE
        reason = f"suspects do not score significantly higher than the reference (p={rank.p_value:.2g} >= {alpha:g}, AUC {rank.auc:.2f})."
        if power is not None and power.n_suspects_needed:
            reason += f" At this effect size about {power.n_suspects_needed} suspect images would be needed for a conclusive audit."
        elif power is not None and power.note:
            reason += f" Power estimate: {power.note}."
    return Verdict(label, TestName.RANK, float(rank.p_value), reason, alpha)


def _without_reference(alpha: float, binomial: BinomialTest) -> Verdict:
    k, n, fpr, p = binomial.n_flagged, binomial.n_total, binomial.expected_fpr, binomial.p_value
    if p < alpha:
        label = Label.LIKELY_USED
        reason = (f"{k} of {n} images flagged, more than the calibrated false-positive rate {fpr:.3g} explains "
                  f"(binomial p={p:.2g}); this relies on the calibration transferring to the audited encoder. "
                  "Add --reference with known non-members for a test that does not.")
    else:
        label = Label.NO_EVIDENCE
        reason = f"{k} of {n} images flagged, consistent with the calibrated false-positive rate {fpr:.3g} (binomial p={p:.2g})."
    return Verdict(label, TestName.BINOMIAL, float(p), reason, alpha)
