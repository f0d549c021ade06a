"""EncoderMI-R: the difficulty model, cross-fitting, and choosing the score on the shadows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from auditmi import difficulty as D
from auditmi import stats as S
from auditmi.errors import InputError
from auditmi.shadow_game import choose_spec, play
from auditmi.signals import SUMMARY_NAMES

DIM = len(SUMMARY_NAMES)


def synth(n: int, k: int, member: np.ndarray, seed: int, effect: float = 0.6):
    """Signals with a per-image difficulty shared by all encoders; members get a shift in signal 0."""
    rng = np.random.default_rng(seed)
    diff = rng.normal(size=(n, DIM))
    shadows = diff[:, None, :] + 0.3 * rng.normal(size=(n, k, DIM))
    target = 0.5 + 1.5 * diff + 0.3 * rng.normal(size=(n, DIM))
    target[:, 0] += effect * member
    return target, shadows


def test_calibration_removes_difficulty_and_scores_are_per_image():
    n_ref, n_ev = 300, 400
    member = np.r_[np.zeros(n_ref), np.ones(n_ev // 2), np.zeros(n_ev // 2)]
    t, s = synth(n_ref + n_ev, 4, member, seed=1)
    spec = D.ScoreSpec(regression="ols_same", weights=[1.0] + [0.0] * (DIM - 1))
    f = D.fit(t[:n_ref], s[:n_ref], spec)
    assert f.r2[0] > 0.9  # difficulty explains most of the non-member variance
    y = member[n_ref:]
    cal = D.score(f, t[n_ref:], s[n_ref:])
    raw_auc = S.rank_test(t[n_ref:, 0][y == 1], t[n_ref:, 0][y == 0]).auc
    cal_auc = S.rank_test(cal[y == 1], cal[y == 0]).auc
    assert cal_auc > raw_auc + 0.2
    # one image's score does not depend on the others scored with it
    single = np.array([D.score(f, t[n_ref + i : n_ref + i + 1], s[n_ref + i : n_ref + i + 1])[0] for i in range(5)])
    np.testing.assert_allclose(single, cal[:5])
    # spec round-trips through JSON form
    assert D.ScoreSpec.from_dict(spec.to_dict()).to_dict() == spec.to_dict()
    with pytest.raises(ValueError):
        D.ScoreSpec.from_dict({**spec.to_dict(), "regression": "magic"})


def test_cross_fitted_reference_scores_are_out_of_sample():
    t, s = synth(60, 2, np.zeros(60), seed=2)
    spec = D.ScoreSpec(regression="ols_all", weights=[1.0] + [0.0] * (DIM - 1), folds=5)
    oof = D.cross_fit_scores(t, s, spec)
    ins = D.score(D.fit(t, s, spec), t, s)
    # in-sample residuals are shrunk by the fit; out-of-fold ones are not
    assert np.std(oof) > np.std(ins)
    np.testing.assert_allclose(oof, D.cross_fit_scores(t, s, spec))  # deterministic


@pytest.mark.slow
def test_rank_test_and_pvalues_keep_their_level_under_the_null():
    """Null: suspects and reference are all non-members; suspects scored by the full fit,
    reference by cross-fitting. Rejection rate at 0.05 stays within 2 s.e. of 0.05 (or below)."""
    spec = D.ScoreSpec(regression="ols_all", weights=list(np.ones(DIM) / DIM))
    rej, pv_small, reps = 0, 0, 300
    for r in range(reps):
        t, s = synth(140, 3, np.zeros(140), seed=100 + r)
        ref, sus = slice(0, 100), slice(100, 140)
        oof = D.cross_fit_scores(t[ref], s[ref], spec, seed=r)
        sc = D.score(D.fit(t[ref], s[ref], spec), t[sus], s[sus])
        rej += S.rank_test(sc, oof).p_value < 0.05
        pv_small += int(S.empirical_pvalues(sc[:1], oof)[0] <= 0.05)
    se = np.sqrt(0.05 * 0.95 / reps)
    assert rej / reps <= 0.05 + 2.5 * se
    assert pv_small / reps <= 0.05 + 2.5 * se


def test_shadow_game_picks_an_informative_score():
    n, k = 120, 5
    rng = np.random.default_rng(3)
    inc = np.zeros((k, n), bool)
    for i in range(k):
        inc[i, rng.permutation(n)[: n // 2]] = True
    diff = rng.normal(size=(n, DIM))
    sig = diff[:, None, :] + 0.3 * rng.normal(size=(n, k, DIM))
    sig[:, :, 4] += 0.8 * inc.T  # membership shows in "whole_mean"
    g = play(sig, inc, "ols_same", folds=5)
    assert len(g.z) == k and all(z.shape[1] == DIM for z in g.z)
    spec = choose_spec(sig, inc, folds=5, regressions=("diff", "ols_same"), combinations=("lda", "pair_mean", "whole_mean"))
    assert spec.chosen_by["combination"] in ("lda", "whole_mean")
    assert abs(spec.weights[4]) == max(abs(w) for w in spec.weights) and spec.weights[4] > 0
    assert spec.chosen_by["mean_auc"][f"{spec.regression}/pair_mean"] < 0.65
    with pytest.raises(ValueError):
        choose_spec(sig[:, :1], inc[:1])


def test_reference_threshold_is_conservative_and_reports_its_uncertainty():
    from auditmi.stats import reference_threshold

    rng = np.random.default_rng(5)
    hits, reps = [], 2000
    for _ in range(reps):
        ref, new = rng.normal(size=200), rng.normal(size=50)
        thr = reference_threshold(ref, 0.05)
        hits.append(np.mean(new >= thr.threshold))
    assert np.mean(hits) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / (reps * 50))
    t = reference_threshold(np.arange(200.0), 0.01)
    assert t.reference_above == 1 and t.threshold > 198 and t.expected_fpr <= 0.01
    assert t.fpr_interval[0] < t.expected_fpr < t.fpr_interval[1]
    # the rule equals "empirical p-value <= fpr"
    s = np.array([197.5, 198.0, 198.5, 199.5])
    np.testing.assert_array_equal(s >= t.threshold, S.empirical_pvalues(s, np.arange(200.0)) <= 0.01)
    small = reference_threshold(np.arange(50.0), 0.01)
    assert small.threshold == np.inf and "cannot resolve" in small.note


def test_calibrated_scores_mask_shadow_training_images():
    from auditmi.difficulty import calibrated_scores
    from auditmi.shadow_set import ShadowEntry, ShadowSet

    t, s = synth(120, 2, np.zeros(120), seed=9)
    sha = [f"h{i}" for i in range(120)]
    ents = [ShadowEntry(f"shadow-{k}", None, "", {}, 32, (0.5,) * 3, (0.5,) * 3, tr)  # type: ignore[arg-type]
            for k, tr in enumerate((["h0", "h1", "h100"], ["h1"]))]
    ss = ShadowSet(ents, D.ScoreSpec(regression="ols_same"))
    out = calibrated_scores(t[100:], s[100:], sha[100:], t[:100], s[:100], sha[:100], ss)
    assert out.reference_kept.sum() == 99 and not out.reference_kept[1]  # h1: both shadows trained on it
    assert out.suspect_kept.all() and out.suspect_scores.shape == (20,) and out.reference_scores.shape == (99,)
    acts = {o["sha256"]: o["action"] for o in out.overlap}
    assert "excluded" in acts["h1"] and "not used" in acts["h0"] and "not used" in acts["h100"]
    assert 0.5 < out.r2_out_of_fold <= out.r2["pair_mean"] + 0.05


def test_conformal_pvalues_hand_example_ties_and_tie_breakers():
    ref = [0.1, 0.5, 0.5, 0.9]
    p = S.conformal_pvalues([1.0, 0.5, 0.0, 0.7], ref, [0.5, 0.5, 0.5, 0.25])
    # above all: u/5; tied with two: (1 + 0.5 * 3)/5; below all: (4 + 0.5)/5; one above: (1 + 0.25)/5
    np.testing.assert_allclose(p, [0.1, 0.5, 0.9, 0.25])
    # u = 1 gives the conservative empirical p-value; the randomised one is never larger
    np.testing.assert_allclose(S.conformal_pvalues([1.0, 0.5, 0.0], ref, [1 - 1e-15] * 3), S.empirical_pvalues([1.0, 0.5, 0.0], ref))
    u = S.tie_breakers(["a" * 64, "b" * 64, "a" * 64], seed=3)
    assert u[0] == u[2] and u[0] != u[1] and np.all((u > 0) & (u < 1))
    assert not np.array_equal(u, S.tie_breakers(["a" * 64, "b" * 64, "a" * 64], seed=4))
    v = S.tie_breakers([f"{i:064x}" for i in range(20000)], seed=0)  # uniform: Kolmogorov-Smirnov
    assert sps.kstest(v, "uniform").pvalue > 0.001
    with pytest.raises(InputError):
        S.conformal_pvalues([1.0], ref, [1.0])


def test_conformal_pvalues_exact_level_and_bh_level_under_the_null():
    """Null simulation: p is exactly uniform (not merely valid), and BH over 40 suspects with a shared
    200-image reference flags something in about alpha of the splits, for light and heavy tails."""
    rng = np.random.default_rng(12)
    reps = 4000
    cont = rng.normal(size=(reps, 21))
    disc = rng.integers(0, 4, size=(reps, 21)).astype(float)  # massive ties
    for data in (cont, disc):
        p = np.array([S.conformal_pvalues(r[:1], r[1:], rng.uniform(size=1))[0] for r in data])
        for a in (0.01, 0.05, 0.2, 0.5, 0.9):
            assert abs(np.mean(p <= a) - a) <= 3.5 * math.sqrt(a * (1 - a) / reps)
    splits, alpha = 2000, 0.05
    for draw in (rng.normal, lambda size: rng.standard_t(3, size=size)):
        hits = 0
        for _ in range(splits):
            x = draw(size=240)
            hits += bool(S.benjamini_hochberg(S.conformal_pvalues(x[:40], x[40:], rng.uniform(size=40)), alpha).any())
        assert abs(hits / splits - alpha) <= 3 * math.sqrt(alpha * (1 - alpha) / splits)
    # the deterministic empirical p-value never reaches 0.05/40 with 200 reference images
    assert S.empirical_pvalues([1e9], np.arange(200.0))[0] > alpha / 40
