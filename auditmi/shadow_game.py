"""Choosing EncoderMI-R's regression and combination on the shadows themselves.

Shadow j plays the audited encoder; the other shadows play the references. The public images
shadow j trained on are its members, the public images it did not train on its non-members
(LiRA-style halves: every public image is a member of some shadows and a non-member of others).
For each image only the other shadows that did NOT train on it serve as references, as in the
audit, where no shadow ever saw a suspect or reference image.

For each candidate regression, the difficulty model is fitted on shadow j's non-members with
cross-fitting (their residuals are out-of-fold) and applied to its members. Combinations of the
standardised residuals are compared by leave-one-shadow-out ROC AUC: the weights used to score
shadow j are learned on the other shadows' games only. The best candidate, refitted on all games,
becomes the bundle's :class:`~auditmi.difficulty.ScoreSpec`. No image an audit reports is used.

Given the shadows' whole-image embeddings of the public images, the game also offers the
neighbourhood signal (:mod:`auditmi.neighbours`): in shadow j's game the playing shadow's
non-members are the reference, so every image's ``nn_ref`` under every shadow is taken against
them, each non-member leaving itself out and each member one random non-member, as in a scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditmi.difficulty import (
    REGRESSIONS,
    ScoreSpec,
    cross_fit_residuals,
    fit,
    residuals,
)
from auditmi.neighbours import knn_similarity
from auditmi.signals import SCORE_SIGNALS, SUMMARY_NAMES


@dataclass
class Game:
    """Standardised residuals of every shadow's game under one regression."""

    regression: str
    z: list[np.ndarray]  # per playing shadow: (n_j, J)
    y: list[np.ndarray]  # per playing shadow: (n_j,) 1 = member of that shadow
    names: tuple[str, ...] = SUMMARY_NAMES  # the J signals


def neighbour_column(embeddings: np.ndarray, reference: np.ndarray, seed: int) -> np.ndarray:
    """(P, K) ``nn_ref`` of every public image under every shadow, against the images ``reference``
    (indices): a reference image leaves itself out, any other image one random reference image."""
    e = np.asarray(embeddings, dtype=np.float64)
    ref = np.asarray(reference)
    pos = np.full(e.shape[0], -1)
    pos[ref] = np.arange(ref.size)
    drop = np.random.default_rng(seed).integers(0, ref.size, e.shape[0])
    exclude = np.where(pos >= 0, pos, drop)
    return np.stack([knn_similarity(e[:, k], e[ref, k], exclude) for k in range(e.shape[1])], axis=1)


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from scipy.stats import rankdata

    r = rankdata(s)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def play(signals: np.ndarray, members: np.ndarray, regression: str, folds: int = 10, seed: int = 0,
         embeddings: np.ndarray | None = None) -> Game:
    """Residuals of each shadow's game.

    Args:
        signals: (P, K, d) summary signals of P public images under K shadows.
        members: (K, P) boolean, True where shadow k trained on image p.
        regression: one of :data:`~auditmi.difficulty.REGRESSIONS`.
        embeddings: (P, K, D) unit-norm whole-image embeddings, to add the neighbourhood signal.
    """
    s0 = np.asarray(signals, dtype=np.float64)
    inc = np.asarray(members, dtype=bool)
    n_sh = s0.shape[1]
    names = SCORE_SIGNALS if embeddings is not None else SUMMARY_NAMES
    spec = ScoreSpec(regression=regression, weights=[1.0] * len(names), signals=list(names), folds=folds)
    zs, ys = [], []
    for j in range(n_sh):
        others = [k for k in range(n_sh) if k != j]
        s = s0
        if embeddings is not None:  # the playing shadow's public non-members are this game's reference
            nb = np.flatnonzero(~inc[j] & np.any(~inc[others], axis=0))
            s = np.concatenate([s0, neighbour_column(embeddings, nb, seed + 31 * j)[:, :, None]], axis=2)
        ref = s[:, others, :].copy()
        ref[inc[others].T] = np.nan  # a shadow that trained on an image is no reference for it
        usable = ~np.all(np.isnan(ref[:, :, 0]), axis=1)
        t, r, y = s[usable, j, :], ref[usable], inc[j, usable].astype(int)
        non = y == 0
        z = np.empty((t.shape[0], len(names)))
        z[non] = cross_fit_residuals(t[non], r[non], spec, seed=seed + j)
        z[~non] = residuals(fit(t[non], r[non], spec), t[~non], r[~non])
        zs.append(z)
        ys.append(y)
    return Game(regression, zs, ys, names)


def _lda_weights(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    w = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(z, y).coef_[0]
    return w / (np.linalg.norm(w) + 1e-12)


def _single_weights(z: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    w = np.zeros(z.shape[1])
    w[k] = 1.0 if z[y == 1, k].mean() >= z[y == 0, k].mean() else -1.0
    return w


#: Fixed equal-weight sums of standardised residuals: nothing is learned, so they cannot overfit
#: a small game the way LDA weights can. The pairwise and view-to-whole alignments are two
#: partly independent readings of the same memorisation.
SUMS: dict[str, tuple[str, ...]] = {
    "sum_logit": ("pair_logit_mean", "whole_logit_mean"),
    "sum_mean": ("pair_mean", "whole_mean"),
}


def _weights(name: str, z: np.ndarray, y: np.ndarray, names: tuple[str, ...] = SUMMARY_NAMES) -> np.ndarray:
    if name == "lda":
        return _lda_weights(z, y)
    if name in SUMS:
        return np.array([1.0 if s in SUMS[name] else 0.0 for s in names]) / np.sqrt(len(SUMS[name]))
    return _single_weights(z, y, names.index(name))


COMBINATIONS = ("lda", *SUMS, *SCORE_SIGNALS)
MIN_NON_MEMBERS = 20  # usable public non-members per playing shadow


def loso_auc(game: Game, combination: str) -> list[float]:
    """Leave-one-shadow-out AUC of a combination (weights learned on the other shadows' games)."""
    out = []
    for j in range(len(game.z)):
        rest = [k for k in range(len(game.z)) if k != j]
        w = _weights(combination, np.concatenate([game.z[k] for k in rest]), np.concatenate([game.y[k] for k in rest]), game.names)
        out.append(_auc(game.y[j], game.z[j] @ w))
    return out


def choose_spec(signals: np.ndarray, members: np.ndarray, folds: int = 5, seed: int = 0,
                regressions: tuple[str, ...] = REGRESSIONS, combinations: tuple[str, ...] = COMBINATIONS,
                embeddings: np.ndarray | None = None) -> ScoreSpec:
    """The regression and combination with the best mean leave-one-shadow-out AUC (needs >= 2 shadows).

    With ``embeddings`` (the shadows' whole-image embeddings of the public images, (P, K, D)) the
    neighbourhood signal is a candidate too, alone and inside the LDA combination.

    The returned spec's ``chosen_by`` records every candidate's mean AUC, so reports and docs can
    show why this one won. ``folds`` is the cross-fitting inside each game (a shadow's public
    non-members are few); the returned spec keeps the default folds for the audit's reference.
    """
    if np.asarray(signals).shape[1] < 2:
        raise ValueError("choosing the score on the shadows needs at least 2 shadows (one plays the target, one the reference)")
    inc = np.asarray(members, dtype=bool)
    # usable non-members of shadow j: it did not train on them and some other shadow did not either
    n_non = min(int(np.sum(~inc[j] & np.any(~np.delete(inc, j, axis=0), axis=0))) for j in range(inc.shape[0]))
    if n_non < MIN_NON_MEMBERS:
        raise ValueError(f"choosing the score on the shadows needs at least {MIN_NON_MEMBERS} public non-members per shadow (got {n_non})")
    table: dict[str, float] = {}
    best: tuple[float, str, str] | None = None
    games = {r: play(signals, members, r, folds, seed, embeddings) for r in regressions}
    for r, g in games.items():
        for c in (c for c in combinations if c in ("lda", *SUMS) or c in g.names):
            a = float(np.nanmean(loso_auc(g, c)))
            table[f"{r}/{c}"] = round(a, 4)
            if best is None or a > best[0]:
                best = (a, r, c)
    assert best is not None
    _, r, c = best
    g = games[r]
    w = _weights(c, np.concatenate(g.z), np.concatenate(g.y), g.names)
    names = list(g.names)
    if len(names) > len(SUMMARY_NAMES) and not np.any(w[len(SUMMARY_NAMES):]):
        # the winner does not use the neighbourhood signal: leave it out, so scans never compute it
        names, w = names[: len(SUMMARY_NAMES)], w[: len(SUMMARY_NAMES)]
    return ScoreSpec(regression=r, weights=[float(v) for v in w], signals=names,
                     chosen_by={"method": "shadow game, leave-one-shadow-out ROC AUC", "combination": c,
                                "n_shadows": int(np.asarray(signals).shape[1]), "mean_auc": table})
