"""Images -> raw membership signals (:mod:`auditmi.signals`) under one encoder.

Each image's views are drawn from (seed, image content) exactly as the scan pipeline draws them
(:func:`auditmi.views.params_for_image` on the image decoded at the same working side), and
rendered at the encoder's own input size; so the audited encoder and every shadow see the same
view parameters. The whole image is rendered through the same resampler with a full-image box
and no augmentation. Embeddings are taken before the encoder's L2 normalisation, so the raw norm
survives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from auditmi.encoders.base import Encoder
from auditmi.images import ImageLoadError, Skipped, decode, read_and_hash
from auditmi.signals import n_raw, raw_signals
from auditmi.views import (
    ViewConfig,
    ViewParams,
    pad_batch,
    params_for_image,
    render_views,
    working_side,
)

ProgressFn = Callable[[int, int], None]


@dataclass
class SignalSet:
    """Raw signal vectors of a set of images, aligned with ``paths`` and ``sha256``."""

    paths: list[Path]
    sha256: list[str]
    raw: np.ndarray  # (N, n_raw(n_views)) float32
    skipped: list[Skipped]


def whole_params(heights: torch.Tensor, widths: torch.Tensor) -> ViewParams:
    """One un-augmented 'view' per image: the full image, resized by the view resampler."""
    k = heights.shape[0]
    z = torch.zeros(k)
    boxes = torch.stack([z, z, widths.float(), heights.float()], dim=1)
    return ViewParams(boxes=boxes, flip=torch.zeros(k, dtype=torch.bool), jitter_on=torch.zeros(k, dtype=torch.bool),
                      factors=torch.ones(k, 4), order=torch.arange(4).repeat(k, 1), gray=torch.zeros(k, dtype=torch.bool),
                      source=torch.arange(k))


@torch.inference_mode()
def embed_raw(encoder: Encoder, x: torch.Tensor) -> torch.Tensor:
    """Embeddings of normalised (B, 3, S, S) images BEFORE L2 normalisation (float32, (B, D))."""
    x = x.to(encoder.device)
    dt = encoder.autocast_dtype
    ctx = torch.autocast(encoder.device.type, dtype=dt) if dt is not None else contextlib.nullcontext()
    with ctx:
        out = encoder.forward(x)
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.float().flatten(1)


def signals_of_pixels(encoder: Encoder, pixels: Sequence[torch.Tensor], shas: Sequence[str], view_cfg: ViewConfig, seed: int) -> np.ndarray:
    """Raw signals of already-decoded images ((3, H, W) uint8 at the working side)."""
    imgs, sizes = pad_batch(list(pixels))
    params = ViewParams.cat([params_for_image(int(p.shape[1]), int(p.shape[2]), s, seed, view_cfg) for p, s in zip(pixels, shas)])
    size, mean, std = encoder.input_size, encoder.mean, encoder.std
    with torch.inference_mode():
        views = render_views(imgs, params, size, mean, std)
        whole = render_views(imgs, whole_params(sizes[:, 0], sizes[:, 1]), size, mean, std)
        ev = embed_raw(encoder, views).view(len(pixels), view_cfg.n_views, -1)
        ew = embed_raw(encoder, whole)
        return raw_signals(ev, ew).cpu().numpy().astype(np.float32)


def compute_signals(paths: Sequence[Path], encoder: Encoder, view_cfg: ViewConfig, seed: int = 0,
                    images_per_batch: int = 32, progress: ProgressFn | None = None) -> SignalSet:
    """Raw signals of every readable image in ``paths`` (unreadable files become ``skipped``)."""
    side = working_side(encoder.input_size, view_cfg)
    ok_paths: list[Path] = []
    shas: list[str] = []
    out: list[np.ndarray] = []
    skipped: list[Skipped] = []
    buf: list[tuple[Path, str, torch.Tensor]] = []

    def flush() -> None:
        if buf:
            out.append(signals_of_pixels(encoder, [b[2] for b in buf], [b[1] for b in buf], view_cfg, seed))
            ok_paths.extend(b[0] for b in buf)
            shas.extend(b[1] for b in buf)
            buf.clear()

    for i, p in enumerate(paths):
        try:
            data, sha = read_and_hash(Path(p))
            pix, _ = decode(data, side)
        except ImageLoadError as e:
            skipped.append(Skipped(Path(p), e.reason))
            continue
        buf.append((Path(p), sha, torch.from_numpy(np.ascontiguousarray(pix)).permute(2, 0, 1).contiguous()))
        if len(buf) >= images_per_batch:
            flush()
        if progress is not None:
            progress(i + 1, len(paths))
    flush()
    raw = np.concatenate(out) if out else np.zeros((0, n_raw(view_cfg.n_views)), np.float32)
    return SignalSet(ok_paths, shas, raw, skipped)
