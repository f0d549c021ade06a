"""One image file -> what every engine needs from it: bytes and sha256, decoded and downscaled
pixels, encoder-free descriptors and view parameters, or the reason it cannot be used.

Used by the local engine's worker processes (:mod:`auditmi.pipeline`) and by the Ray engine's
decode tasks (:mod:`auditmi.engines.ray`), so both skip the same files for the same reasons and
cut the same views.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from auditmi.descriptors import image_statistics
from auditmi.images import ImageLoadError, decode, read_and_hash
from auditmi.views import ViewConfig, params_for_image


def read_file(path: Path) -> tuple[bytes, str, str]:
    """Read and hash one file: ``(data, sha256, "")``, or ``(b"", "", skip reason)`` when it cannot be read."""
    try:
        data, sha = read_and_hash(path)
    except ImageLoadError as e:
        return b"", "", e.reason
    except Exception as e:  # a reader bug must skip one file, never stop the scan
        return b"", "", f"unexpected error while reading the image ({type(e).__name__}: {e})"
    return data, sha, ""


def decode_data(data: bytes, sha: str, i: int, cached: frozenset[str] | set[str], max_side: int, seed: int, cfg: ViewConfig) -> dict[str, Any]:
    """Decode and downscale one image's bytes, sample its view parameters and statistics.

    Returns a dict with ``i`` and either ``error`` (the skip reason), ``cached=True`` (its sha256
    is in ``cached``: nothing decoded), or ``pixels`` (3, H, W) uint8, ``params``, ``stats``,
    ``size`` (original width, height) and ``sha``. Used by every engine.
    """
    if sha in cached:
        return {"i": i, "sha": sha, "cached": True}
    try:
        pixels, size = decode(data, max_side)
    except ImageLoadError as e:
        return {"i": i, "error": e.reason}
    except Exception as e:  # a decoder bug must skip one file, never stop the scan
        return {"i": i, "error": f"unexpected error while reading the image ({type(e).__name__}: {e})"}
    h, w = pixels.shape[:2]
    return {
        "i": i,
        "sha": sha,
        "cached": False,
        "size": size,
        "stats": image_statistics(pixels, size),
        "pixels": torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).contiguous(),
        "params": params_for_image(h, w, sha, seed, cfg),
    }


def decode_item(path: Path, i: int, cached: frozenset[str] | set[str], max_side: int, seed: int, cfg: ViewConfig) -> dict[str, Any]:
    """:func:`read_file` then :func:`decode_data` (read errors become ``error``)."""
    data, sha, error = read_file(path)
    if error:
        return {"i": i, "error": error}
    return decode_data(data, sha, i, cached, max_side, seed, cfg)
