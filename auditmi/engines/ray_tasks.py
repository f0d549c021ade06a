"""The Ray engine's CPU tasks: image files -> hashed, decoded, downscaled pixels and statistics.

One task per block of paths reads, hashes and decodes every file of the block (one stage: the
file bytes never leave the task), at the working side of each encoder of the run that still
needs the image. It uses the local engine's functions
(:func:`auditmi.decoding.read_file`, :func:`auditmi.decoding.decode_pixels`), so both engines
skip the same files for the same reasons. An unreadable or undecodable file becomes a row with a
skip reason, never an exception (Ray Data fails the whole job on the first error in user code).

This module imports no torch, directly or through the modules it uses: a Ray worker process
running these tasks starts in a fraction of a second instead of paying torch's import (about
2.5 s of CPU on the benchmark machine, for every new worker process; see benchmarks/RESULTS.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from auditmi.decoding import decode_pixels, read_file
from auditmi.descriptors import STAT_NAMES


def read_decode(batch: dict[str, np.ndarray], cached: tuple[frozenset[str], ...], sides: tuple[int, ...]) -> dict[str, np.ndarray]:
    """CPU task: paths -> sha256, original size, and per working side the downscaled pixels (flat
    (3, H, W) uint8 bytes and shape) and statistics, or the skip reason.

    ``cached[h]`` and ``sides[h]``: the sha256s already cached for the run's encoder ``h`` and the
    working side it decodes at. ``need{h}`` says which images encoder ``h`` still has to embed;
    an image is decoded once per distinct side, and only if some encoder at that side needs it.
    Columns of side ``sides[h]`` are suffixed with its index in ``sorted(set(sides))``.
    """
    n = len(batch["i"])
    distinct = sorted(set(sides))
    # Object arrays: a fixed-width numpy string column would truncate a longer skip reason.
    out: dict[str, Any] = {"i": batch["i"].astype(np.int64), "sha": np.array([""] * n, dtype=object),
                           "error": np.array([""] * n, dtype=object), "ow": np.zeros(n, np.int64), "oh": np.zeros(n, np.int64)}
    for h in range(len(sides)):
        out[f"need{h}"] = np.zeros(n, bool)
    for k in range(len(distinct)):
        out.update({f"h{k}": np.zeros(n, np.int64), f"w{k}": np.zeros(n, np.int64), f"stats{k}": np.zeros((n, len(STAT_NAMES)), np.float32),
                    f"pixels{k}": np.array([b""] * n, dtype=object)})
    for j in range(n):
        data, sha, error = read_file(Path(batch["path"][j]))
        out["sha"][j] = sha
        if error:
            out["error"][j] = error
            continue
        need = [sha not in c for c in cached]
        for k, side in enumerate(distinct):
            if not any(nd for nd, s in zip(need, sides, strict=True) if s == side):
                continue
            item = decode_pixels(data, sha, int(batch["i"][j]), frozenset(), side)
            if "error" in item:
                out["error"][j] = item["error"]
                break
            px = item["pixels"]
            out[f"h{k}"][j], out[f"w{k}"][j] = px.shape[0], px.shape[1]
            out["ow"][j], out["oh"][j] = item["size"]
            out[f"stats{k}"][j] = item["stats"]
            out[f"pixels{k}"][j] = np.ascontiguousarray(px.transpose(2, 0, 1)).tobytes()
        if not out["error"][j]:
            for h, nd in enumerate(need):
                out[f"need{h}"][j] = nd
    return out
