"""What the three jobs share: progress callbacks, image discovery, feature extraction, provenance."""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auditmi import __version__
from auditmi.cache import FeatureCache
from auditmi.discovery import Discovery, discover
from auditmi.encoders import Encoder
from auditmi.engines import compute_features
from auditmi.errors import InputError
from auditmi.pipeline import FeatureSet
from auditmi.views import ViewConfig

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): stages are 'suspect', 'reference', 'members', 'non-members', 'train'."""


def environment() -> dict[str, Any]:
    """Versions that make a result reproducible."""
    env = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
           "numpy": np.__version__, "auditmi": __version__, "cuda": torch.version.cuda if torch.cuda.is_available() else None}
    try:
        # The installed distribution's version, without importing open_clip (about a second of
        # start-up, plus timm) for audits of local or TorchScript encoders that never use it.
        from importlib.metadata import version

        env["open_clip"] = version("open_clip_torch")
    except Exception:  # pragma: no cover
        pass
    return env


def discover_images(paths: Sequence[str | Path], what: str) -> list[Path]:
    """Image files under ``paths``; an :class:`InputError` naming ``what`` when there is none."""
    return discover_set(paths, what).images


def discover_set(paths: Sequence[str | Path], what: str) -> Discovery:
    """:func:`discover`, refusing a set without any image file (saying what was left out)."""
    d = discover(paths)
    if not d.images:
        left = [f"{n} {k}" for k, n in d.ignored_counts().items()] + [f"{len(d.unreadable)} unreadable folders"] * bool(d.unreadable)
        extra = f" (left out: {', '.join(left)})" if left else ""
        raise InputError(
            f"no image files found in the {what} path(s) {', '.join(map(str, paths))}{extra}. "
            "Supported: jpg, jpeg, png, webp, bmp, gif, tif, tiff."
        )
    return d


def features(paths: list[Path], enc: Encoder, cfg: ViewConfig, seed: int, batch_size: int | None, cache: FeatureCache | None,
             workers: int | None, progress: Progress | None, stage: str, engine: str = "local", device: str = "auto") -> FeatureSet:
    """Membership features of ``paths`` computed by ``engine`` (local or ray), reporting progress under ``stage``."""
    cb = (lambda d, t: progress(stage, d, t)) if progress else None
    return compute_features(paths, enc, cfg, seed=seed, batch_size=batch_size, cache=cache, num_workers=workers, progress=cb,
                            engine=engine, device=device)


def require_usable(fs: FeatureSet, what: str) -> None:
    """Refuse a set in which no image could be used, quoting the first reasons."""
    if fs.n == 0:
        reasons = "; ".join(f"{s.path.name}: {s.reason}" for s in fs.skipped[:5])
        raise InputError(f"none of the {what} images could be used ({len(fs.skipped)} skipped: {reasons}).")
