"""Thumbnails of scanned images, as ``data:`` URIs the self-contained HTML page embeds."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from auditmi.errors import AuditmiError, InputError


def thumbnail_data_uri(path: str | Path, size: int = 96) -> str | None:
    """A small PNG thumbnail of an image file, as a ``data:`` URI for embedding in HTML.

    The image goes through :func:`auditmi.images.load_image` (same decoding, EXIF orientation and
    decompression-bomb protection as the scan) and is shrunk to fit a ``size`` x ``size`` box,
    keeping its aspect ratio.

    Returns:
        ``"data:image/png;base64,..."``, or None when the file cannot be read or decoded (it may
        have been moved since the scan).

    Raises:
        InputError: ``size`` is not a positive whole number.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InputError(f"thumbnail size must be a positive whole number of pixels, got {size!r}.")
    from PIL import Image

    from auditmi.images import load_image

    try:
        loaded = load_image(Path(path), max_side=int(size))
        im = Image.fromarray(loaded.pixels)
        # max_side bounds the *shorter* side; a panorama also needs its longer side bounded.
        im.thumbnail((int(size), int(size)), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
    except (AuditmiError, OSError, ValueError, MemoryError):
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
