"""Encoder-free image descriptors: a short vector of simple statistics per image.

Colour, brightness, contrast, saturation, sharpness, near-black/near-white shares, size and a
grayscale flag, computed without any encoder. The pipeline records them for every image (they
are cached with the features), and :mod:`auditmi.shift` uses them to check whether the suspect
and reference sets can be told apart without the encoder (docs/method.md, "What later work
showed").
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from auditmi.errors import InputError

__all__ = ["STAT_NAMES", "STAT_DESCRIPTIONS", "image_statistics"]


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
