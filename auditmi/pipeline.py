"""The local engine: images -> membership features (or EncoderMI-R's raw signals, ``what``; see
:mod:`auditmi.measures`), keeping the encoder busy.

On a GPU, decoding (and hashing, view-parameter sampling, encoder-free statistics) runs in
DataLoader worker processes with pinned memory, and view rendering and encoding run batched on
the device under ``torch.inference_mode`` (mixed precision and channels_last, see
:class:`auditmi.encoders.Encoder`).

On a CPU the encoder and the view rendering compete for the same cores, so the work is split by
images instead: each forked worker process decodes a chunk of images, renders their views and
embeds them with one thread, and the main process only collects features. Two single-threaded
processes keep two cores busier than one process with two threads while another renders views
(see benchmarks/RESULTS.md). Features of already-seen images come from the
:class:`~auditmi.cache.FeatureCache`; new ones are written to it batch by batch, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auditmi._paths import WORKER_MEMORY, cap_workers, check_batch_size, check_workers
from auditmi.cache import FeatureCache
from auditmi.decoding import decode_item
from auditmi.descriptors import STAT_NAMES
from auditmi.encoders.base import Encoder
from auditmi.images import Skipped
from auditmi.measures import FEATURES, Embedder, Measure, PairedCache, cache_key, check_cache, measure_decoded
from auditmi.views import ViewConfig, pad_batch, render_views, working_side

__all__ = ["STAT_NAMES", "Embedder", "FeatureSet", "ImageRow", "assemble", "assemble_sets", "cache_key", "compute_features",
           "compute_sets", "default_batch_size", "default_workers"]

ProgressFn = Callable[[int, int], None]


@dataclass
class ImageRow:
    """One usable image: where it is and what it contains."""

    path: Path
    sha256: str
    original_size: tuple[int, int]


# Start of PyTorch's DataLoader warning about more workers than cores (a regex for filterwarnings).
_TOO_MANY_WORKERS = r"This DataLoader will create \d+ worker processes in total"


@dataclass
class FeatureSet:
    """Features (or, for ``what="signals"``, raw signals) of a set of images, aligned with ``rows``.

    For ``what="both"``, ``features`` are EncoderMI's features and ``signals`` the raw signals
    they were taken from (:mod:`auditmi.measures`); otherwise ``signals`` is None.
    """

    rows: list[ImageRow]
    features: np.ndarray  # (N, F) float32: Measure.width columns (both: the pairwise block)
    stats: np.ndarray  # (N, S) encoder-free image statistics (shift check)
    skipped: list[Skipped]
    duplicates: list[list[Path]]
    n_from_cache: int = 0
    timing: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. why fewer workers ran than were asked for
    signals: np.ndarray | None = None  # (N, n_raw) float32 raw signals of a ``both`` pass

    @property
    def n(self) -> int:
        return len(self.rows)

    def subset(self, keep: np.ndarray) -> FeatureSet:
        """The rows where ``keep`` is True (skipped files and duplicates unchanged)."""
        return self.take(np.flatnonzero(keep))

    def take(self, idx: Sequence[int] | np.ndarray) -> FeatureSet:
        """The rows at ``idx``, in that order (skipped files, duplicates and timing unchanged)."""
        ix = np.asarray(idx, dtype=np.int64)
        return replace(self, rows=[self.rows[i] for i in ix], features=self.features[ix], stats=self.stats[ix],
                       signals=None if self.signals is None else self.signals[ix])


class _Decode(torch.utils.data.Dataset):
    """Worker-side work: read, hash, decode, downscale, sample view parameters, statistics."""

    def __init__(self, paths: Sequence[Path], cached: frozenset[str], max_side: int, seed: int, cfg: ViewConfig) -> None:
        self.paths, self.cached, self.max_side, self.seed, self.cfg = list(paths), cached, max_side, seed, cfg

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return decode_item(self.paths[i], i, self.cached, self.max_side, self.seed, self.cfg)


class _RenderCollate:
    """Worker-side batching: render the encoder inputs of a chunk of images in one go, and on the
    CPU fast path also embed them and reduce them to the measure's rows.

    Views of an image do not depend on the other images of its batch (see views.pad_batch), so
    rendering a chunk here gives exactly the views the main-process path would; batching the
    ~20 tensor ops per render amortises their fixed cost over the chunk.
    """

    def __init__(self, render: tuple[int, tuple[float, ...], tuple[float, ...]] | None, measure: Measure,
                 embedder: Embedder | None = None) -> None:
        self.render, self.measure, self.embedder = render, measure, embedder

    def __call__(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        todo = [it for it in items if "pixels" in it]
        if self.render is None or not todo:
            return items
        with torch.inference_mode():
            pixels = [it["pixels"] for it in todo]
            imgs, _ = pad_batch(pixels)
            views = render_views(imgs, self.measure.batch_inputs(pixels, [it["params"] for it in todo]), *self.render)
            if self.embedder is None:
                k = self.measure.per_image
                for j, it in enumerate(todo):
                    del it["pixels"], it["params"]
                    it["views"] = views[j * k : (j + 1) * k].clone()
                return items
            before = self.embedder.encode_seconds
            feats = self.measure.reduce(self.embedder.encode(views), len(todo))
            enc_s = self.embedder.encode_seconds - before
        for j, it in enumerate(todo):
            # Only numpy arrays go back: every torch tensor sent between processes costs a
            # shared-memory segment and a file descriptor.
            del it["pixels"], it["params"]
            it["feats"] = feats[j]
            it["encode_seconds"] = enc_s / len(todo)
        return items


def _fork_available() -> bool:
    """Workers may be forked with the encoder in memory: Linux only (macOS frameworks are not
    fork-safe, and Windows has no fork); elsewhere the workers only decode and render."""
    import multiprocessing as mp
    import sys

    return sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()


def default_batch_size(encoder: Encoder, device_type: str | None = None) -> int:
    """Views per encoder pass: large on GPU (halved automatically on out-of-memory), modest on CPU.

    ``device_type`` (cpu or cuda): where the encoder will run, when not on ``encoder.device``."""
    if (device_type or encoder.device.type) == "cuda":
        return 1024 if encoder.input_size <= 64 else 512
    return 256 if encoder.input_size <= 64 else 40


def default_workers(device: torch.device | str = "cuda") -> int:
    """Worker processes.

    GPU: decoding workers, leaving one core to the main process. CPU on Linux: one
    single-threaded render-and-embed worker per core (the main process only collects); CPU
    elsewhere: decode-and-render workers, leaving one core to the encoder. None on one core.
    """
    n = os.cpu_count() or 1
    if n < 2:
        return 0
    return min(32, n) if (torch.device(device).type == "cpu" and _fork_available()) else min(8, n - 1)


def worker_memory(encoder: Encoder, batch_size: int) -> int:
    """Rough memory of one worker: a base amount plus its rendered views and their activations
    (about 8 float copies of a batch of inputs; a small encoder's weights are shared by fork)."""
    return WORKER_MEMORY + batch_size * 3 * encoder.input_size**2 * 4 * 8


def compute_features(
    paths: Sequence[Path],
    encoder: Encoder,
    view_cfg: ViewConfig,
    seed: int = 0,
    batch_size: int | None = None,
    cache: FeatureCache | PairedCache | None = None,
    num_workers: int | None = None,
    progress: ProgressFn | None = None,
    what: str = FEATURES,
) -> FeatureSet:
    """Membership features of every usable image in ``paths`` (unusable files become ``skipped``).

    Args:
        paths: image files (already discovered).
        encoder: the audited (or shadow) encoder.
        view_cfg: the view configuration (must match the calibration's).
        seed: views of an image are reproducible from (seed, image content).
        batch_size: views per encoder pass (default: :func:`default_batch_size`).
        cache: feature cache to read from and write to (None: no caching).
        num_workers: worker processes (default: :func:`default_workers`; 0 does everything in
            this process).
        progress: called with (images done, total images).
        what: ``features`` (EncoderMI's), ``signals`` (EncoderMI-R's raw signals) or ``both``
            (see :mod:`auditmi.measures`); the ``cache`` must be that measure's
            (:meth:`auditmi.measures.Measure.open_cache`).
    """
    return compute_sets([paths], encoder, view_cfg, seed, batch_size, cache, num_workers, progress, what)[0]


def compute_sets(
    sets: Sequence[Sequence[Path]],
    encoder: Encoder,
    view_cfg: ViewConfig,
    seed: int = 0,
    batch_size: int | None = None,
    cache: FeatureCache | PairedCache | None = None,
    num_workers: int | None = None,
    progress: ProgressFn | None = None,
    what: str = FEATURES,
) -> list[FeatureSet]:
    """:func:`compute_features` of several image lists in one pass (one FeatureSet per list, as
    if each had been computed alone; an image in two lists is embedded once)."""
    t_start = time.perf_counter()
    paths = [p for ps in sets for p in ps]
    n_views = view_cfg.n_views
    measure = Measure(what, n_views)
    check_cache(cache, measure)
    bs = (encoder.batch_size or default_batch_size(encoder)) if batch_size is None else batch_size  # not `or`: 0 is refused
    check_batch_size(bs)
    check_workers(num_workers)
    if encoder.preflight is not None:  # e.g. an HTTP encoder's query budget: refuse before any work
        encoder.preflight(len(paths), measure.per_image, bs)
    workers = default_workers(encoder.device) if num_workers is None else num_workers
    workers, cap_note = cap_workers(workers, worker_memory(encoder, bs))
    cached = cache.load() if cache is not None else {}
    # On a CPU encoder the workers render the views (batched over a chunk of images) and, where
    # processes can be forked (the encoder is shared, not pickled), embed them too with one
    # thread each; on a GPU they only decode and rendering runs batched on the device.
    fork = _fork_available()
    if encoder.device.type == "cpu" and fork and not encoder.remote:
        # No more workers than chunks of images; a lone single-threaded worker would be slower
        # than this process using every core, so that case runs here.
        workers = min(workers, -(-len(paths) // max(1, bs // measure.per_image)))
        if workers == 1:
            workers = 0
    elif len(paths) < 64:
        workers = min(workers, 1)
    cpu = encoder.device.type == "cpu" and workers > 0
    parallel_embed = cpu and fork and not encoder.remote  # a remote encoder keeps one client in this process
    render = (encoder.input_size, tuple(encoder.mean), tuple(encoder.std)) if cpu else None
    if render is not None:
        # Load torchvision's roi_align kernel once here: forked workers inherit it.
        from auditmi._roi_align import load

        load()
    ds = _Decode(paths, frozenset(cached), working_side(encoder.input_size, view_cfg), seed, view_cfg)
    chunk = max(1, bs // measure.per_image) if parallel_embed else max(1, min(16, bs // measure.per_image))
    embedder = Embedder(encoder, bs, measure.normalize)
    # PyTorch warns (at construction and again when iterating) when there are more workers than
    # cores; --workers is the user's explicit choice, so that warning only confuses them. The
    # filter is scoped to this one message, here, and leaves every other warning alone.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TOO_MANY_WORKERS, category=UserWarning)
        loader = torch.utils.data.DataLoader(
            ds,
            batch_size=chunk,
            shuffle=False,
            num_workers=workers,
            collate_fn=_RenderCollate(render, measure, Embedder(encoder, bs, measure.normalize) if parallel_embed else None),
            pin_memory=False,
            prefetch_factor=4 if workers else None,
            persistent_workers=False,
            # fork: workers share the encoder's weights copy-on-write. Each runs with one thread
            # (DataLoader's default), which also avoids GNU OpenMP hanging after fork.
            multiprocessing_context="fork" if parallel_embed else None,
        )
        batches = iter(loader)
    images_per_pass = max(1, bs // measure.per_image)
    by_sha: dict[str, tuple[np.ndarray, np.ndarray]] = dict(cached)
    info: dict[int, tuple[str, tuple[int, int] | None]] = {}
    skipped: list[tuple[int, Skipped]] = []
    pending: list[dict[str, Any]] = []
    n_from_cache = 0
    done = 0
    worker_encode_seconds = 0.0  # summed over workers (CPU fast path)

    def flush() -> None:
        nonlocal pending
        if not pending:
            return
        if "feats" in pending[0]:
            feats = np.stack([it["feats"] for it in pending])
        elif "views" in pending[0]:
            feats = measure.reduce(embedder.encode(torch.cat([it["views"] for it in pending])), len(pending))
        else:
            feats = measure_decoded([it["pixels"] for it in pending], [it["params"] for it in pending], embedder, measure)
        stats = np.stack([it["stats"] for it in pending]).astype(np.float32)[:, : measure.n_stats]
        shas = [it["sha"] for it in pending]
        for s, f, st in zip(shas, feats, stats, strict=True):
            by_sha[s] = (f, st)
        if cache is not None:
            cache.put(shas, feats, stats)
        pending = []

    in_batch: set[str] = set()
    for item in (it for chunk_items in batches for it in chunk_items):
        i = item["i"]
        done += 1  # noqa: SIM113 (counts items across flattened chunks, not positions)
        if "error" in item:
            skipped.append((i, Skipped(paths[i], item["error"])))
        else:
            sha = item["sha"]
            if item["cached"]:
                n_from_cache += 1
                info[i] = (sha, None)
            else:
                info[i] = (sha, item["size"])
                worker_encode_seconds += item.get("encode_seconds", 0.0)
                if sha not in by_sha and sha not in in_batch:
                    pending.append(item)
                    in_batch.add(sha)
                if len(pending) >= images_per_pass:
                    flush()
                    in_batch.clear()
        if progress is not None:
            progress(done, len(paths))
    flush()

    total = time.perf_counter() - t_start
    return assemble_sets(sets, info, by_sha, skipped, measure,
                         {"seconds": total, "encode_seconds": embedder.encode_seconds + worker_encode_seconds,
                          "encode_in_workers": float(parallel_embed), "views_encoded": float((len(info) - n_from_cache) * measure.per_image),
                          "batch_size": float(embedder.bs), "workers": float(workers)},
                         notes=[cap_note] if cap_note else [])


def assemble_sets(sets: Sequence[Sequence[Path]], info: dict[int, tuple[str, tuple[int, int] | None]],
                  by_sha: dict[str, tuple[np.ndarray, np.ndarray]], skipped: Sequence[tuple[int, Skipped]], measure: Measure,
                  timing: dict[str, float], notes: Sequence[str] | None = None) -> list[FeatureSet]:
    """One :func:`assemble` per list of a pass over ``sets`` concatenated (``info`` and ``skipped``
    are indexed in that concatenation). With several lists each gets the whole pass's timing
    (``timing["images"]``: the images of the pass)."""
    out, start = [], 0
    order = sorted(skipped, key=lambda t: t[0])
    t = dict(timing) if len(sets) == 1 else {**timing, "images": float(sum(len(q) for q in sets))}
    for ps in sets:
        end = start + len(ps)
        sub = {i - start: v for i, v in info.items() if start <= i < end}
        out.append(assemble(list(ps), sub, by_sha, [sk for i, sk in order if start <= i < end],
                            sum(v[1] is None for v in sub.values()), measure, dict(t), notes))
        start = end
    return out


def assemble(paths: Sequence[Path], info: dict[int, tuple[str, tuple[int, int] | None]], by_sha: dict[str, tuple[np.ndarray, np.ndarray]],
             skipped: list[Skipped], n_from_cache: int, measure: Measure, timing: dict[str, float],
             notes: Sequence[str] | None = None) -> FeatureSet:
    """The FeatureSet of a finished run, in the order of ``paths``.

    ``info`` maps the index of each usable image to (sha256, original size or None when it came
    from the cache); ``by_sha`` holds the features and statistics of every sha256. Used by every
    engine, so row order, duplicate groups and counts cannot differ between them.
    """
    rows: list[ImageRow] = []
    feats_l: list[np.ndarray] = []
    stats_l: list[np.ndarray] = []
    groups: dict[str, list[Path]] = {}
    for i in sorted(info):
        sha, size = info[i]
        f, st = by_sha[sha]
        rows.append(ImageRow(paths[i], sha, size if size is not None else (0, 0)))
        feats_l.append(f)
        stats_l.append(st)
        groups.setdefault(sha, []).append(paths[i])
    features, signals = measure.split(np.stack(feats_l) if feats_l else np.zeros((0, measure.width), np.float32))
    return FeatureSet(
        rows=rows,
        features=features,
        signals=signals,
        stats=np.stack(stats_l) if stats_l else np.zeros((0, measure.n_stats), np.float32),
        skipped=skipped,
        duplicates=[g for g in groups.values() if len(g) > 1],
        n_from_cache=n_from_cache,
        notes=list(notes or []),
        timing=timing,
    )
