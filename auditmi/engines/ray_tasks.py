"""The Ray engine's CPU tasks: image files -> hashed, decoded, downscaled pixels and statistics.

One task per block of paths reads, hashes and decodes every file of the block (one stage: the
file bytes never leave the task). It uses the local engine's functions
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


def read_decode(batch: dict[str, np.ndarray], cached: frozenset[str], max_side: int) -> dict[str, np.ndarray]:
    """CPU task: paths -> sha256, downscaled pixels (flat (3, H, W) uint8 bytes and shape), original
    size and statistics, or the skip reason; images whose sha256 is in ``cached`` are not decoded."""
    n = len(batch["i"])
    # Object arrays: a fixed-width numpy string column would truncate a longer skip reason.
    out: dict[str, Any] = {"i": batch["i"].astype(np.int64), "sha": np.array([""] * n, dtype=object),
                           "error": np.array([""] * n, dtype=object), "cached": np.zeros(n, bool), "todo": np.zeros(n, bool),
                           "h": np.zeros(n, np.int64), "w": np.zeros(n, np.int64), "ow": np.zeros(n, np.int64), "oh": np.zeros(n, np.int64),
                           "stats": np.zeros((n, len(STAT_NAMES)), np.float32), "pixels": np.array([b""] * n, dtype=object)}
    for j in range(n):
        data, sha, error = read_file(Path(batch["path"][j]))
        out["sha"][j] = sha
        if error:
            out["error"][j] = error
            continue
        item = decode_pixels(data, sha, int(batch["i"][j]), cached, max_side)
        if "error" in item:
            out["error"][j] = item["error"]
        elif item["cached"]:
            out["cached"][j] = True
        else:
            px = item["pixels"]
            out["todo"][j] = True
            out["h"][j], out["w"][j] = px.shape[0], px.shape[1]
            out["ow"][j], out["oh"][j] = item["size"]
            out["stats"][j] = item["stats"]
            out["pixels"][j] = np.ascontiguousarray(px.transpose(2, 0, 1)).tobytes()
    return out
