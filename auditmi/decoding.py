"""One image file -> what every engine needs from it: bytes and sha256, decoded and downscaled
pixels, encoder-free descriptors and view parameters, or the reason it cannot be used.

Used by the local engine's worker processes (:mod:`auditmi.pipeline`) and by the Ray engine's
decode tasks (:mod:`auditmi.engines.ray_tasks`), so both skip the same files for the same reasons
and cut the same views. Reading and decoding (:func:`read_file`, :func:`decode_pixels`) import no
torch, so a Ray worker process that only decodes starts without paying torch's import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from auditmi.descriptors import image_statistics
from auditmi.images import ImageLoadError, decode, read_and_hash

if TYPE_CHECKING:
    from auditmi.views import ViewConfig


def read_file(path: Path) -> tuple[bytes, str, str]:
    """Read and hash one file: ``(data, sha256, "")``, or ``(b"", "", skip reason)`` when it cannot be read."""
    try:
        data, sha = read_and_hash(path)
    except ImageLoadError as e:
        return b"", "", e.reason
    except Exception as e:  # a reader bug must skip one file, never stop the scan
        return b"", "", f"unexpected error while reading the image ({type(e).__name__}: {e})"
    return data, sha, ""


def decode_pixels(data: bytes, sha: str, i: int, cached: frozenset[str] | set[str], max_side: int) -> dict[str, Any]:
    """Decode and downscale one image's bytes and compute its statistics (numpy only).

    Returns a dict with ``i`` and either ``error`` (the skip reason), ``cached=True`` (its sha256
    is in ``cached``: nothing decoded), or ``pixels`` (H, W, 3) uint8, ``stats``, ``size``
    (original width, height) and ``sha``.
    """
    if sha in cached:
        return {"i": i, "sha": sha, "cached": True}
    try:
        pixels, size = decode(data, max_side)
    except ImageLoadError as e:
        return {"i": i, "error": e.reason}
    except Exception as e:  # a decoder bug must skip one file, never stop the scan
        return {"i": i, "error": f"unexpected error while reading the image ({type(e).__name__}: {e})"}
    return {"i": i, "sha": sha, "cached": False, "size": size, "stats": image_statistics(pixels, size), "pixels": pixels}


def decode_data(data: bytes, sha: str, i: int, cached: frozenset[str] | set[str], max_side: int, seed: int, cfg: ViewConfig) -> dict[str, Any]:
    """:func:`decode_pixels`, with ``pixels`` as a (3, H, W) uint8 tensor and the image's view
    parameters under ``params``."""
    import torch

    from auditmi.views import params_for_image

    item = decode_pixels(data, sha, i, cached, max_side)
    if "pixels" in item:
        pixels = item["pixels"]
        item["params"] = params_for_image(pixels.shape[0], pixels.shape[1], sha, seed, cfg)
        item["pixels"] = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).contiguous()
    return item


def decode_item(path: Path, i: int, cached: frozenset[str] | set[str], max_side: int, seed: int, cfg: ViewConfig) -> dict[str, Any]:
    """:func:`read_file` then :func:`decode_data` (read errors become ``error``)."""
    data, sha, error = read_file(path)
    if error:
        return {"i": i, "error": error}
    return decode_data(data, sha, i, cached, max_side, seed, cfg)
