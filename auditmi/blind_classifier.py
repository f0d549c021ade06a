"""The blind classifier of the shift check: an L2-regularised logistic regression on
standardised image descriptors, fitted by batched Newton steps, and its cross-validated AUC
for the data and for many row permutations at once (used by :func:`auditmi.shift.shift_check`).
"""

from __future__ import annotations

import numpy as np
from scipy import special as _spspecial
from scipy import stats as _sps
from sklearn.model_selection import StratifiedKFold

# Inverse regularisation strength of the logistic regression (scikit-learn's ``C``) on
# standardised statistics; the default, which keeps the fit well-defined with fewer images
# than statistics and with perfectly separable sets.
_C = 1.0
# Newton's method settings: it converges in ~5-10 steps from zero on standardised features.
_NEWTON_MAX_ITER = 50
_NEWTON_TOL = 1e-8


def _fit_logistic(
    z: np.ndarray,
    outer: np.ndarray,
    tri: tuple[np.ndarray, np.ndarray],
    mask: np.ndarray,
    labels: np.ndarray,
    penalise: np.ndarray,
) -> np.ndarray:
    """Fit a batch of L2 logistic regressions on row subsets of ``z`` by Newton's method.

    Minimises ``0.5 * ||w||^2 + C * sum(log-loss)`` with an unpenalised intercept, which is
    exactly scikit-learn's ``LogisticRegression(C=C)`` objective, for every model in the
    batch at once. Model ``b`` is trained on the rows where ``mask[b]`` is 1, with labels
    ``labels[b]``. Writing every model over all ``N`` rows turns the per-model products into
    single large matrix products (the Hessians are ``(mask * p * (1 - p)) @ outer``), far
    faster than hundreds of separate scikit-learn fits. A step that would increase the
    objective is halved.

    Args:
        z: ``(N, d)`` design matrix (last column all ones, for the intercept).
        outer: ``(N, T)`` upper-triangle entries of every row's outer product ``z_i z_i^T``.
        tri: The ``(row, column)`` indices of those ``T`` entries.
        mask: ``(B, N)`` 1 where a row is in model ``b``'s training set, else 0.
        labels: ``(B, N)`` 0/1 labels (ignored where ``mask`` is 0).
        penalise: ``(d,)`` 1 for weights, 0 for the intercept.

    Returns:
        ``(B, d)`` fitted coefficients (intercept last).
    """
    b = mask.shape[0]
    d = z.shape[1]
    iu, ju = tri
    zt = np.ascontiguousarray(z.T)
    theta = np.zeros((b, d))
    ysign = 2.0 * labels - 1.0
    diag = np.arange(d)

    def objective(th: np.ndarray) -> np.ndarray:
        loss = (mask * np.logaddexp(0.0, -ysign * (th @ zt))).sum(axis=1)
        return 0.5 * np.sum(penalise * th * th, axis=1) + _C * loss

    f = objective(theta)
    for _ in range(_NEWTON_MAX_ITER):
        p = _spspecial.expit(theta @ zt)
        grad = penalise * theta + _C * ((mask * (p - labels)) @ z)
        h_tri = _C * ((mask * (p * (1.0 - p))) @ outer)
        hess = np.empty((b, d, d))
        hess[:, iu, ju] = h_tri
        hess[:, ju, iu] = h_tri
        hess[:, diag, diag] += penalise + 1e-10
        step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
        t = np.ones(b)
        new = theta - step
        f_new = objective(new)
        for _ in range(20):  # backtracking, only for models whose objective went up
            worse = f_new > f + 1e-12 * (1.0 + np.abs(f))
            if not worse.any():
                break
            t = np.where(worse, t * 0.5, t)
            new = theta - t[:, None] * step
            f_new = np.where(worse, objective(new), f_new)
        theta, f = new, f_new
        if float(np.max(np.abs(t[:, None] * step))) < _NEWTON_TOL:
            break
    return theta


class _CVAuc:
    """Cross-validated AUC of the blind classifier, for the data and for row permutations.

    Permuting the *rows* of the statistics while keeping the labels and the stratified folds
    fixed is the same as permuting the labels and re-drawing stratified folds with the same
    class counts, but lets every permutation share one fold layout, so they can be fitted in
    one batch.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, k: int, seed: int) -> None:
        # Standardising on all rows together uses no labels, so it leaks nothing into the
        # out-of-fold scores and is the same for every permutation.
        mu = x.mean(axis=0)
        sd = x.std(axis=0)
        keep = sd > 1e-12 * (1.0 + np.abs(mu))
        xs = (x[:, keep] - mu[keep]) / sd[keep]
        self.n_features = int(keep.sum())
        self.z = np.c_[xs, np.ones(x.shape[0])]
        d = self.z.shape[1]
        self.tri = np.triu_indices(d)
        self.outer = self.z[:, self.tri[0]] * self.z[:, self.tri[1]]
        self.penalise = np.r_[np.ones(self.n_features), 0.0]
        self.y = y.astype(np.float64)
        self.pos = y == 1
        self.n1 = int(self.pos.sum())
        self.n0 = int(y.size - self.n1)
        skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        self.folds = list(skf.split(np.zeros(y.size), y))

    def scores(self, perms: np.ndarray) -> np.ndarray:
        """Pooled out-of-fold scores, per row permutation in ``perms`` (B, n), by position."""
        b, n = perms.shape
        out = np.zeros((b, n))
        if self.n_features == 0:  # every statistic constant: nothing to learn
            return out
        rows = np.arange(b)[:, None]
        # Position j of permutation b holds original row perms[b, j] and carries label y[j].
        labels = np.empty((b, n))
        labels[rows, perms] = self.y
        for train, test in self.folds:
            mask = np.zeros((b, n))
            mask[rows, perms[:, train]] = 1.0
            theta = _fit_logistic(self.z, self.outer, self.tri, mask, labels, self.penalise)
            zt = self.z[perms[:, test]]  # (B, m, d)
            out[:, test] = np.matmul(zt, theta[:, :, None])[:, :, 0]
        return out

    def aucs(self, perms: np.ndarray) -> np.ndarray:
        """AUC of the pooled out-of-fold scores for each row permutation in ``perms`` (B, n)."""
        return self.auc_of(self.scores(perms))

    def auc_of(self, scores: np.ndarray) -> np.ndarray:
        """ROC AUC (ties half) of each row of ``scores`` against the fixed labels."""
        ranks = _sps.rankdata(scores, axis=1)
        u = ranks[:, self.pos].sum(axis=1) - self.n1 * (self.n1 + 1) / 2
        return u / (self.n1 * self.n0)
