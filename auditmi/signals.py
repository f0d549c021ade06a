"""Black-box membership signals of one image under one encoder, from its view embeddings.

Pure functions (no I/O, no encoder): the caller embeds an image's ``n`` augmented views and the
whole image (un-augmented, resized to the encoder's input size) and passes the RAW embeddings
(before L2 normalisation). Per image this module keeps a fixed-length vector of

* the ``n(n-1)/2`` pairwise cosines of the views (EncoderMI's features),
* the ``n`` cosines of each view to the whole image (part-versus-whole alignment),
* the ``n`` raw embedding norms of the views and the raw norm of the whole image (LpLA: the
  cosine throws the norm away, so it is a free extra signal where the backend exposes it),

and derives summary statistics from it (:func:`summaries`). The raw vector is what the feature
cache stores, so new summaries never need the encoder again.

The engines compute raw signals (``what="signals"``, :mod:`auditmi.measures`): each image's
views are drawn from (seed, image content) exactly as for EncoderMI's features
(:func:`auditmi.views.params_for_image` on the image decoded at the same working side) and
rendered at the encoder's own input size, so the audited encoder and every shadow see the same
view parameters. The whole image goes through the same resampler with a full-image box
(:func:`whole_params`) and no augmentation. Embeddings are taken before the encoder's L2
normalisation, so the norm survives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from auditmi.encoders.base import Encoder
from auditmi.images import Skipped
from auditmi.views import ViewConfig, ViewParams

ProgressFn = Callable[[int, int], None]

SIGNAL_ALGORITHM = "auditmi-signals-v1"

#: Summary statistics of each image, in this order (see :func:`summaries`).
SUMMARY_NAMES: tuple[str, ...] = (
    "pair_mean", "pair_median", "pair_min", "pair_std",
    "whole_mean", "whole_median", "whole_min", "whole_std",
    "lognorm_view_mean", "lognorm_whole",
    "pair_logit_mean", "whole_logit_mean",
)

#: Signals that depend on the reference set as well as on the image (:mod:`auditmi.neighbours`).
NEIGHBOUR_NAMES: tuple[str, ...] = ("nn_ref",)

#: Every signal EncoderMI-R can calibrate: an image's summaries, then its neighbourhood signal.
SCORE_SIGNALS: tuple[str, ...] = SUMMARY_NAMES + NEIGHBOUR_NAMES


def layout(n_views: int) -> dict[str, slice]:
    """Where each block sits in an image's raw signal vector."""
    p = n_views * (n_views - 1) // 2
    return {
        "pair": slice(0, p),
        "whole": slice(p, p + n_views),
        "norm_view": slice(p + n_views, p + 2 * n_views),
        "norm_whole": slice(p + 2 * n_views, p + 2 * n_views + 1),
    }


def n_raw(n_views: int) -> int:
    """Length of an image's raw signal vector (66 for 10 views)."""
    return n_views * (n_views - 1) // 2 + 2 * n_views + 1


def raw_signals(views: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """Raw signal vectors of N images.

    Args:
        views: (N, n, D) raw view embeddings (not normalised).
        whole: (N, D) raw embeddings of the whole images.

    Returns:
        float32 (N, :func:`n_raw`) tensor: pairwise cosines (strict upper triangle, row-major),
        view-to-whole cosines, view norms, whole-image norm.
    """
    v = views.float()
    w = whole.float()
    n = v.shape[1]
    vn = torch.nn.functional.normalize(v, dim=-1)
    wn = torch.nn.functional.normalize(w, dim=-1)
    iu = torch.triu_indices(n, n, offset=1, device=v.device)
    pair = (vn @ vn.transpose(1, 2))[:, iu[0], iu[1]]
    to_whole = (vn * wn[:, None, :]).sum(-1)
    return torch.cat([pair, to_whole, v.norm(dim=-1), w.norm(dim=-1, keepdim=True)], dim=1)


def summaries(raw: np.ndarray, n_views: int) -> np.ndarray:
    """(N, len(SUMMARY_NAMES)) summary statistics of raw signal vectors (float64).

    Norms enter as logarithms: the difficulty model is linear, and a log makes an encoder-wide
    scale factor an additive offset. The last two are the mean of ``-log(1 - cos)`` of the
    pairwise and view-to-whole cosines.
    """
    r = np.asarray(raw, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] != n_raw(n_views):
        raise ValueError(f"raw signals must be (N, {n_raw(n_views)}) for {n_views} views, got {r.shape}")
    lay = layout(n_views)
    out = []
    for key in ("pair", "whole"):
        b = r[:, lay[key]]
        out += [b.mean(1), np.median(b, 1), b.min(1), b.std(1)]
    eps = 1e-12
    out.append(np.log(r[:, lay["norm_view"]] + eps).mean(1))
    out.append(np.log(r[:, lay["norm_whole"]][:, 0] + eps))
    # Alignments crowd just below 1, where a linear model compresses the differences that matter;
    # -log(1 - cos) spreads them out (a candidate for the shadow game, which picks what works).
    for key in ("pair", "whole"):
        out.append(-np.log(np.clip(1.0 - r[:, lay[key]], 1e-6, None)).mean(1))
    return np.stack(out, axis=1)


def pairwise_block(raw: np.ndarray, n_views: int) -> np.ndarray:
    """The EncoderMI features (pairwise cosines) inside raw signal vectors."""
    return np.asarray(raw)[:, layout(n_views)["pair"]]

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


def compute_signals(paths: Sequence[Path], encoder: Encoder, view_cfg: ViewConfig, seed: int = 0,
                    progress: ProgressFn | None = None, num_workers: int | None = None) -> SignalSet:
    """Raw signals of every readable image in ``paths`` (unreadable files become ``skipped``),
    without a cache: the local engine with ``what="signals"`` (:mod:`auditmi.measures`)."""
    from auditmi.pipeline import compute_features

    fs = compute_features(paths, encoder, view_cfg, seed=seed, num_workers=num_workers, progress=progress, what="signals")
    return SignalSet([r.path for r in fs.rows], [r.sha256 for r in fs.rows], fs.features, fs.skipped)
