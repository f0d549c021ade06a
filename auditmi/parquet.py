"""Per-image results at scale: one Parquet row per scored image.

A scan of a million images cannot list every image in its JSON report (nor validate, render or
diff it). ``scan --parquet FILE`` writes every scored image's row (path, sha256, score, member
probability, decision, p-value, BH flag, membership features and encoder-free image statistics)
with pyarrow; the JSON report then lists only the highest-scoring images
(:func:`auditmi.report.build.cap_image_list`) and says so in ``images_listed``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from auditmi import __version__
from auditmi._io import atomic_write
from auditmi.errors import InputError
from auditmi.pipeline import STAT_NAMES, FeatureSet

if TYPE_CHECKING:
    from auditmi.jobs.scan import ScoredImage


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet  # noqa: F401
    except ImportError as e:
        raise InputError("--parquet needs pyarrow: pip install 'auditmi[ray]' (or pip install pyarrow).") from e
    return pa


def image_table(image_rows: Sequence[ScoredImage], fs: FeatureSet, features: dict[str, Any]) -> Any:
    """A pyarrow Table with one row per scored image (``image_rows`` aligned with ``fs.rows``;
    ``features`` is the feature configuration, recorded in the file's metadata)."""
    pa = _pyarrow()
    if len(image_rows) != fs.n:
        raise ValueError(f"{len(image_rows)} image rows for {fs.n} feature rows")
    feats = np.ascontiguousarray(fs.features, dtype=np.float32)
    cols: dict[str, Any] = {
        "path": pa.array([str(r.path) for r in image_rows], pa.string()),
        "sha256": pa.array([r.sha256 for r in image_rows], pa.string()),
        "score": pa.array([r.score for r in image_rows], pa.float64()),
        "member_probability": pa.array([r.member_probability for r in image_rows], pa.float64()),
        "flagged": pa.array([r.member for r in image_rows], pa.bool_()),
        "p_value": pa.array([r.p_value for r in image_rows], pa.float64()),
        "bh_flag": pa.array([r.bh_flag for r in image_rows], pa.bool_()),
        "width": pa.array([row.original_size[0] for row in fs.rows], pa.int32()),
        "height": pa.array([row.original_size[1] for row in fs.rows], pa.int32()),
        "features": pa.FixedSizeListArray.from_arrays(pa.array(feats.reshape(-1), pa.float32()), feats.shape[1]),
    }
    for k, name in enumerate(STAT_NAMES):
        cols[f"stat_{name}"] = pa.array(fs.stats[:, k].astype(np.float32), pa.float32())
    meta = {"auditmi_version": __version__, "features": json.dumps(features), "stats": json.dumps(list(STAT_NAMES)),
            "width_height": "original size before downscaling; 0 when the features came from the cache"}
    return pa.table(cols).replace_schema_metadata(meta)


def write_image_table(dest: str | Path, image_rows: Sequence[ScoredImage], fs: FeatureSet, features: dict[str, Any]) -> Path:
    """Write :func:`image_table` to ``dest`` with the one atomic writer (a reader never sees half a file)."""
    import pyarrow.parquet as pq

    table = image_table(image_rows, fs, features)
    return atomic_write(dest, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
