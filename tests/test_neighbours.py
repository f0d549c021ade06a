"""The neighbourhood signal (nn_ref) of EncoderMI-R: definition, exchangeability and its level under the null."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auditmi import difficulty as D
from auditmi import stats as S
from auditmi.neighbours import dropped_reference, knn_similarity, reference_nn, suspect_nn
from auditmi.shadow_game import choose_spec, neighbour_column
from auditmi.signals import SCORE_SIGNALS, SUMMARY_NAMES


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_knn_similarity_hand_example():
    ref = unit(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    q = unit(np.array([[1.0, 0.1]]))
    sims = q @ ref.T
    assert knn_similarity(q, ref, k=1)[0] == pytest.approx(sims.max())
    assert knn_similarity(q, ref, k=2)[0] == pytest.approx(np.sort(sims[0])[-2:].mean())
    # an excluded neighbour is never used, even the nearest
    assert knn_similarity(q, ref, np.array([0]), k=1)[0] == pytest.approx(np.sort(sims[0])[-2])
    # the reference leaves itself out: its own cosine (1.0) is never its neighbour
    r = reference_nn(ref, k=1)
    assert np.all(r < 1.0 - 1e-9)
    assert r[0] == pytest.approx(ref[0] @ ref[2])


def test_suspect_signal_is_per_image_and_reproducible():
    rng = np.random.default_rng(0)
    ref, sus = unit(rng.normal(size=(30, 8))), unit(rng.normal(size=(6, 8)))
    shas = [f"{i:064x}" for i in range(6)]
    a = suspect_nn(sus, ref, shas, seed=3)
    np.testing.assert_allclose(a, suspect_nn(sus, ref, shas, seed=3))  # same seed, same values
    np.testing.assert_allclose(a[2:3], suspect_nn(sus[2:3], ref, shas[2:3], seed=3))  # other suspects do not matter
    d = dropped_reference(shas, 3, 30)
    assert d.min() >= 0 and d.max() < 30
    # each suspect uses n - 1 reference images, like a reference image
    np.testing.assert_allclose(a, knn_similarity(sus, ref, d))


def null_world(n: int, k: int, seed: int, member: np.ndarray | None = None, push: float = 0.0):
    """Embeddings with a shared per-image position (look-alike images come in clusters); shadows and
    target add their own noise. Members are pushed away from everything under the target only
    (contrastive uniformity)."""
    rng = np.random.default_rng(seed)
    base = 3.0 * rng.normal(size=(12, 16))[rng.integers(0, 12, n)] + rng.normal(size=(n, 16))
    enc = [unit(base + 0.5 * rng.normal(size=base.shape)) for _ in range(k + 1)]
    if member is not None and push:
        away = unit(rng.normal(size=base.shape))
        enc[0] = unit(enc[0] + push * member[:, None] * away)
    summ = rng.normal(size=(n, k + 1, len(SUMMARY_NAMES))) * 0.3 + rng.normal(size=(n, 1, len(SUMMARY_NAMES)))
    return np.stack(enc, axis=1), summ  # (n, k+1, 16), (n, k+1, d): index 0 is the audited encoder


def scored(emb, summ, ref, sus, shas, seed, spec):
    """The scan's computation: nn_ref per encoder, then the difficulty model (reference cross-fitted)."""
    cols_r, cols_s = [], []
    for e in range(emb.shape[1]):
        cols_r.append(np.c_[summ[ref, e], reference_nn(emb[ref, e])])
        cols_s.append(np.c_[summ[sus, e], suspect_nn(emb[sus, e], emb[ref, e], [shas[i] for i in sus], seed)])
    tr, ts = cols_r[0], cols_s[0]
    sr, ss = np.stack(cols_r[1:], axis=1), np.stack(cols_s[1:], axis=1)
    oof = D.cross_fit_scores(tr, sr, spec, seed=seed)
    return D.score(D.fit(tr, sr, spec), ts, ss), oof


NN_SPEC = D.ScoreSpec(regression="ols_same", weights=[-1.0 if s == "nn_ref" else 0.0 for s in SCORE_SIGNALS], signals=list(SCORE_SIGNALS))


def test_neighbour_score_keeps_its_level_under_the_null():
    """600 null splits (40 suspects, 150 reference, all non-members, nn_ref recomputed per split):
    the rank test and BH on conformal p-values reject at 5% within sampling error."""
    reps, alpha = 600, 0.05
    rank = bh = 0
    for r in range(reps):
        emb, summ = null_world(190, 3, seed=1000 + r)
        shas = [f"{r:08x}{i:056x}" for i in range(190)]
        ref, sus = np.arange(150), np.arange(150, 190)
        sc, oof = scored(emb, summ, ref, sus, shas, r, NN_SPEC)
        rank += S.rank_test(sc, oof).p_value < alpha
        pv = S.conformal_pvalues(sc, oof, S.tie_breakers([shas[i] for i in sus], r))
        bh += bool(S.benjamini_hochberg(pv, alpha).any())
    se = np.sqrt(alpha * (1 - alpha) / reps)
    assert abs(rank / reps - alpha) <= 3 * se, rank / reps
    assert abs(bh / reps - alpha) <= 3 * se, bh / reps


def test_neighbour_score_detects_pushed_members_and_the_game_finds_it():
    n = 400
    member = np.r_[np.zeros(200), np.ones(100), np.zeros(100)]
    emb, summ = null_world(n, 4, seed=5, member=member, push=0.8)
    shas = [f"{i:064x}" for i in range(n)]
    ref, sus = np.arange(200), np.arange(200, 400)
    sc, _ = scored(emb, summ, ref, sus, shas, 0, NN_SPEC)
    y = member[sus]
    assert S.rank_test(sc[y == 1], sc[y == 0]).auc > 0.75
    # shadow game: 6 shadows on 120 public images, halves; members of each shadow pushed under that shadow
    rng = np.random.default_rng(1)
    p, k = 120, 6
    inc = np.zeros((k, p), bool)
    for j in range(k):
        inc[j, rng.permutation(p)[: p // 2]] = True
    base = 3.0 * rng.normal(size=(8, 16))[rng.integers(0, 8, p)] + rng.normal(size=(p, 16))
    e = np.stack([unit(unit(base + 0.5 * rng.normal(size=base.shape)) + 0.8 * inc[j][:, None] * unit(rng.normal(size=base.shape)))
                  for j in range(k)], axis=1)
    summ_p = rng.normal(size=(p, 1, len(SUMMARY_NAMES))) + 0.3 * rng.normal(size=(p, k, len(SUMMARY_NAMES)))
    spec = choose_spec(summ_p, inc, embeddings=e)
    assert spec.signals == list(SCORE_SIGNALS)
    w = dict(zip(spec.signals, spec.weights, strict=True))
    assert w["nn_ref"] < 0 and abs(w["nn_ref"]) == max(abs(v) for v in w.values())
    assert spec.chosen_by["mean_auc"][f"{spec.regression}/nn_ref"] > 0.7
    # without embeddings the game offers the summaries only
    assert choose_spec(summ_p, inc).signals == list(SUMMARY_NAMES)


def test_neighbour_column_leaves_reference_images_out_of_their_own_neighbours():
    rng = np.random.default_rng(2)
    e = unit(rng.normal(size=(20, 2, 4)))
    ref = np.arange(10)
    col = neighbour_column(e, ref, seed=0)
    np.testing.assert_allclose(col[:10, 1], reference_nn(e[ref, 1]))
    assert col.shape == (20, 2)


def test_a_score_that_uses_nn_ref_needs_the_column():
    t = np.zeros((12, len(SUMMARY_NAMES)))
    with pytest.raises(ValueError, match="nn_ref"):
        D.fit(t, np.zeros((12, 2, len(SUMMARY_NAMES))), NN_SPEC)
    assert D.uses_neighbours(NN_SPEC) and not D.uses_neighbours(D.ScoreSpec())


def test_a_game_winner_without_nn_ref_leaves_it_out_of_the_spec():
    """When the chosen combination puts no weight on nn_ref, the spec does not list it, so a scan
    never computes it (and fit never asks for its column)."""
    rng = np.random.default_rng(3)
    p, k = 120, 4
    inc = np.zeros((k, p), bool)
    for j in range(k):
        inc[j, rng.permutation(p)[: p // 2]] = True
    summ = rng.normal(size=(p, 1, len(SUMMARY_NAMES))) + 0.3 * rng.normal(size=(p, k, len(SUMMARY_NAMES)))
    summ[:, :, 0] += 1.5 * inc.T  # members stand out in pair_mean only
    e = unit(rng.normal(size=(p, k, 8)))
    spec = choose_spec(summ, inc, embeddings=e, combinations=("pair_mean",))
    assert spec.signals == list(SUMMARY_NAMES) and not D.uses_neighbours(spec)


def test_embed_whole_is_unit_norm_and_independent_of_the_batch(tiny_checkpoint):
    from auditmi.encoders.local import load_local
    from auditmi.measures import embed_whole
    from tests.conftest import make_image

    enc = load_local(tiny_checkpoint, torch.device("cpu"))
    small, big = make_image(18, 22, seed=0), make_image(40, 30, seed=1)
    both = embed_whole(enc, [small, big])
    np.testing.assert_allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embed_whole(enc, [small]), both[:1], atol=1e-5)
