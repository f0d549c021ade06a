"""Tests of auditmi.shift: encoder-free statistics and the suspect-vs-reference shift check.

All images are generated (smooth random colour fields plus texture), so the tests run offline
in a few seconds. Simulation tolerances use 3 binomial standard errors.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.preprocessing import StandardScaler

from auditmi.descriptors import STAT_NAMES, image_statistics
from auditmi.errors import InputError
from auditmi.shift import ShiftCheck, shift_check

IDX = {name: i for i, name in enumerate(STAT_NAMES)}
BRIGHTNESS_STATS = {
    "mean_luminance",
    "mean_red",
    "mean_green",
    "mean_blue",
    "frac_near_black",
    "frac_near_white",
    *(f"luminance_hist_{i}" for i in range(8)),
}


def textured_image(
    rng: np.random.Generator,
    size: tuple[int, int] = (96, 96),
    *,
    brightness: int = 0,
    grayscale: bool = False,
) -> np.ndarray:
    """A random "photo-like" image: smooth colour field + random-strength texture.

    Args:
        rng: Source of randomness.
        size: ``(width, height)``.
        brightness: Levels added to every channel (then clipped to 0..255).
        grayscale: Make all three channels equal.
    """
    w, h = size
    base = rng.uniform(30, 200, size=(6, 6, 3)).astype(np.uint8)
    field = np.asarray(
        Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32
    )
    texture = rng.normal(0, rng.uniform(2, 25), size=(h, w, 1 if grayscale else 3))
    img = field + texture + brightness
    if grayscale:
        img = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def stats_of(rng: np.random.Generator, n: int, size: tuple[int, int] = (96, 96), **kw) -> np.ndarray:
    return np.stack([image_statistics(textured_image(rng, size, **kw), size) for _ in range(n)])


@pytest.fixture(scope="module")
def pool() -> np.ndarray:
    """Statistics of 240 images from one generator (one distribution)."""
    return stats_of(np.random.default_rng(123), 240)


def _json(check: ShiftCheck) -> dict:
    d = check.to_dict()
    json.loads(json.dumps(d, allow_nan=False))  # raises on NaN/inf or numpy types
    return d


# --------------------------------------------------------------------------------------
# image_statistics
# --------------------------------------------------------------------------------------


def test_statistics_of_known_images():
    red = np.zeros((50, 80, 3), np.uint8)
    red[..., 0] = 255
    v = image_statistics(red, (800, 500))
    assert v.shape == (len(STAT_NAMES),) and v.dtype == np.float64
    assert v[IDX["mean_red"]] == pytest.approx(1.0) and v[IDX["mean_green"]] == 0.0
    assert v[IDX["std_red"]] == pytest.approx(0.0, abs=1e-6)
    assert v[IDX["mean_saturation"]] == pytest.approx(1.0)
    assert v[IDX["mean_luminance"]] == pytest.approx(0.299, abs=1e-4)
    assert v[IDX["is_grayscale"]] == 0.0
    assert v[IDX["mean_gradient"]] == pytest.approx(0.0, abs=1e-6)
    # Size statistics come from original_size, not from the (downscaled) pixels.
    assert v[IDX["log_width"]] == pytest.approx(math.log(800))
    assert v[IDX["log_height"]] == pytest.approx(math.log(500))
    assert v[IDX["aspect_ratio"]] == pytest.approx(1.6)

    gray = np.full((40, 40, 3), 128, np.uint8)
    g = image_statistics(gray, (40, 40))
    assert g[IDX["is_grayscale"]] == 1.0
    assert g[IDX["mean_saturation"]] == 0.0 and g[IDX["colourfulness"]] == pytest.approx(0.0, abs=1e-6)
    assert g[IDX["luminance_hist_4"]] == 1.0  # 128/255 falls in the 5th of 8 bins

    black = np.zeros((30, 30, 3), np.uint8)
    white = np.full((30, 30, 3), 255, np.uint8)
    assert image_statistics(black, (30, 30))[IDX["frac_near_black"]] == 1.0
    assert image_statistics(white, (30, 30))[IDX["frac_near_white"]] == 1.0


def test_statistics_of_random_images_are_finite_and_consistent():
    rng = np.random.default_rng(0)
    for size in [(1, 1), (7, 300), (96, 96), (640, 480)]:
        v = image_statistics(textured_image(rng, size), size)
        assert np.all(np.isfinite(v))
        hist = v[IDX["luminance_hist_0"] : IDX["luminance_hist_7"] + 1]
        assert hist.sum() == pytest.approx(1.0)
    # A 2-D grayscale array is accepted and flagged grayscale.
    v = image_statistics(np.full((20, 30), 77, np.uint8), (30, 20))
    assert v[IDX["is_grayscale"]] == 1.0


def test_gradient_does_not_depend_on_resolution():
    # A 900 px photo and its 300 px thumbnail should look equally sharp; their raw pixel
    # gradients differ ~3x, so this checks the fixed-size resize.
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 255, size=(60, 60, 3)).astype(np.uint8)
    large = np.asarray(Image.fromarray(base).resize((900, 900), Image.Resampling.BICUBIC))
    small = np.asarray(Image.fromarray(large).resize((300, 300), Image.Resampling.BOX))
    gl = image_statistics(large, (900, 900))[IDX["mean_gradient"]]
    gs = image_statistics(small, (300, 300))[IDX["mean_gradient"]]
    assert gs == pytest.approx(gl, rel=0.1)

    def raw(a: np.ndarray) -> float:
        return float(np.abs(np.diff(a.astype(np.float32).mean(axis=2), axis=1)).mean())

    assert raw(small) > 2 * raw(large)  # what a resolution-dependent statistic would see


def test_grayscale_flag_tolerates_jpeg_like_chroma_noise():
    rng = np.random.default_rng(2)
    g = textured_image(rng, (120, 120), grayscale=True).astype(np.int16)
    noisy = np.clip(g + rng.integers(-2, 3, size=g.shape), 0, 255).astype(np.uint8)
    assert image_statistics(noisy, (120, 120))[IDX["is_grayscale"]] == 1.0
    assert image_statistics(textured_image(rng, (120, 120)), (120, 120))[IDX["is_grayscale"]] == 0.0


def test_image_statistics_rejects_bad_input():
    ok = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(InputError, match="uint8"):
        image_statistics(ok.astype(np.float32), (10, 10))
    with pytest.raises(InputError, match="shape"):
        image_statistics(np.zeros((10, 10, 4), np.uint8), (10, 10))
    with pytest.raises(InputError, match="original_size"):
        image_statistics(ok, (0, 10))
    with pytest.raises(InputError, match="original_size"):
        image_statistics(ok, "big")  # type: ignore[arg-type]


def test_image_statistics_is_fast():
    px = np.random.default_rng(3).integers(0, 256, (448, 448, 3), dtype=np.uint8)
    image_statistics(px, (448, 448))
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(20):
            image_statistics(px, (448, 448))
        best = min(best, (time.perf_counter() - t) / 20)
    # ~1.5 ms on one idle core; generous bound so a busy test machine does not fail it.
    assert best < 0.010


# --------------------------------------------------------------------------------------
# shift_check
# --------------------------------------------------------------------------------------


def test_same_distribution_is_not_distinguishable():
    rng = np.random.default_rng(20)
    check = shift_check(stats_of(rng, 60), stats_of(rng, 60))
    assert not check.distinguishable
    assert check.p_value >= check.alpha
    assert check.auc < 0.65
    assert check.reason.startswith("no encoder-free difference detected")
    assert (check.n_suspects, check.n_reference) == (60, 60)
    _json(check)


def test_null_false_alarm_rate_is_at_most_alpha(pool):
    # Random disjoint splits of one pool are exchangeable, so P(p < alpha) <= alpha.
    # threshold_auc=0.5 tests the permutation p-value alone (the AUC bar only removes alarms).
    rng = np.random.default_rng(11)
    reps, alpha = 50, 0.1
    alarms = 0
    for r in range(reps):
        idx = rng.permutation(pool.shape[0])[:40]
        check = shift_check(
            pool[idx[:20]], pool[idx[20:]], alpha=alpha, threshold_auc=0.5, seed=r, n_permutations=39
        )
        alarms += check.distinguishable
        assert 0 < check.p_value <= 1
    assert alarms / reps <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps)


def test_brightness_shift_is_distinguishable():
    rng = np.random.default_rng(12)
    check = shift_check(stats_of(rng, 40), stats_of(rng, 40, brightness=40))
    assert check.distinguishable
    assert check.auc >= 0.9 and check.p_value < 0.01
    assert check.auc_ci is not None and check.auc_ci[0] <= check.auc <= check.auc_ci[1]
    top = [t["statistic"] for t in check.top_differences]
    assert BRIGHTNESS_STATS & set(top), top
    lum = next((t for t in check.top_differences if t["statistic"] == "mean_luminance"), None)
    if lum is not None:  # suspects are darker than the brightened reference
        assert lum["standardised_difference"] < 0
        assert lum["reference_mean"] - lum["suspect_mean"] == pytest.approx(40 / 255, abs=0.03)
    assert "distinguishable without the encoder" in check.reason
    assert "not from training" in check.reason
    d = _json(check)
    assert d["distinguishable"] is True and len(d["top_differences"]) == 3


def test_grayscale_reference_is_distinguishable():
    rng = np.random.default_rng(13)
    check = shift_check(stats_of(rng, 30), stats_of(rng, 30, grayscale=True))
    assert check.distinguishable
    top = {t["statistic"] for t in check.top_differences}
    assert top & {"is_grayscale", "mean_saturation", "colourfulness"}, top
    _json(check)


def test_different_image_sizes_are_distinguishable():
    rng = np.random.default_rng(14)
    check = shift_check(stats_of(rng, 30, (96, 96)), stats_of(rng, 30, (160, 120)))
    assert check.distinguishable
    top = {t["statistic"] for t in check.top_differences}
    assert top & {"log_width", "log_height", "aspect_ratio"}, top
    assert "image size" in check.reason or "aspect ratio" in check.reason


def test_too_few_images():
    rng = np.random.default_rng(15)
    check = shift_check(stats_of(rng, 4), stats_of(rng, 50, brightness=80))
    assert not check.distinguishable
    assert check.reason == "too few images for a shift check (need >= 5 per set)"
    assert math.isnan(check.auc)
    d = _json(check)
    assert d["auc"] is None and d["p_value"] is None and d["auc_ci"] is None
    empty = shift_check(np.zeros((0, len(STAT_NAMES))), stats_of(rng, 10))
    assert not empty.distinguishable and empty.n_suspects == 0


def test_tiny_significant_difference_on_huge_sets_does_not_block():
    # 2000 vs 2000 with a 0.15 sd shift in one statistic: significant, but AUC ~0.54 is far
    # too weak to explain a membership signal, so it must not make the audit inconclusive.
    rng = np.random.default_rng(16)
    a = rng.normal(size=(2000, 3))
    b = rng.normal(size=(2000, 3))
    b[:, 0] += 0.15
    check = shift_check(a, b, alpha=0.05, n_permutations=40)
    assert check.p_value < 0.05 and check.auc < 0.6
    assert not check.distinguishable
    assert "below the AUC 0.6" in check.reason


def test_auc_is_the_sklearn_cross_validated_logistic_regression_auc(pool):
    # The reported AUC is that of scikit-learn's LogisticRegression (C=1) on standardised
    # statistics with the same stratified folds; our batched Newton fit must agree.
    xs, xr = pool[:50], pool[50:110].copy()
    xr[:, IDX["mean_luminance"]] += 0.02  # a mild shift, so the fit is not trivial
    check = shift_check(xs, xr, seed=7, n_permutations=100)
    x = np.r_[xs, xr]
    y = np.r_[np.ones(50), np.zeros(60)]
    keep = x.std(axis=0) > 1e-12 * (1 + np.abs(x.mean(axis=0)))
    z = StandardScaler().fit_transform(x[:, keep])
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=7)
    scores = cross_val_predict(
        LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000), z, y, cv=folds, method="decision_function"
    )
    assert check.auc == pytest.approx(roc_auc_score(y, scores), abs=1e-6)


def test_reproducible_and_early_stopping_keeps_decision(pool):
    a = shift_check(pool[:30], pool[30:60], seed=3)
    b = shift_check(pool[:30], pool[30:60], seed=3)
    assert a == b
    # A clearly null AUC stops early, without changing the outcome.
    assert a.n_permutations <= 200 and not a.distinguishable
    if a.n_permutations < 200:
        assert a.p_value >= a.alpha and "stopped early" in a.method


def test_shift_check_rejects_bad_input(pool):
    with pytest.raises(InputError, match="statistics per image"):
        shift_check(pool[:10], pool[10:20, :5])
    bad = pool[:10].copy()
    bad[2, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        shift_check(bad, pool[10:20])
    with pytest.raises(InputError, match="2-D"):
        shift_check(pool[0], pool[10:20])
    with pytest.raises(InputError, match="permutations"):
        shift_check(pool[:10], pool[10:20], alpha=0.01, n_permutations=50)
    with pytest.raises(InputError, match="alpha"):
        shift_check(pool[:10], pool[10:20], alpha=1.5)
    with pytest.raises(InputError, match="threshold_auc"):
        shift_check(pool[:10], pool[10:20], threshold_auc=0.3)
