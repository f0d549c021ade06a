"""Numerical checks of auditmi.stats: correctness on hand examples and validity by simulation.

Simulation tolerances use 3 binomial standard errors, so a correct implementation fails
with probability well under 1 % per check (and the seeds are fixed, so results are stable).
"""

from __future__ import annotations

import json
import math
from itertools import combinations

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from auditmi import stats as S
from auditmi.errors import InputError


def _upper(rate: float, reps: int) -> float:
    """Nominal rate plus 3 binomial standard errors."""
    return rate + 3 * math.sqrt(rate * (1 - rate) / reps)


def _assert_json_clean(obj) -> dict:
    d = obj.to_dict()
    json.dumps(d, allow_nan=False)  # raises on NaN/inf or numpy types
    return d


# --------------------------------------------------------------------------------------
# binary_metrics, tpr_at_fpr, roc_points
# --------------------------------------------------------------------------------------


def test_binary_metrics_hand_example():
    labels = [1, 1, 1, 0, 0, 0]
    scores = [0.9, 0.8, 0.3, 0.7, 0.2, 0.1]
    m = S.binary_metrics(labels, scores, threshold=0.5)
    # Flagged: 0.9, 0.8 (members), 0.7 (non-member) -> TP=2, FP=1, FN=1, TN=2.
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.precision == pytest.approx(2 / 3)
    assert m.recall == pytest.approx(2 / 3)
    # Member-beats-non-member pairs: 3 + 3 + 2 of 9.
    assert m.roc_auc == pytest.approx(8 / 9)
    # 3 non-members: 1% FPR is unresolvable -> zero-false-positive point: 0.9, 0.8 flagged.
    assert m.tpr_at_1pct_fpr == pytest.approx(2 / 3)
    assert m.tpr_at_0_1pct_fpr == pytest.approx(2 / 3)
    assert (m.n_members, m.n_non_members, m.threshold) == (3, 3, 0.5)
    assert m.fpr_resolution == pytest.approx(1 / 3)
    d = _assert_json_clean(m)
    assert d["accuracy"] == pytest.approx(4 / 6)


def test_binary_metrics_degenerate_cases():
    # Nothing flagged: precision 0.0 by convention (sklearn zero_division=0), recall 0.
    m = S.binary_metrics([1, 0, 1], [0.2, 0.1, 0.3], threshold=10.0)
    assert m.precision == 0.0 and m.recall == 0.0 and m.accuracy == pytest.approx(1 / 3)
    # One class only: AUC and TPR@FPR are undefined -> None in JSON, not a crash.
    d = _assert_json_clean(S.binary_metrics([1, 1], [0.2, 0.3], threshold=0.25))
    assert d["roc_auc"] is None and d["tpr_at_1pct_fpr"] is None and d["fpr_resolution"] is None
    assert d["recall"] == 0.5
    d = _assert_json_clean(S.binary_metrics([0, 0], [0.2, 0.3], threshold=0.25))
    assert d["recall"] is None and d["precision"] == 0.0


def test_bool_labels_and_input_errors():
    a = S.binary_metrics(np.array([True, False]), [1.0, 0.0], 0.5)
    assert a.accuracy == 1.0
    with pytest.raises(InputError):
        S.binary_metrics([1, 2], [0.1, 0.2], 0.5)
    with pytest.raises(InputError):
        S.binary_metrics([1, 0, 1], [0.1, 0.2], 0.5)
    with pytest.raises(InputError):
        S.rank_test([0.1, float("nan")], [0.2, 0.3])
    with pytest.raises(InputError):
        S.threshold_at_fpr([], 0.1)
    with pytest.raises(InputError):
        S.tpr_at_fpr([1, 0], [1.0, 0.0], 1.5)


def _brute_tpr_at_fpr(labels, scores, target):
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    pos, neg = scores[labels == 1], scores[labels == 0]
    best = 0.0
    for t in list(np.unique(scores)) + [np.inf]:
        fpr = np.mean(neg >= t)
        if fpr <= target + 1e-12:
            best = max(best, float(np.mean(pos >= t)))
    return best


def test_tpr_at_fpr_matches_brute_force_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(30):
        n_pos, n_neg = rng.integers(5, 60, size=2)
        # Rounded scores create ties between and within classes.
        pos = np.round(rng.normal(0.8, 1, n_pos), 1)
        neg = np.round(rng.normal(0.0, 1, n_neg), 1)
        labels = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
        scores = np.r_[pos, neg]
        for target in (0.0, 0.001, 0.01, 0.05, 0.1, 0.3, 1.0):
            assert S.tpr_at_fpr(labels, scores, target) == pytest.approx(
                _brute_tpr_at_fpr(labels, scores, target)
            )


def test_tpr_at_fpr_exact_rate_boundary():
    # 100 non-members, target exactly 3% -> 3 false positives allowed, even with float noise.
    neg = np.arange(100, dtype=float)
    pos = np.array([96.5, 97.5, 1000.0])
    labels = np.r_[np.ones(3, int), np.zeros(100, int)]
    scores = np.r_[pos, neg]
    # threshold 96.5 flags all 3 members and non-members 97, 98, 99 -> FPR 0.03.
    assert S.tpr_at_fpr(labels, scores, 0.03) == 1.0
    assert S.tpr_at_fpr(labels, scores, 0.029) == pytest.approx(2 / 3)


def test_roc_points_downsampled_with_endpoints():
    rng = np.random.default_rng(2)
    labels = np.r_[np.ones(3000, int), np.zeros(3000, int)]
    scores = np.r_[rng.normal(1, 1, 3000), rng.normal(0, 1, 3000)]
    pts = S.roc_points(labels, scores, max_points=50)
    f, t = np.array(pts["fpr"]), np.array(pts["tpr"])
    assert 2 <= len(f) <= 50 and len(f) == len(t)
    assert (f[0], t[0]) == (0.0, 0.0) and (f[-1], t[-1]) == (1.0, 1.0)
    assert np.all(np.diff(f) >= 0) and np.all(np.diff(t) >= 0)
    # Even downsampled, the curve's area is close to the true AUC.
    assert np.trapezoid(t, f) == pytest.approx(roc_auc_score(labels, scores), abs=0.01)
    assert S.roc_points(labels[:20], scores[:20]) == {"fpr": [], "tpr": []}  # members only
    json.dumps(pts, allow_nan=False)


# --------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------


def test_accuracy_threshold_matches_brute_force_and_prefers_largest():
    rng = np.random.default_rng(3)
    for _ in range(30):
        n = int(rng.integers(4, 80))
        labels = rng.integers(0, 2, n)
        scores = np.round(rng.normal(labels * 0.7, 1), 1)
        cands = list(np.unique(scores)) + [np.nextafter(scores.max(), np.inf)]
        accs = [np.mean((scores >= c) == labels) for c in cands]
        best = max(accs)
        expected = max(c for c, a in zip(cands, accs, strict=True) if a == best)
        t = S.accuracy_threshold(labels, scores)
        assert t == expected
        assert np.mean((scores >= t) == labels) == best
    # Separable: every t in (0, 1] is perfect; the largest candidate is 1.0.
    assert S.accuracy_threshold([0, 1], [0.0, 1.0]) == 1.0
    # All non-members: flag nothing -> threshold just above the max.
    t = S.accuracy_threshold([0, 0], [0.2, 0.5])
    assert t > 0.5 and t == np.nextafter(0.5, np.inf)


def test_threshold_at_fpr_achieves_target_and_is_smallest():
    rng = np.random.default_rng(4)
    for _ in range(40):
        n = int(rng.integers(1, 300))
        neg = np.round(rng.normal(size=n), int(rng.integers(0, 3)))  # many ties
        for target in (0.0, 0.001, 0.01, 0.05, 0.1, 0.29, 0.5, 1.0):
            t = S.threshold_at_fpr(neg, target)
            achieved = np.mean(neg >= t)
            assert achieved <= target + 1e-12
            smaller = np.unique(neg)[np.unique(neg) < t]
            if smaller.size:  # the next smaller candidate would break the target
                assert np.mean(neg >= smaller[-1]) > target
    # Exact boundary (0.29 * 100 is 28.999... in floating point): 29 false positives allowed.
    neg = np.arange(100, dtype=float)
    assert S.threshold_at_fpr(neg, 0.29) == 71.0
    # Fewer non-members than 1 / fpr: flag none, just above the maximum.
    t = S.threshold_at_fpr(np.arange(50.0), 0.01)
    assert t > 49.0 and t == np.nextafter(49.0, np.inf)
    assert S.fpr_resolution(50) == pytest.approx(0.02)
    with pytest.raises(InputError):
        S.fpr_resolution(0)


def test_threshold_at_fpr_holds_out_of_sample_on_average():
    # Calibrated on one non-member sample, the FPR on fresh non-members stays near target.
    rng = np.random.default_rng(5)
    fprs = [np.mean(rng.normal(size=5000) >= S.threshold_at_fpr(rng.normal(size=2000), 0.01))
            for _ in range(50)]
    assert np.mean(fprs) <= 0.01 + 0.002


# --------------------------------------------------------------------------------------
# Per-image p-values and BH
# --------------------------------------------------------------------------------------


def test_empirical_pvalues_hand_example():
    ref = [0.1, 0.5, 0.5, 0.9]
    p = S.empirical_pvalues([1.0, 0.5, 0.0], ref)
    np.testing.assert_allclose(p, [1 / 5, 4 / 5, 5 / 5])  # ties count against membership


def test_empirical_pvalues_super_uniform_under_null():
    rng = np.random.default_rng(6)
    reps, n_ref = 4000, 19
    data = rng.normal(size=(reps, n_ref + 1))
    p = np.array([S.empirical_pvalues(row[:1], row[1:])[0] for row in data])
    for a in np.linspace(0.01, 0.99, 99):  # a fine grid catches a missing "+1"
        assert np.mean(p <= a) <= _upper(a, reps)
    # Continuous scores: exactly uniform on {1/20, ..., 1}, so the test is not conservative.
    assert np.mean(p <= 0.05) > 0.05 - 3 * math.sqrt(0.05 * 0.95 / reps)
    # Discrete scores (massive ties) stay super-uniform.
    disc = rng.integers(0, 3, size=(reps, n_ref + 1)).astype(float)
    p = np.array([S.empirical_pvalues(row[:1], row[1:])[0] for row in disc])
    for a in (0.1, 0.35, 0.7):
        assert np.mean(p <= a) <= _upper(a, reps)


def test_benjamini_hochberg_hand_examples_and_scipy_agreement():
    assert S.benjamini_hochberg([0.01, 0.04, 0.03, 0.2], 0.05).tolist() == [True, False, False, False]
    # Step-up: the largest p passes its bound, so all smaller ones are flagged too.
    assert S.benjamini_hochberg([0.04, 0.02, 0.021, 0.022], 0.05).all()
    assert S.benjamini_hochberg([], 0.1).shape == (0,)
    rng = np.random.default_rng(7)
    for _ in range(20):
        p = rng.uniform(size=50) ** 3
        expected = sps.false_discovery_control(p, method="bh") <= 0.1
        np.testing.assert_array_equal(S.benjamini_hochberg(p, 0.1), expected)


def test_benjamini_hochberg_controls_fdr_on_simulated_mix():
    rng = np.random.default_rng(8)
    reps, m, m1, q = 300, 100, 20, 0.1
    fdp, power = [], []
    for _ in range(reps):
        ref = rng.normal(size=500)
        truth = np.r_[np.ones(m1, bool), np.zeros(m - m1, bool)]
        suspects = rng.normal(size=m) + 3.0 * truth
        flags = S.benjamini_hochberg(S.empirical_pvalues(suspects, ref), q)
        fdp.append(np.sum(flags & ~truth) / max(1, flags.sum()))
        power.append(np.mean(flags[truth]))
    # FDR <= q * m0 / m = 0.08; allow 3 standard errors of the mean FDP.
    assert np.mean(fdp) <= q + 3 * np.std(fdp) / math.sqrt(reps)
    assert np.mean(power) > 0.5  # and it still finds the members


# --------------------------------------------------------------------------------------
# Dataset-level tests
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n1, n2, discrete, method",
    [(20, 100, False, "asymptotic"), (20, 40, False, "exact"), (20, 100, True, "asymptotic")],
)
def test_rank_test_level_under_null(n1, n2, discrete, method):
    rng = np.random.default_rng(9)
    reps = 500
    pvals = []
    for _ in range(reps):
        if discrete:
            x, y = rng.integers(0, 5, n1).astype(float), rng.integers(0, 5, n2).astype(float)
        else:
            x, y = rng.normal(size=n1), rng.normal(size=n2)
        r = S.rank_test(x, y)
        assert r.method == method
        pvals.append(r.p_value)
    pvals = np.array(pvals)
    assert np.mean(pvals < 0.05) <= _upper(0.05, reps)
    assert np.mean(pvals < 0.2) <= _upper(0.2, reps)


def test_rank_test_statistic_auc_and_power():
    rng = np.random.default_rng(10)
    x, y = rng.normal(0.8, 1, 60), np.round(rng.normal(0, 1, 90), 1)
    r = S.rank_test(x, y)
    labels = np.r_[np.ones(60), np.zeros(90)]
    assert r.auc == pytest.approx(roc_auc_score(labels, np.r_[x, y]))
    assert r.u_statistic == pytest.approx(r.auc * 60 * 90)
    assert (r.n_suspects, r.n_reference) == (60, 90)
    assert r.auc_ci[0] < r.auc < r.auc_ci[1]
    assert r.p_value < 1e-4
    # Suspects scoring lower: one-sided p near 1.
    assert S.rank_test(y, x).p_value > 0.99
    d = _assert_json_clean(r)
    assert isinstance(d["auc_ci"], list) and d["method"] == "asymptotic"


def test_rank_test_auc_ci_coverage():
    rng = np.random.default_rng(11)
    shift = 0.6
    true_auc = sps.norm.cdf(shift / math.sqrt(2))
    reps = 300
    covered = 0
    for _ in range(reps):
        r = S.rank_test(rng.normal(shift, 1, 50), rng.normal(0, 1, 100))
        covered += r.auc_ci[0] <= true_auc <= r.auc_ci[1]
    assert covered / reps >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / reps)


def test_permutation_test_exact_enumeration_and_null_level():
    x, y = np.array([3.0, 4.0]), np.array([0.0, 1.0, 2.0])
    pooled = np.r_[x, y]
    # Exact permutation p-value: fraction of the 10 splits whose suspect sum >= 7.
    sums = [pooled[list(c)].sum() for c in combinations(range(5), 2)]
    exact = np.mean(np.array(sums) >= 7.0)
    b = 20000
    p = S.permutation_test(x, y, n_permutations=b, seed=1)
    assert p == pytest.approx(exact, abs=0.01)
    assert S.permutation_test(x, y, n_permutations=b, seed=1) == p  # seeded
    assert S.permutation_test(x, y, n_permutations=9, seed=0) >= 1 / 10
    rng = np.random.default_rng(12)
    reps = 300
    ps = np.array([
        S.permutation_test(rng.normal(size=20), rng.normal(size=60), n_permutations=199, seed=i)
        for i in range(reps)
    ])
    assert np.mean(ps <= 0.05) <= _upper(0.05, reps)
    assert S.permutation_test(rng.normal(1, 1, 30), rng.normal(0, 1, 60), 999) == pytest.approx(1 / 1000)


def test_binomial_test_hand_check():
    r = S.binomial_test(10, 100, 0.05)
    assert r.p_value == pytest.approx(sps.binom.sf(9, 100, 0.05))
    assert r.note == S.BINOMIAL_NOTE and "shadow encoder" in r.note
    assert (r.n_flagged, r.n_total, r.expected_fpr, r.flag_rate) == (10, 100, 0.05, 0.1)
    assert S.binomial_test(0, 100, 0.05).p_value == pytest.approx(1.0)
    _assert_json_clean(r)
    with pytest.raises(InputError):
        S.binomial_test(5, 3, 0.1)


def test_used_fraction_recovers_known_fraction():
    rng = np.random.default_rng(13)
    n, pi, tpr, fpr = 20000, 0.3, 0.6, 0.05
    used = rng.uniform(size=n) < pi
    flagged = np.where(used, rng.uniform(size=n) < tpr, rng.uniform(size=n) < fpr)
    est = S.used_fraction(int(flagged.sum()), n, tpr, fpr)
    assert est.ci_low <= pi <= est.ci_high
    assert est.estimate == pytest.approx(pi, abs=0.02)
    assert est.ci_high - est.ci_low < 0.05
    # Coverage over many collections (Clopper-Pearson: at least the nominal level).
    reps, size = 400, 500
    k = rng.binomial(size, pi * tpr + (1 - pi) * fpr, size=reps)
    cover = np.mean([
        (e := S.used_fraction(int(ki), size, tpr, fpr)).ci_low <= pi <= e.ci_high for ki in k
    ])
    assert cover >= 0.95 - 3 * math.sqrt(0.05 * 0.95 / reps)
    _assert_json_clean(est)


def test_used_fraction_clipping_and_no_power():
    low = S.used_fraction(1, 1000, 0.6, 0.05)  # flag rate below the FPR
    assert low.estimate == 0.0 and low.ci_low == 0.0
    high = S.used_fraction(1000, 1000, 0.6, 0.05)
    assert high.estimate == 1.0 and high.ci_high == 1.0
    none = S.used_fraction(50, 1000, 0.05, 0.05)
    assert none.estimate is None and none.ci_low is None and none.ci_high is None
    assert none.note == "classifier has no power at this threshold"
    d = _assert_json_clean(none)
    assert d["estimate"] is None


def _simulated_power(auc, n_sus, n_ref, alpha, reps, rng):
    shift = math.sqrt(2) * sps.norm.ppf(auc)  # normal scores: AUC = Phi(shift / sqrt 2)
    hits = sum(
        S.rank_test(rng.normal(shift, 1, n_sus), rng.normal(0, 1, n_ref)).p_value < alpha
        for _ in range(reps)
    )
    return hits / reps


def test_required_sample_size_formula_and_simulated_power():
    r = S.required_sample_size(0.7)
    z = sps.norm.ppf(0.95) + sps.norm.ppf(0.8)
    total = z**2 / (12 * 0.25 * 0.2**2)
    assert r.n_suspects_needed == math.ceil(total / 2) == r.n_reference
    rng = np.random.default_rng(14)
    reps = 300
    power = _simulated_power(0.7, r.n_suspects_needed, r.n_reference, 0.05, reps, rng)
    assert 0.8 - 0.1 <= power <= 0.8 + 0.12
    fixed = S.required_sample_size(0.7, reference_size=100)
    assert fixed.n_reference == 100
    power = _simulated_power(0.7, fixed.n_suspects_needed, 100, 0.05, reps, rng)
    assert 0.8 - 0.1 <= power <= 0.8 + 0.12
    # One fewer suspect is below the Noether requirement.
    k = z**2 / (12 * 0.2**2)
    n = fixed.n_suspects_needed
    assert n * 100 / (n + 100) >= k > (n - 1) * 100 / (n - 1 + 100)
    ratio = S.required_sample_size(0.7, ratio=3.0)
    assert ratio.n_reference >= 3 * ratio.n_suspects_needed - 1
    _assert_json_clean(ratio)


def test_required_sample_size_no_effect_and_unreachable():
    r = S.required_sample_size(0.5)
    assert r.n_suspects_needed is None and r.note.startswith("no effect")
    r = S.required_sample_size(0.55, reference_size=100)
    assert r.n_suspects_needed is None and "unreachable" in r.note
    assert S.required_sample_size(0.55, reference_size=300).n_suspects_needed is not None
    with pytest.raises(InputError):
        S.required_sample_size(0.7, reference_size=10, ratio=2.0)


# ---- issue 14 item 5: upper confidence bound on a calibrated false-positive rate


def test_fpr_upper_bound_is_the_clopper_pearson_bound() -> None:
    from scipy.stats import beta

    from auditmi.stats import fpr_upper_bound

    assert fpr_upper_bound(0, 40, 0.975) == pytest.approx(1 - 0.025 ** (1 / 40))  # 0.088: zero is not zero
    assert fpr_upper_bound(2, 40, 0.975) == pytest.approx(beta.ppf(0.975, 3, 38))
    assert fpr_upper_bound(40, 40, 0.975) == 1.0
    # coverage: the bound is at or above the true rate in >= 97.5 % of draws
    rng = np.random.default_rng(0)
    for f in (0.01, 0.05, 0.3):
        k = rng.binomial(40, f, size=4000)
        cover = np.mean([fpr_upper_bound(int(x), 40, 0.975) >= f for x in k])
        assert cover >= 0.975 - 2 * (0.025 * 0.975 / 4000) ** 0.5


def test_calibrated_binomial_test_adds_the_bound_error_to_the_p_value() -> None:
    from auditmi.stats import binomial_test, calibrated_binomial_test, fpr_upper_bound

    b = calibrated_binomial_test(30, 200, 2, 40, 0.025)
    u = fpr_upper_bound(2, 40, 0.975)
    assert b.expected_fpr == pytest.approx(u) and b.calibrated_fpr == 0.05
    assert b.p_value == pytest.approx(min(1.0, binomial_test(30, 200, u).p_value + 0.025))
    assert b.p_value_at_bound == pytest.approx(binomial_test(30, 200, u).p_value)
    assert calibrated_binomial_test(0, 10, 0, 40, 0.025).p_value == 1.0
