"""What an engine measures on an image under an encoder, and the one implementation of it.

Two measures, both from the same view parameters (:func:`auditmi.views.params_for_image`):

* ``features``: EncoderMI's membership features, the pairwise cosines of the image's ``n`` view
  embeddings (:mod:`auditmi.features`); what every scan, evaluation and calibration needs.
* ``signals``: the raw signal vector of :mod:`auditmi.signals` (pairwise cosines, view-to-whole
  cosines, raw embedding norms), for EncoderMI-R; the ``n`` views plus the whole image
  (:func:`auditmi.signals.whole_params`), embedded before L2 normalisation.
* ``both``: the audited encoder's pass of a scan with EncoderMI-R: the raw signals (as
  ``signals``) and the encoder-free statistics (as ``features``). The features are the raw
  vector's pairwise block, the same cosines of the same views (they differ from a ``features``
  pass only by float rounding, below 1e-6), so the audited encoder embeds each image once. Its
  rows fill both caches (:class:`PairedCache`).

Every path that turns decoded pixels into these numbers goes through this module: the local
engine's workers and main process (:mod:`auditmi.pipeline`), the Ray engine's actors
(:mod:`auditmi.engines.ray`) and in-memory callers (the shadow game's public images,
:func:`measure_pixels`). Rendering is :func:`auditmi.views.render_views`; an image's inputs are
its views followed (for signals) by the whole image, so they can be rendered in one call and
sliced per image.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from auditmi.descriptors import STAT_NAMES
from auditmi.encoders.base import Encoder
from auditmi.features import feature_config, n_features, pairwise_cosine
from auditmi.signals import SIGNAL_ALGORITHM, n_raw, pairwise_block, raw_signals, whole_params
from auditmi.views import ViewConfig, ViewParams, pad_batch, params_for_image, render_views, working_side

if TYPE_CHECKING:
    from pathlib import Path

    from auditmi.cache import FeatureCache

FEATURES, SIGNALS, BOTH = "features", "signals", "both"
MEASURES = (FEATURES, SIGNALS, BOTH)


@dataclass(frozen=True)
class Measure:
    """What is computed per image (``kind``: features, signals or both) for ``n_views`` views."""

    kind: str
    n_views: int

    def __post_init__(self) -> None:
        if self.kind not in MEASURES:
            raise ValueError(f"unknown measure {self.kind!r}; use one of {MEASURES}")

    @property
    def per_image(self) -> int:
        """Encoder inputs per image (views, plus the whole image for signals)."""
        return self.n_views + (self.kind != FEATURES)

    @property
    def width(self) -> int:
        """Length of an image's row (45 features or 66 raw signals for 10 views; ``both``: the raw signals)."""
        return n_features(self.n_views) if self.kind == FEATURES else n_raw(self.n_views)

    @property
    def n_stats(self) -> int:
        """Encoder-free image statistics kept with each row: the feature pass keeps them (the
        shift check reads them); signal rows carry none (the audited encoder's pass has them)."""
        return 0 if self.kind == SIGNALS else len(STAT_NAMES)

    @property
    def normalize(self) -> bool:
        """Whether embeddings are L2-normalised before :meth:`reduce` (signals keep the norm)."""
        return self.kind == FEATURES

    def inputs(self, views: ViewParams, height: int, width: int) -> ViewParams:
        """One image's encoder inputs: its view parameters, then (signals) the whole image."""
        if self.kind == FEATURES:
            return views
        whole = whole_params(torch.tensor([height]), torch.tensor([width]))
        return ViewParams(*(torch.cat([getattr(views, f.name), getattr(whole, f.name)]) for f in fields(ViewParams)))

    def batch_inputs(self, pixels: Sequence[torch.Tensor], views: Sequence[ViewParams]) -> ViewParams:
        """Encoder inputs of a batch of decoded (3, H, W) images, in image order."""
        return ViewParams.cat([self.inputs(v, int(p.shape[1]), int(p.shape[2])) for p, v in zip(pixels, views, strict=True)])

    def reduce(self, emb: torch.Tensor, n_images: int) -> np.ndarray:
        """(n_images * per_image, D) embeddings in input order -> float32 (n_images, width) rows."""
        e = emb.view(n_images, self.per_image, -1)
        out = pairwise_cosine(e) if self.kind == FEATURES else raw_signals(e[:, : self.n_views], e[:, self.n_views])
        return out.cpu().numpy().astype(np.float32)

    def split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """An engine's rows -> (the FeatureSet's ``features``, its ``signals``): ``both`` rows are
        raw signals, whose pairwise block is EncoderMI's features; other rows are kept as they are."""
        if self.kind != BOTH:
            return rows, None
        return np.ascontiguousarray(pairwise_block(rows, self.n_views)), rows

    def open_cache(self, root: str | Path, encoder: Encoder, view_cfg: ViewConfig, seed: int) -> FeatureCache | PairedCache:
        """The cache of this measure under ``encoder`` in the cache folder ``root``."""
        from auditmi.cache import FeatureCache

        if self.kind == BOTH:
            return PairedCache(FeatureCache(root, cache_key(encoder, view_cfg, seed)), FeatureCache(root, signal_cache_key(encoder, view_cfg, seed)),
                               self.n_views)
        return FeatureCache(root, self.cache_key(encoder, view_cfg, seed))

    def cache_key(self, encoder: Encoder, view_cfg: ViewConfig, seed: int) -> dict[str, Any]:
        """Everything that determines a cached row of this measure under ``encoder`` (``both``
        has two caches: :meth:`open_cache`)."""
        if self.kind == BOTH:
            raise ValueError("a 'both' pass fills two caches: open them with Measure.open_cache")
        key: dict[str, Any] = {"encoder": encoder.identity, "input_size": encoder.input_size, "mean": list(encoder.mean),
                               "std": list(encoder.std), "views": view_cfg.to_dict(), "seed": int(seed),
                               "max_side": working_side(encoder.input_size, view_cfg)}
        if self.kind == FEATURES:
            return {**key, "features": feature_config(view_cfg.n_views), "stats": STAT_NAMES}
        return {**key, "signals": {"algorithm": SIGNAL_ALGORITHM, "n_raw": self.width}, "features": {"n_features": self.width}, "stats": []}


def cache_key(encoder: Encoder, view_cfg: ViewConfig, seed: int) -> dict[str, Any]:
    """Everything that determines cached features (the scan's feature cache)."""
    return Measure(FEATURES, view_cfg.n_views).cache_key(encoder, view_cfg, seed)


def signal_cache_key(encoder: Encoder, view_cfg: ViewConfig, seed: int) -> dict[str, Any]:
    """Everything that determines an image's cached raw signals under ``encoder``."""
    return Measure(SIGNALS, view_cfg.n_views).cache_key(encoder, view_cfg, seed)


class PairedCache:
    """The two caches a ``both`` pass fills: the feature cache (pairwise cosines and statistics,
    the rows a ``features`` pass writes) and the signal cache (raw signals, the rows a
    ``signals`` pass writes), so later scans, evaluations and signal passes find them as usual.

    An image counts as cached when both hold it. Each batch goes to the signal cache first, then
    to the feature cache, each shard atomically; a pass killed between the two writes computes
    that batch again on resume (the extra copy in the signal cache is harmless).
    """

    def __init__(self, features: FeatureCache, signals: FeatureCache, n_views: int) -> None:
        self.features, self.signals, self.n_views = features, signals, n_views

    @property
    def read_only(self) -> bool:
        """Whether new rows cannot be saved (either folder read-only)."""
        return self.features.read_only or self.signals.read_only

    def load(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """sha256 -> (raw signals, statistics) of the images both caches hold."""
        f, s = self.features.load(), self.signals.load()
        return {sha: (s[sha][0], f[sha][1]) for sha in s.keys() & f.keys()}

    def put(self, shas: list[str], rows: np.ndarray, stats: np.ndarray) -> None:
        """Save ``both`` rows (raw signals) and their statistics in both caches."""
        self.signals.put(shas, rows, np.zeros((len(shas), 0), np.float32))
        self.features.put(shas, pairwise_block(rows, self.n_views), stats)

    def reopen(self) -> PairedCache:
        """Both caches opened afresh (see :meth:`auditmi.cache.FeatureCache.reopen`)."""
        return PairedCache(self.features.reopen(), self.signals.reopen(), self.n_views)


def check_cache(cache: FeatureCache | PairedCache | None, measure: Measure) -> None:
    """Refuse a cache whose key was made for another measure (its rows would not fit)."""
    if cache is None:
        return
    if isinstance(cache, PairedCache):
        ok = measure.kind == BOTH
    else:
        ok = measure.kind != BOTH and (cache.key.get("features") or {}).get("n_features") == measure.width
    if not ok:
        raise ValueError(f"the cache key is not one of {measure.kind} for {measure.n_views} views; build it with Measure.open_cache")


class Embedder:
    """Renders and embeds encoder inputs in chunks, halving the chunk on CUDA out-of-memory."""

    def __init__(self, encoder: Encoder, batch_size: int, normalize: bool = True) -> None:
        self.enc, self.bs, self.normalize = encoder, batch_size, normalize
        self.encode_seconds = 0.0

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Embed already-rendered inputs in chunks of the batch size."""
        out = []
        for start in range(0, x.shape[0], self.bs):
            t0 = time.perf_counter()
            out.append(self.enc.embed(x[start:start + self.bs], normalize=self.normalize))
            self.encode_seconds += time.perf_counter() - t0
        return torch.cat(out)

    def __call__(self, images: torch.Tensor, params: ViewParams) -> torch.Tensor:
        k = params.boxes.shape[0]
        out: list[torch.Tensor] = []
        start = 0
        while start < k:
            end = min(k, start + self.bs)
            sub = ViewParams(*(getattr(params, f.name)[start:end] for f in fields(ViewParams)))
            try:
                with torch.inference_mode():
                    x = render_views(images, sub, self.enc.input_size, self.enc.mean, self.enc.std)
                    t0 = time.perf_counter()
                    out.append(self.enc.embed(x, normalize=self.normalize))
                    self.encode_seconds += time.perf_counter() - t0
            except torch.cuda.OutOfMemoryError:
                if self.bs <= 8:
                    raise
                torch.cuda.empty_cache()
                self.bs //= 2
                continue
            start = end
        return torch.cat(out)


def measure_decoded(pixels: Sequence[torch.Tensor], views: Sequence[ViewParams], embedder: Embedder, measure: Measure) -> np.ndarray:
    """Rows of ``measure`` (float32, one per image) of decoded images: render their inputs on the
    encoder's device and embed them (see :class:`Embedder`). Used by every engine."""
    imgs, _ = pad_batch(list(pixels))
    if embedder.enc.device.type == "cuda":
        imgs = imgs.pin_memory().to(embedder.enc.device, non_blocking=True)
    emb = embedder(imgs, measure.batch_inputs(pixels, views))
    return measure.reduce(emb, len(pixels))


def measure_pixels(encoder: Encoder, pixels: Sequence[torch.Tensor], shas: Sequence[str], view_cfg: ViewConfig, seed: int,
                   kind: str = SIGNALS) -> np.ndarray:
    """Rows of ``kind`` of already-decoded images ((3, H, W) uint8 at the working side), in this
    process (e.g. the public images of a calibration, already in memory)."""
    m = Measure(kind, view_cfg.n_views)
    views = [params_for_image(int(p.shape[1]), int(p.shape[2]), s, seed, view_cfg) for p, s in zip(pixels, shas, strict=True)]
    return measure_decoded(pixels, views, Embedder(encoder, encoder.batch_size or 256, m.normalize), m)


def embed_whole(encoder: Encoder, pixels: Sequence[torch.Tensor], batch_size: int | None = None) -> np.ndarray:
    """Unit-norm embeddings (float32, (N, D)) of whole decoded images ((3, H, W) uint8 at the
    working side), rendered exactly as the signal pass renders the whole image (the neighbourhood
    signal, :mod:`auditmi.neighbours`). Runs in this process."""
    bs = batch_size or encoder.batch_size or 256
    emb = Embedder(encoder, bs, normalize=True)
    out = []
    for s in range(0, len(pixels), bs):
        chunk = list(pixels[s:s + bs])
        imgs, _ = pad_batch(chunk)
        hw = torch.tensor([[int(p.shape[1]), int(p.shape[2])] for p in chunk])
        out.append(emb(imgs.to(encoder.device), whole_params(hw[:, 0], hw[:, 1])).cpu().numpy().astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def pixels_chw(pixels: np.ndarray) -> torch.Tensor:
    """A decoded (H, W, 3) uint8 image (:class:`auditmi.images.LoadedImage`'s pixels) as the
    (3, H, W) tensor the renderers take."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).contiguous()


def decode_files(paths: Sequence[Any], side: int) -> list[torch.Tensor]:
    """Image files decoded at the working side ``side`` as the engines decode them, in this
    process. The files were read once already by an engine pass; one that fails now raises."""
    from auditmi.images import load_image

    return [pixels_chw(load_image(p, side).pixels) for p in paths]


def embed_whole_files(paths: Sequence[Any], encoder: Encoder, view_cfg: ViewConfig, batch_size: int | None = None) -> np.ndarray:
    """:func:`embed_whole` of image files (:func:`decode_files` at the encoder's working side)."""
    return embed_whole(encoder, decode_files(paths, working_side(encoder.input_size, view_cfg)), batch_size)
