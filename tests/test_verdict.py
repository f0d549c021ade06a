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
