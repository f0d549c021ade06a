"""Encoder-free distribution-shift check between the suspect and the reference images.

A dataset-level audit asks whether the data owner's images (the *suspects*) get higher
membership scores from the audited encoder than images known not to be in its training set
(the *reference*). That comparison only measures membership if the two sets are otherwise
alike. Later work showed that they often are not, and that this alone fakes membership: on a
distribution-matched CLIP benchmark published attacks fall to about 51 % AUC (Gomez, AAAI
2026), and "blind" classifiers that never look at the model beat many published attacks
(Das, Zhang & Tramer 2025); see docs/method.md, "What later work showed".

This module runs such a blind classifier *against ourselves* before a verdict is trusted:

* :func:`image_statistics` turns one image into a short vector of simple statistics that do
  not involve any encoder (colour, brightness, contrast, sharpness, size, ...);
* :func:`shift_check` asks whether a cross-validated logistic regression on those statistics
  can tell suspects from references better than chance (permutation test). If it can, the
  audit must report "inconclusive" rather than "likely used": a higher membership score could
  come from the difference between the sets, not from training.

Passing the check does not prove the sets are comparable (a shift the statistics do not see,
e.g. in content, can remain); failing it shows that they are not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from scipy import special as _spspecial
from scipy import stats as _sps
from sklearn.model_selection import StratifiedKFold

from auditmi.errors import InputError
from auditmi.stats import _delong_variance, _jsonable

__all__ = [
    "STAT_NAMES",
    "STAT_DESCRIPTIONS",
    "MIN_PER_SET",
    "ShiftCheck",
    "image_statistics",
    "shift_check",
]

# --------------------------------------------------------------------------------------
# Per-image statistics
# --------------------------------------------------------------------------------------

_HIST_BINS = 8

#: Names of the entries of :func:`image_statistics`'s vector, in order.
STAT_NAMES: list[str] = [
    "mean_red",
    "mean_green",
    "mean_blue",
    "std_red",
    "std_green",
    "std_blue",
    "mean_luminance",
    "std_luminance",
    "mean_saturation",
    "colourfulness",
    *[f"luminance_hist_{i}" for i in range(_HIST_BINS)],
    "mean_gradient",
    "frac_near_black",
    "frac_near_white",
    "log_width",
    "log_height",
    "aspect_ratio",
    "is_grayscale",
]

#: What a difference in each statistic means, in words a user understands (used in reasons).
STAT_DESCRIPTIONS: dict[str, str] = {
    "mean_red": "average colour",
    "mean_green": "average colour",
    "mean_blue": "average colour",
    "std_red": "contrast",
    "std_green": "contrast",
    "std_blue": "contrast",
    "mean_luminance": "brightness",
    "std_luminance": "contrast",
    "mean_saturation": "colour saturation",
    "colourfulness": "colour saturation",
    **{f"luminance_hist_{i}": "brightness" for i in range(_HIST_BINS)},
    "mean_gradient": "sharpness and amount of detail",
    "frac_near_black": "share of very dark pixels",
    "frac_near_white": "share of very bright pixels",
    "log_width": "image size",
    "log_height": "image size",
    "aspect_ratio": "aspect ratio",
    "is_grayscale": "grayscale versus colour",
}

# Pixel statistics are computed on a regular grid of every k-th row and column with at most
# this many samples along the longer side. Subsampling (not resizing) keeps per-pixel
# statistics unbiased (a resize would smooth and lower the stds) and keeps the cost per image
# constant whatever its resolution.
_MAX_GRID_SIDE = 160
# Fixed grayscale size for the gradient statistic: the mean gradient of a 4000 px photo and of
# its 400 px thumbnail differ ~10x, so it is measured after an (antialiased) resize to a fixed
# size, about the input size of typical encoders (224 px). Images smaller than this are
# upsampled and therefore look smoother; that is a real difference an encoder also sees.
_GRADIENT_SIZE = 224
# Luminance (0..1) at or below / at or above which a pixel counts as near-black / near-white.
_NEAR_BLACK = 10 / 255
_NEAR_WHITE = 245 / 255
# An image is flagged grayscale when fewer than 1 % of its sampled pixels have a channel
# spread (max - min over R, G, B) above 6 levels: JPEG-compressed grayscale photos stored as
# RGB show a few levels of chroma noise, real colour photos far more.
_GRAY_SPREAD = 6
_GRAY_MAX_FRACTION = 0.01
# ITU-R BT.601 luma weights, the ones PIL's convert("L") uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def image_statistics(pixels: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """Encoder-free statistics of one image, in the order of :data:`STAT_NAMES`.

    The vector holds: per-channel mean and std (pixel values scaled to 0..1); mean and std of
    the BT.601 luminance; mean HSV saturation; colourfulness (Hasler & Suesstrunk 2003); an
    8-bin luminance histogram (fractions summing to 1); the mean gradient magnitude of a
    224 x 224 grayscale resize (sharpness / edge density, independent of resolution); the
    fractions of near-black and near-white pixels; log original width and height; aspect
    ratio (width / height); and a 0/1 grayscale flag.

    Pixel statistics use every k-th row and column so that at most 160 samples lie along the
    longer side; this is unbiased for per-pixel statistics and costs about a millisecond for
    any image size.

    Args:
        pixels: ``uint8`` RGB array of shape ``(H, W, 3)`` (``LoadedImage.pixels``); a
            ``(H, W)`` grayscale array is accepted too.
        original_size: ``(width, height)`` of the file before any downscaling
            (``LoadedImage.original_size``); the size statistics use it, so a downscaled
            copy gives the same size features as the original.

    Returns:
        A float64 vector of length ``len(STAT_NAMES)``, all finite.

    Raises:
        InputError: If ``pixels`` is not a non-empty uint8 image array or ``original_size``
            is not two positive numbers.
    """
    px = np.asarray(pixels)
    if px.ndim == 2:
        px = np.repeat(px[:, :, None], 3, axis=2)
    if px.ndim != 3 or px.shape[2] != 3 or px.shape[0] < 1 or px.shape[1] < 1:
        raise InputError(
            f"pixels must be an (H, W, 3) RGB array, got shape {px.shape}; pass "
            "LoadedImage.pixels from auditmi.images.load_image."
        )
    if px.dtype != np.uint8:
        raise InputError(
            f"pixels must be uint8 (0..255), got {px.dtype}; convert with "
            "np.clip(x, 0, 255).astype(np.uint8) or load the file with auditmi.images.load_image."
        )
    try:
        width, height = (float(v) for v in original_size)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"original_size must be (width, height), got {original_size!r}."
        ) from exc
    if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
        raise InputError(f"original_size must be two positive numbers, got {original_size!r}.")

    h, w = px.shape[:2]
    step = max(1, math.ceil(max(h, w) / _MAX_GRID_SIDE))
    # Planar layout (3, N): numpy reductions over a trailing axis of length 3 are ~10x slower.
    planar = np.ascontiguousarray(px[::step, ::step].transpose(2, 0, 1)).reshape(3, -1)
    n = planar.shape[1]
    rgb = planar.astype(np.float32) * np.float32(1 / 255)
    means = rgb.mean(axis=1, dtype=np.float64)
    stds = rgb.std(axis=1, dtype=np.float64)

    lum = _LUMA @ rgb
    mx8 = np.maximum(np.maximum(planar[0], planar[1]), planar[2])
    mn8 = np.minimum(np.minimum(planar[0], planar[1]), planar[2])
    spread8 = mx8 - mn8
    mx = mx8.astype(np.float32)
    # HSV saturation (max - min) / max, 0 for black pixels.
    sat = np.divide(spread8.astype(np.float32), mx, out=np.zeros_like(mx), where=mx8 > 0)

    # Colourfulness, Hasler & Suesstrunk (2003): opponent channels rg and yb.
    rg = rgb[0] - rgb[1]
    yb = 0.5 * (rgb[0] + rgb[1]) - rgb[2]
    colourfulness = math.sqrt(float(rg.var()) + float(yb.var())) + 0.3 * math.sqrt(
        float(rg.mean()) ** 2 + float(yb.mean()) ** 2
    )

    bins = np.minimum((lum * _HIST_BINS).astype(np.intp), _HIST_BINS - 1)
    hist = np.bincount(bins, minlength=_HIST_BINS) / n

    gray = Image.fromarray(np.ascontiguousarray(px)).convert("L")
    if gray.size != (_GRADIENT_SIZE, _GRADIENT_SIZE):
        # Shrinking: BOX (area averaging) is antialiased and ~3x faster than BILINEAR.
        # Enlarging: BILINEAR, since BOX would upsample into blocks with artificial edges.
        shrink = min(w, h) >= _GRADIENT_SIZE
        resample = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
        gray = gray.resize((_GRADIENT_SIZE, _GRADIENT_SIZE), resample)
    g = np.asarray(gray, dtype=np.float32) * np.float32(1 / 255)
    dx = g[:-1, 1:] - g[:-1, :-1]
    dy = g[1:, :-1] - g[:-1, :-1]
    mean_gradient = float(np.sqrt(dx * dx + dy * dy).mean())

    is_gray = float(np.count_nonzero(spread8 > _GRAY_SPREAD) < _GRAY_MAX_FRACTION * n)

    out = np.empty(len(STAT_NAMES), dtype=np.float64)
    out[0:3] = means
    out[3:6] = stds
    out[6] = float(lum.mean(dtype=np.float64))
    out[7] = float(lum.std(dtype=np.float64))
    out[8] = float(sat.mean(dtype=np.float64))
    out[9] = colourfulness
    out[10 : 10 + _HIST_BINS] = hist
    k = 10 + _HIST_BINS
    out[k] = mean_gradient
    out[k + 1] = np.count_nonzero(lum <= _NEAR_BLACK) / n
    out[k + 2] = np.count_nonzero(lum >= _NEAR_WHITE) / n
    out[k + 3] = math.log(width)
    out[k + 4] = math.log(height)
    out[k + 5] = width / height
    out[k + 6] = is_gray
    return out


# --------------------------------------------------------------------------------------
# The shift check
# --------------------------------------------------------------------------------------

#: Minimum number of images per set for a shift check.
MIN_PER_SET = 5
_TOO_FEW_REASON = "too few images for a shift check (need >= 5 per set)"

# Inverse regularisation strength of the logistic regression (scikit-learn's ``C``) on
# standardised statistics; the default, which keeps the fit well-defined with fewer images
# than statistics and with perfectly separable sets.
_C = 1.0
# Newton's method settings: it converges in ~5-10 steps from zero on standardised features.
_NEWTON_MAX_ITER = 50
_NEWTON_TOL = 1e-8
# Sequential permutation test (Besag & Clifford 1991): stop once this many permuted AUCs have
# reached the observed one (or more, when alpha needs it; see shift_check), since p can then
# no longer fall below alpha. 10 hits also make the reported p-value precise to about +-30 %.
# Permutations run in chunks so that a clearly null check stops after a few dozen.
_SEQ_HITS = 10
_FIRST_CHUNK = 20
_CHUNK = 60


@dataclass(frozen=True)
class ShiftCheck:
    """Result of :func:`shift_check`.

    Attributes:
        distinguishable: True when the suspect and reference images can be told apart without
            the encoder (``p_value < alpha`` and ``auc >= threshold_auc``); the audit must
            then say "inconclusive" instead of "likely used".
        auc: Cross-validated ROC AUC of the blind classifier (0.5 = chance; CV on pure noise
            tends to land slightly below 0.5); NaN when there were too few images.
        auc_ci: Approximate 95 % interval for ``auc`` (DeLong variance of the pooled
            out-of-fold scores; it ignores the extra variance from cross-validation), or None.
        p_value: Permutation p-value of ``auc`` (one-sided); NaN when not computed.
        n_suspects: Number of suspect images.
        n_reference: Number of reference images.
        method: How the check was done, in words.
        threshold_auc: Smallest AUC that counts as a shift.
        alpha: Significance level of the permutation test.
        top_differences: Up to 3 statistics with the largest absolute standardised difference
            (suspects minus reference, in pooled within-set standard deviations), as dicts
            with keys ``statistic``, ``description``, ``suspect_mean``, ``reference_mean``,
            ``standardised_difference``.
        reason: One sentence for the user.
        n_permutations: Number of permutations actually run (fewer than requested when the
            sequential test stopped early because the AUC was clearly null).
    """

    distinguishable: bool
    auc: float
    auc_ci: tuple[float, float] | None
    p_value: float
    n_suspects: int
    n_reference: int
    method: str
    threshold_auc: float
    alpha: float
    top_differences: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    n_permutations: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-able dict (NaN -> None, tuples -> lists)."""
        return _jsonable(asdict(self))


def _stat_matrix(values: Any, name: str) -> np.ndarray:
    """Validate an (N, S) matrix of finite statistics and return it as float64."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be an (N, S) array of numbers ({exc}).") from exc
    if arr.ndim == 2 and arr.shape[0] == 0:
        return arr
    if arr.ndim != 2:
        raise InputError(
            f"{name} must be 2-D (one row of image_statistics per image), got shape {arr.shape}."
        )
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.all(np.isfinite(arr), axis=1)))
        raise InputError(
            f"{name} has {bad} row(s) with NaN or infinite values; recompute them with "
            "auditmi.shift.image_statistics or drop those images."
        )
    return arr


def _standardised_differences(
    xs: np.ndarray, xr: np.ndarray, names: list[str]
) -> list[dict[str, Any]]:
    """Top 3 statistics by |mean difference| in pooled within-set standard deviations."""
    ms, mr = xs.mean(axis=0), xr.mean(axis=0)
    vs = xs.var(axis=0, ddof=1) if xs.shape[0] > 1 else np.zeros(xs.shape[1])
    vr = xr.var(axis=0, ddof=1) if xr.shape[0] > 1 else np.zeros(xr.shape[1])
    pooled = np.sqrt((vs + vr) / 2)
    # When a statistic is constant within each set (e.g. the grayscale flag: all colour vs all
    # grayscale), the pooled sd is 0 and Cohen's d infinite; fall back to the sd of both sets
    # together so the difference stays finite and still ranks near the top.
    overall = np.r_[xs, xr].std(axis=0, ddof=0)
    scale = np.where(pooled > 1e-12 * (1 + np.abs(ms) + np.abs(mr)), pooled, overall)
    diff = ms - mr
    d = np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)
    order = np.argsort(-np.abs(d), kind="stable")[:3]
    return [
        {
            "statistic": names[i],
            "description": STAT_DESCRIPTIONS.get(names[i], names[i]),
            "suspect_mean": float(ms[i]),
            "reference_mean": float(mr[i]),
            "standardised_difference": float(d[i]),
        }
        for i in order
        if d[i] != 0
    ]


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


def _fmt_p(p: float) -> str:
    return f"p={p:.2g}" if p >= 0.001 else "p<0.001"


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def shift_check(
    suspect_stats: np.ndarray,
    reference_stats: np.ndarray,
    *,
    alpha: float = 0.01,
    threshold_auc: float = 0.6,
    seed: int = 0,
    n_permutations: int = 200,
) -> ShiftCheck:
    """Can the suspect and reference images be told apart without the audited encoder?

    A "blind" classifier (Das, Zhang & Tramer 2025): L2 logistic regression (``C = 1``, the
    scikit-learn objective, fitted by batched Newton steps) on the standardised rows of
    :func:`image_statistics`, predicting suspect (1) vs reference (0). Its out-of-fold
    scores from stratified k-fold cross-validation (``k = min(5, smallest set size)``) give
    a ROC AUC; a permutation test re-runs the same cross-validation on shuffled labels and
    reports ``p = (1 + #{permuted AUC >= observed}) / (1 + permutations)`` (Phipson & Smyth
    2010), which is valid (super-uniform) whatever the statistics' distribution. When the
    AUC is clearly null the test stops early (Besag & Clifford 1991 sequential p-value,
    ``hits / permutations run``, after 10 permuted AUCs reach the observed one); it stops
    only when p can no longer fall below ``alpha``, so the decision is the same as with all
    permutations.

    ``distinguishable`` requires **both** ``p_value < alpha`` and ``auc >= threshold_auc``:
    with thousands of images a statistically significant but tiny difference (AUC 0.53) is
    too weak to explain a membership signal and should not block the audit, while with a few
    images a large AUC can be noise, which the p-value guards against.

    Args:
        suspect_stats: ``(n_suspects, S)`` rows of :func:`image_statistics`.
        reference_stats: ``(n_reference, S)`` rows for the reference (non-member) images.
        alpha: Significance level of the permutation test, in (0, 1).
        threshold_auc: Smallest cross-validated AUC that counts as a shift, in [0.5, 1].
        seed: Seed for the fold split and the permutations (results are reproducible).
        n_permutations: Maximum number of permutations; must allow ``p < alpha``
            (``1 / (n_permutations + 1) < alpha``, e.g. >= 100 for ``alpha = 0.01``).

    Returns:
        A :class:`ShiftCheck`. With fewer than 5 images in either set the check is not run:
        ``distinguishable`` is False, ``auc`` and ``p_value`` are NaN and the reason says so.

    Raises:
        InputError: On non-2-D or non-finite statistics, mismatched numbers of statistics,
            or invalid ``alpha`` / ``threshold_auc`` / ``n_permutations``.
    """
    xs = _stat_matrix(suspect_stats, "suspect_stats")
    xr = _stat_matrix(reference_stats, "reference_stats")
    if xs.shape[1] != xr.shape[1] and xs.shape[0] and xr.shape[0]:
        raise InputError(
            f"suspect_stats has {xs.shape[1]} statistics per image but reference_stats has "
            f"{xr.shape[1]}; compute both with the same version of image_statistics."
        )
    a = float(alpha)
    if not (math.isfinite(a) and 0 < a < 1):
        raise InputError(f"alpha must lie in (0, 1), got {alpha!r}.")
    thr = float(threshold_auc)
    if not (math.isfinite(thr) and 0.5 <= thr <= 1):
        raise InputError(f"threshold_auc must lie in [0.5, 1], got {threshold_auc!r}.")
    n_perm = int(n_permutations)
    if n_perm != n_permutations or n_perm < 1:
        raise InputError(f"n_permutations must be a positive integer, got {n_permutations!r}.")
    if 1.0 / (n_perm + 1) >= a:
        raise InputError(
            f"with n_permutations={n_perm} the smallest possible p-value is "
            f"1/{n_perm + 1} >= alpha={a:g}, so no shift could ever be detected; use at "
            f"least {math.floor(1 / a - 1) + 1} permutations."
        )

    n_s, n_r = int(xs.shape[0]), int(xr.shape[0])
    n_stats = xs.shape[1] if n_s else xr.shape[1]
    names = STAT_NAMES if n_stats == len(STAT_NAMES) else [f"stat_{i}" for i in range(n_stats)]
    common: dict[str, Any] = dict(n_suspects=n_s, n_reference=n_r, threshold_auc=thr, alpha=a)
    if min(n_s, n_r) < MIN_PER_SET:
        return ShiftCheck(
            distinguishable=False,
            auc=math.nan,
            auc_ci=None,
            p_value=math.nan,
            method="not run",
            top_differences=[],
            reason=_TOO_FEW_REASON,
            n_permutations=0,
            **common,
        )

    x = np.r_[xs, xr]
    y = np.r_[np.ones(n_s, dtype=np.int64), np.zeros(n_r, dtype=np.int64)]
    k = min(5, n_s, n_r)
    cv = _CVAuc(x, y, k, seed)
    n = y.size
    oof = cv.scores(np.arange(n)[None, :])
    observed = float(cv.auc_of(oof)[0])
    oof = oof[0]
    tol = 1e-12

    # Sequential stopping: once `stop_hits` permuted AUCs reach the observed one, the full
    # test could only give p >= (1 + stop_hits) / (1 + n_perm) >= alpha, and the sequential
    # p-value stop_hits / m >= stop_hits / n_perm >= alpha too, so the decision is unchanged.
    stop_hits = max(_SEQ_HITS, math.ceil(a * (n_perm + 1)))
    rng = np.random.default_rng([seed, 1])
    hits = 0
    done = 0
    stopped = False
    while done < n_perm:
        m = min(_FIRST_CHUNK if done == 0 else _CHUNK, n_perm - done)
        perms = np.argsort(rng.random((m, n)), axis=1)
        perm_aucs = cv.aucs(perms)
        ge = perm_aucs >= observed - tol
        if hits + int(ge.sum()) >= stop_hits:
            # Stop at the permutation where the stop_hits-th hit occurred.
            idx = int(np.flatnonzero(np.cumsum(ge) + hits >= stop_hits)[0])
            done += idx + 1
            hits = stop_hits
            stopped = True
            break
        hits += int(ge.sum())
        done += m
    p_value = hits / done if stopped else (1.0 + hits) / (1.0 + done)

    var = _delong_variance(oof[:n_s], oof[n_s:])
    auc_ci: tuple[float, float] | None = None
    if math.isfinite(var):
        half = float(_sps.norm.ppf(0.975)) * math.sqrt(max(var, 0.0))
        auc_ci = (max(0.0, observed - half), min(1.0, observed + half))

    top = _standardised_differences(xs, xr, names)
    distinguishable = bool(p_value < a and observed >= thr)
    stats_txt = f"AUC {observed:.2f}, {_fmt_p(p_value)}"
    if distinguishable:
        words = list(dict.fromkeys(t["description"] for t in top))
        what = f": they differ mostly in {_join(words)}" if words else ""
        reason = (
            f"suspect and reference images are distinguishable without the encoder "
            f"(cross-validated {stats_txt}){what}, so a higher membership score could come "
            f"from the difference, not from training"
        )
    elif p_value < a:
        reason = (
            f"a small encoder-free difference was detected ({stats_txt}), below the "
            f"AUC {thr:g} needed to count as a distribution shift"
        )
    elif observed >= thr:
        reason = (
            f"no significant encoder-free difference ({stats_txt}); with so few images a "
            f"difference may go unnoticed"
        )
    else:
        reason = f"no encoder-free difference detected ({stats_txt})"
    method = (
        f"logistic regression on {cv.n_features} standardised encoder-free image statistics, "
        f"{k}-fold stratified cross-validation, permutation test "
        f"({done} of {n_perm} permutations{', stopped early' if stopped else ''})"
    )
    return ShiftCheck(
        distinguishable=distinguishable,
        auc=observed,
        auc_ci=auc_ci,
        p_value=float(p_value),
        method=method,
        top_differences=top,
        reason=reason,
        n_permutations=done,
        **common,
    )
