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

__all__ = ["MIN_SHIFT_CHECK_SET", "Label", "TestName", "Verdict", "decide"]

#: Fewest distinct images per set (suspects and reference) for which the encoder-free shift check
#: is trusted to guard a "likely-used" (or a "no-evidence"). Stratified 5-fold cross-validation
#: needs at least 5 per set to run at all, but measured on simulated descriptors
#: (benchmarks/shift_min_size.py) the check then misses gross shifts: with 20 suspects and 10
#: reference images it detected a near-total one-descriptor shift (AUC 0.998) in 14 of 20 runs;
#: with 20 in each set, in 20 of 20 (docs/method.md, "How small a set is too small").
MIN_SHIFT_CHECK_SET = 20


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


def _too_few_for_the_shift_check(rank: RankTest, shift: ShiftCheck) -> str | None:
    """Why the shift check cannot be trusted with these set sizes (None when it can)."""
    n_s, n_r = min(rank.n_suspects, shift.n_suspects), min(rank.n_reference, shift.n_reference)
    short = [f"{n} {what} images (at least {MIN_SHIFT_CHECK_SET} {what} images are needed)"
             for n, what in ((n_s, "suspect"), (n_r, "reference")) if n < MIN_SHIFT_CHECK_SET]
    if not short:
        return None
    ran = "was not run" if shift.method == "not run" else "was run but cannot detect a shift reliably"
    return (f"the encoder-free shift check {ran} with {' and '.join(short)}, so whether suspects and reference differ "
            "without the encoder was not checked and a score difference (or its absence) cannot be attributed to training")


def _with_reference(alpha: float, rank: RankTest, shift: ShiftCheck, power: PowerEstimate | None) -> Verdict:
    too_few = _too_few_for_the_shift_check(rank, shift)
    if too_few is not None:
        label = Label.INCONCLUSIVE
        reason = (f"{too_few} (rank test p={rank.p_value:.2g}, AUC {rank.auc:.2f}). "
                  f"Add distinct images until each set has at least {MIN_SHIFT_CHECK_SET}.")
    elif shift.distinguishable:
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
    rate, held, loose = f"the calibrated false-positive rate {fpr:.3g}", "", ""
    n0 = binomial.heldout_non_members
    if n0 is not None and binomial.bound_confidence is not None:
        conf = f"{binomial.bound_confidence:.1%}".replace(".0%", "%")
        rate = f"the upper {conf} confidence bound {fpr:.2g} on the calibrated false-positive rate"
        held = f"; {binomial.heldout_false_positives} of {n0} held-out shadow non-members flagged"
        loose = (f" The bound is loose with {n0} held-out shadow non-members: calibrating on more shadow images, or adding "
                 "--reference with known non-members, makes the audit more sensitive.")
    if p < alpha:
        label = Label.LIKELY_USED
        reason = (f"{k} of {n} images flagged, more than {rate} explains "
                  f"(binomial p={p:.2g}{held}); this relies on the calibration transferring to the audited encoder. "
                  "Add --reference with known non-members for a test that does not.")
    else:
        label = Label.NO_EVIDENCE
        reason = f"{k} of {n} images flagged, consistent with {rate} (binomial p={p:.2g}{held}).{loose}"
    return Verdict(label, TestName.BINOMIAL, float(p), reason, alpha)
