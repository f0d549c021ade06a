"""Pixel-level conversions behind :func:`auditmi.images.decode`: EXIF orientation, any Pillow
mode to 8-bit RGB (high bit depths rescaled, not clipped), antialiased downscaling.

The RGB conversion deliberately mirrors ``PIL.Image.convert("RGB")``, which is what torchvision's
default loader (``torchvision.datasets.folder.pil_loader``) does: a membership audit compares the
encoder's behaviour on the owner's images with its behaviour on images it was trained on, so the
pixels we feed it should be the pixels a typical training pipeline saw. The one exception is
high-bit-depth modes (``I``, ``I;16*``, ``F``), where ``convert`` *clips* to 0..255 (a 16-bit
photo becomes almost entirely white); those are rescaled instead.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["EXIF_ORIENTATION_TAG", "ORIENTATION_TRANSPOSE", "UnsupportedMode", "downscale", "exif_orientation", "to_rgb"]


class UnsupportedMode(ValueError):
    """Pillow cannot convert this pixel mode to RGB (the decoder turns it into a skip reason)."""

# EXIF "Orientation" tag (0x0112) -> the transpose that displays the image upright; the same table
# as PIL.ImageOps.exif_transpose.
EXIF_ORIENTATION_TAG = 0x0112
ORIENTATION_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def exif_orientation(im: Image.Image) -> int:
    """EXIF orientation 1..8, or 1 when absent or unreadable (a broken EXIF block is not fatal)."""
    try:
        value = im.getexif().get(EXIF_ORIENTATION_TAG, 1)
        return int(value)
    except Exception:  # noqa: BLE001 - malformed EXIF: show the image as stored
        return 1


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    gray = np.ascontiguousarray(gray, dtype=np.uint8)
    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))  # (H, W, 3) uint8: RGB


def _minmax(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert a loaded image of any mode to an 8-bit RGB image."""
    mode = im.mode
    if mode == "RGB":
        return im.copy()
    if mode.startswith("I;16"):
        # 16-bit grayscale: 65535 -> 255. np.asarray honours the byte order (I;16B is big-endian).
        values = np.asarray(im).astype(np.float64)
        return _gray_to_rgb(np.rint(values / 257.0))
    if mode == "I":
        values = np.asarray(im).astype(np.float64)
        lo, hi = values.min(), values.max()
        if lo >= 0 and hi <= 255:
            return _gray_to_rgb(values)
        if lo >= 0 and hi <= 65535:  # 16-bit data in a 32-bit container (PGM, some TIFFs)
            return _gray_to_rgb(np.rint(values / 257.0))
        return _gray_to_rgb(_minmax(values))
    if mode == "F":
        values = np.nan_to_num(np.asarray(im).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = values.min(), values.max()
        if lo >= 0 and hi <= 1.0:
            return _gray_to_rgb(np.rint(values * 255.0))
        if lo >= 0 and hi <= 255.0:
            return _gray_to_rgb(np.rint(values))
        return _gray_to_rgb(_minmax(values))
    # Everything else (1, L, LA, P, PA, RGBA, RGBX, CMYK, YCbCr, HSV, ...): exactly what
    # torchvision's pil_loader does, so pixels match what a training pipeline saw.
    try:
        return im.convert("RGB")
    except ValueError as exc:
        raise UnsupportedMode(mode) from exc


def downscale(im: Image.Image, max_side: int) -> Image.Image:
    """Shrink so the shorter side is ``max_side`` (never enlarge), keeping the aspect ratio."""
    width, height = im.size
    short = min(width, height)
    if short <= max_side:
        return im
    scale = max_side / short
    if width <= height:
        size = (max_side, max(1, round(height * scale)))
    else:
        size = (max(1, round(width * scale)), max_side)
    # BICUBIC in Pillow widens its kernel when shrinking, i.e. it is antialiased.
    return im.resize(size, Image.Resampling.BICUBIC)
