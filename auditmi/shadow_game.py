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
from auditmi.signals import SUMMARY_NAMES


@dataclass
class Game:
    """Standardised residuals of every shadow's game under one regression."""

    regression: str
    z: list[np.ndarray]  # per playing shadow: (n_j, J)
    y: list[np.ndarray]  # per playing shadow: (n_j,) 1 = member of that shadow


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from scipy.stats import rankdata

    r = rankdata(s)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def play(signals: np.ndarray, members: np.ndarray, regression: str, folds: int = 10, seed: int = 0) -> Game:
    """Residuals of each shadow's game.

    Args:
        signals: (P, K, d) summary signals of P public images under K shadows.
        members: (K, P) boolean, True where shadow k trained on image p.
        regression: one of :data:`~auditmi.difficulty.REGRESSIONS`.
    """
    s = np.asarray(signals, dtype=np.float64)
    inc = np.asarray(members, dtype=bool)
    n_sh = s.shape[1]
    spec = ScoreSpec(regression=regression, weights=[1.0] * len(SUMMARY_NAMES), folds=folds)
    zs, ys = [], []
    for j in range(n_sh):
        others = [k for k in range(n_sh) if k != j]
        ref = s[:, others, :].copy()
        ref[inc[others].T] = np.nan  # a shadow that trained on an image is no reference for it
        usable = ~np.all(np.isnan(ref[:, :, 0]), axis=1)
        t, r, y = s[usable, j, :], ref[usable], inc[j, usable].astype(int)
        non = y == 0
        z = np.empty((t.shape[0], len(SUMMARY_NAMES)))
        z[non] = cross_fit_residuals(t[non], r[non], spec, seed=seed + j)
        z[~non] = residuals(fit(t[non], r[non], spec), t[~non], r[~non])
        zs.append(z)
        ys.append(y)
    return Game(regression, zs, ys)


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


def _weights(name: str, z: np.ndarray, y: np.ndarray) -> np.ndarray:
    if name == "lda":
        return _lda_weights(z, y)
    if name in SUMS:
        return np.array([1.0 if s in SUMS[name] else 0.0 for s in SUMMARY_NAMES]) / np.sqrt(len(SUMS[name]))
    return _single_weights(z, y, SUMMARY_NAMES.index(name))


COMBINATIONS = ("lda", *SUMS, *SUMMARY_NAMES)
MIN_NON_MEMBERS = 20  # usable public non-members per playing shadow


def loso_auc(game: Game, combination: str) -> list[float]:
    """Leave-one-shadow-out AUC of a combination (weights learned on the other shadows' games)."""
    out = []
    for j in range(len(game.z)):
        rest = [k for k in range(len(game.z)) if k != j]
        w = _weights(combination, np.concatenate([game.z[k] for k in rest]), np.concatenate([game.y[k] for k in rest]))
        out.append(_auc(game.y[j], game.z[j] @ w))
    return out


def choose_spec(signals: np.ndarray, members: np.ndarray, folds: int = 5, seed: int = 0,
                regressions: tuple[str, ...] = REGRESSIONS, combinations: tuple[str, ...] = COMBINATIONS) -> ScoreSpec:
    """The regression and combination with the best mean leave-one-shadow-out AUC (needs >= 2 shadows).

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
    games = {r: play(signals, members, r, folds, seed) for r in regressions}
    for r, g in games.items():
        for c in combinations:
            a = float(np.nanmean(loso_auc(g, c)))
            table[f"{r}/{c}"] = round(a, 4)
            if best is None or a > best[0]:
                best = (a, r, c)
    assert best is not None
    _, r, c = best
    g = games[r]
    w = _weights(c, np.concatenate(g.z), np.concatenate(g.y))
    return ScoreSpec(regression=r, weights=[float(v) for v in w], signals=list(SUMMARY_NAMES),
                     chosen_by={"method": "shadow game, leave-one-shadow-out ROC AUC", "combination": c,
                                "n_shadows": int(np.asarray(signals).shape[1]), "mean_auc": table})
