"""The verdict decision, branch by branch (a pure function of test results: no encoder needed)."""

from __future__ import annotations

import pytest

from auditmi.shift import ShiftCheck
from auditmi.stats import BinomialTest, PowerEstimate, RankTest
from auditmi.verdict import Label, TestName, Verdict, decide


def _rank(p: float, auc: float = 0.7, n_ref: int = 200) -> RankTest:
    return RankTest(p_value=p, u_statistic=0.0, auc=auc, auc_ci=(auc - 0.1, auc + 0.1), n_suspects=80, n_reference=n_ref, method="exact")


def _shift(distinguishable: bool) -> ShiftCheck:
    import dataclasses

    fields = {f.name for f in dataclasses.fields(ShiftCheck)}
    values = dict(distinguishable=distinguishable, auc=0.9 if distinguishable else 0.5, auc_ci=None, p_value=0.001 if distinguishable else 0.6,
                  n_suspects=80, n_reference=200, method="test", threshold_auc=0.6, alpha=0.05, top_differences=[], n_permutations=0,
                  reason="the sets differ in brightness" if distinguishable else "no encoder-free difference detected")
    return ShiftCheck(**{k: v for k, v in values.items() if k in fields})


def _power(need: int | None, note: str = "") -> PowerEstimate:
    return PowerEstimate(n_suspects_needed=need, n_reference=200, auc=0.55, alpha=0.05, power=0.8, note=note)


def _binom(p: float, k: int = 30, n: int = 80, fpr: float = 0.2) -> BinomialTest:
    return BinomialTest(p_value=p, n_flagged=k, n_total=n, expected_fpr=fpr, flag_rate=k / n)


def test_shift_makes_it_inconclusive_even_with_a_significant_rank_test() -> None:
    v = decide(0.05, rank=_rank(1e-6), shift=_shift(True), power=_power(10))
    assert v == Verdict(Label.INCONCLUSIVE, TestName.RANK, 1e-6, v.reason, 0.05)
    assert v.reason.startswith("suspects and reference differ without the encoder") and "brightness" in v.reason


def test_significant_rank_test_without_shift_is_likely_used() -> None:
    v = decide(0.05, rank=_rank(0.014, auc=0.584, n_ref=200), shift=_shift(False), power=_power(117))
    assert (v.label, v.test, v.p_value) == (Label.LIKELY_USED, TestName.RANK, 0.014)
    assert "200 reference non-members" in v.reason and "p=0.014 < 0.05" in v.reason and "AUC 0.58" in v.reason


@pytest.mark.parametrize("p", [0.05, 0.3])  # p == alpha is not significant
def test_rank_test_at_or_above_alpha_is_no_evidence_and_quotes_the_power(p: float) -> None:
    v = decide(0.05, rank=_rank(p), shift=_shift(False), power=_power(117))
    assert (v.label, v.test) == (Label.NO_EVIDENCE, TestName.RANK)
    assert ">= 0.05" in v.reason and "about 117 suspect images would be needed" in v.reason


def test_no_evidence_without_a_sample_size_quotes_the_power_note_or_nothing() -> None:
    v = decide(0.05, rank=_rank(0.4), shift=_shift(False), power=_power(None, "no effect to detect"))
    assert v.reason.endswith("Power estimate: no effect to detect.")
    v = decide(0.05, rank=_rank(0.4), shift=_shift(False), power=None)
    assert "Power" not in v.reason and "would be needed" not in v.reason


def test_the_alpha_is_the_callers() -> None:
    assert decide(0.01, rank=_rank(0.02), shift=_shift(False)).label is Label.NO_EVIDENCE
    assert decide(0.05, rank=_rank(0.02), shift=_shift(False)).label is Label.LIKELY_USED


def test_binomial_below_alpha_is_likely_used_and_says_it_relies_on_calibration() -> None:
    v = decide(0.05, binomial=_binom(1e-4, k=30, n=80, fpr=0.2))
    assert (v.label, v.test, v.p_value, v.alpha) == (Label.LIKELY_USED, TestName.BINOMIAL, 1e-4, 0.05)
    assert "30 of 80 images flagged" in v.reason and "relies on the calibration" in v.reason and "--reference" in v.reason


def test_binomial_at_or_above_alpha_is_no_evidence() -> None:
    for p in (0.05, 0.5):
        v = decide(0.05, binomial=_binom(p))
        assert (v.label, v.test) == (Label.NO_EVIDENCE, TestName.BINOMIAL)
        assert "consistent with the calibrated false-positive rate 0.2" in v.reason


def test_the_rank_test_wins_over_the_binomial_test_when_both_are_given() -> None:
    assert decide(0.05, rank=_rank(0.5), shift=_shift(False), binomial=_binom(1e-9)).test is TestName.RANK


def test_missing_tests_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="rank test or a binomial test"):
        decide(0.05)
    with pytest.raises(ValueError, match="shift check"):
        decide(0.05, rank=_rank(0.01))


def test_labels_are_the_report_strings() -> None:
    assert [label.value for label in Label] == ["likely-used", "no-evidence", "inconclusive"]
    assert Label("likely-used") is Label.LIKELY_USED and Label.LIKELY_USED == "likely-used"


# ---- issue 14 item 4: too few images for the shift check


def _shift_n(n_suspects: int, n_reference: int, run: bool = True) -> ShiftCheck:
    import dataclasses

    s = _shift(False)
    if not run:
        return dataclasses.replace(s, n_suspects=n_suspects, n_reference=n_reference, auc=float("nan"), p_value=float("nan"),
                                   method="not run", reason="too few images for a shift check (need >= 5 per set)")
    return dataclasses.replace(s, n_suspects=n_suspects, n_reference=n_reference)


def _rank_n(p: float, n_suspects: int, n_reference: int) -> RankTest:
    return RankTest(p_value=p, u_statistic=0.0, auc=0.8, auc_ci=(0.7, 0.9), n_suspects=n_suspects, n_reference=n_reference, method="exact")


def test_four_reference_images_cannot_give_likely_used() -> None:
    """The issue's case: 100 suspects vs 4 (shrunk) reference images, rank p=0.015, shift check not run."""
    v = decide(0.05, rank=_rank_n(0.015, 100, 4), shift=_shift_n(100, 4, run=False), power=_power(None))
    assert v.label is Label.INCONCLUSIVE and v.test is TestName.RANK
    low = v.reason.lower()
    assert "shift check" in low and "4 reference" in low and "at least 20 reference" in low
    assert "no encoder-free difference" not in low  # the old, false reassurance


@pytest.mark.parametrize("n_s,n_r", [(100, 19), (19, 200), (3, 3), (10, 10)])
def test_below_the_minimum_set_size_the_verdict_is_inconclusive_whatever_the_p_value(n_s: int, n_r: int) -> None:
    from auditmi.verdict import MIN_SHIFT_CHECK_SET

    assert MIN_SHIFT_CHECK_SET == 20
    for p in (1e-6, 0.5):
        v = decide(0.05, rank=_rank_n(p, n_s, n_r), shift=_shift_n(n_s, n_r, run=min(n_s, n_r) >= 5), power=_power(50))
        assert v.label is Label.INCONCLUSIVE, (n_s, n_r, p, v)
        short = "suspect" if n_s < MIN_SHIFT_CHECK_SET else "reference"
        assert f"at least {MIN_SHIFT_CHECK_SET} {short} images" in v.reason
        assert "was not" in v.reason  # says what was not checked


def test_at_the_minimum_set_size_the_usual_rules_apply() -> None:
    from auditmi.verdict import MIN_SHIFT_CHECK_SET

    n = MIN_SHIFT_CHECK_SET
    assert decide(0.05, rank=_rank_n(0.01, n, n), shift=_shift_n(n, n)).label is Label.LIKELY_USED
    assert decide(0.05, rank=_rank_n(0.5, n, n), shift=_shift_n(n, n)).label is Label.NO_EVIDENCE


# ---- issue 14 item 5: the reference-free test quotes the upper bound it tests against


def test_binomial_reason_quotes_the_upper_bound_of_the_calibrated_fpr() -> None:
    b = BinomialTest(p_value=1e-4, n_flagged=30, n_total=80, expected_fpr=0.12, flag_rate=30 / 80,
                     calibrated_fpr=0.05, heldout_non_members=40, heldout_false_positives=2, bound_confidence=0.975)
    v = decide(0.05, binomial=b)
    assert v.label is Label.LIKELY_USED
    assert "upper 97.5% confidence bound 0.12" in v.reason and "2 of 40 held-out" in v.reason
