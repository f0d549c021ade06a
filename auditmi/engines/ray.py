"""The Ray engine: images -> features (or raw signals) on a Ray cluster (or a Ray started on this machine).

One Ray Data run computes the rows of every encoder of a job (a scan's audited encoder and its
K shadows, :func:`compute_sets_ray`), over every image list (suspects and reference), so actors
start once per scan and every file is read once. Plan of the pipeline (one dataset, streamed):

1. ``from_items`` of (index, path), in blocks of :func:`read_block_size` images;
2. CPU tasks (:func:`auditmi.engines.ray_tasks.read_decode`, one fused stage that imports no
   torch) read and hash each file, then decode it, downscale it and compute its encoder-free
   statistics, with the same functions as the local engine, once per distinct working side of
   the run's encoders. An unreadable or undecodable file
   becomes a row with a skip reason, never an exception: Ray Data fails the whole job on the first
   error in user code. Images whose sha256 is already in the cache are not decoded;
3. embedding actors (``map_batches`` with ``compute=ActorPoolStrategy(size=n)`` and
   ``num_gpus=1`` on GPUs): each loads every encoder of the run once, from its spec or its recipe (a
   calibration bundle's shadow: the weights file and its recorded sha256; the encoder is never
   pickled into a task), renders the views of a batch of images on its device and embeds them
   with :func:`auditmi.measures.measure_decoded` (features, EncoderMI-R's raw signals, or both),
   and writes that batch's rows to each encoder's cache as one shard (atomic ``os.replace``), so a killed driver or a lost node costs only the
   batches that were in flight;
4. the driver collects the rows and builds the FeatureSet with :func:`auditmi.pipeline.assemble`,
   exactly as the local engine does.

Why not ``ray.data.read_binary_files``: it raises on a file that vanished or cannot be read
(failing the job), and it would bypass the size and error checks of :mod:`auditmi.images`.

View parameters are re-derived in the actor from (height, width, sha256, seed), which is what
the local engine computes too, so the views (and thus the features, up to float rounding of
the encoder's batched kernels) do not depend on how images are spread over workers or nodes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from auditmi.cache import FeatureCache
from auditmi.encoders.base import Encoder
from auditmi.engines.ray_connect import connect
from auditmi.engines.ray_connect import import_ray as _import_ray
from auditmi.engines.ray_tasks import read_decode
from auditmi.errors import AuditmiError, EncoderUnavailableError, InputError
from auditmi.images import Skipped
from auditmi.measures import FEATURES, Measure, PairedCache, check_cache
from auditmi.pipeline import FeatureSet, ProgressFn, assemble_sets, default_batch_size
from auditmi.validate import positive_int
from auditmi.views import ViewConfig, working_side

#: Logical CPU share of a CPU embedding actor and of a decode task on a CPU-only cluster: n
#: actors (one per core, each embedding with one thread) plus the decode tasks that feed them
#: fit on n cores (decoding is light next to embedding).
CPU_ACTOR_SHARE = 0.75
CPU_DECODE_SHARE = 0.25


def read_block_size(n_images: int, n_slots: int, images_per_batch: int) -> int:
    """Images per read/decode task: about four tasks per CPU (or actor, if more), between one
    actor batch and 1,024 images."""
    return max(images_per_batch, min(1024, math.ceil(n_images / max(1, 4 * n_slots))))


class _EmbedActor:
    """Embedding actor: loads every encoder of the run once, from its spec (or its recipe, e.g. a
    bundle's shadow), then renders, embeds and caches batches for each of them."""

    def __init__(self, heads: list[dict[str, Any]], device: str, version: str, seed: int, cfg: ViewConfig) -> None:
        import torch

        from auditmi import __version__
        from auditmi.encoders import load_encoder
        from auditmi.measures import Embedder

        if version != __version__:
            raise EncoderUnavailableError(f"this Ray node runs auditmi {__version__} but the driver runs {version}: "
                                          "install the same auditmi version on every node.")
        if device == "cpu":
            torch.set_num_threads(1)  # one thread per actor, as the local engine's workers
        self.heads = []
        for h in heads:
            enc = load_encoder(h["spec"], device, amp=h["amp"]) if h["recipe"] is None else h["recipe"].load(device)
            if enc.identity != h["identity"]:
                raise EncoderUnavailableError(f"encoder {h['spec']!r} loaded on a Ray node has identity {enc.identity}, "
                                              f"the driver's has {h['identity']}: every node must see the same weights.")
            m = Measure(h["what"], cfg.n_views)
            cache = h["cache"].reopen() if h["cache"] is not None else None
            self.heads.append((m, Embedder(enc, h["batch_size"], m.normalize), cache, h["side"]))
        self.seed, self.cfg = seed, cfg

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from auditmi.measures import measure_decoded
        from auditmi.views import params_for_image

        n = len(batch["i"])
        out = {k: v for k, v in batch.items() if not k.startswith("pixels")}
        decoded: dict[tuple[int, int], tuple[torch.Tensor, Any]] = {}  # (side, row) -> pixels, view parameters

        def image(k: int, j: int) -> tuple[torch.Tensor, Any]:
            if (k, j) not in decoded:
                h, w, sha = int(batch[f"h{k}"][j]), int(batch[f"w{k}"][j]), str(batch["sha"][j])
                decoded[k, j] = (torch.frombuffer(bytearray(batch[f"pixels{k}"][j]), dtype=torch.uint8).view(3, h, w),
                                 params_for_image(h, w, sha, self.seed, self.cfg))
            return decoded[k, j]

        for e, (measure, embedder, cache, k) in enumerate(self.heads):
            feats = np.zeros((n, measure.width), np.float32)
            todo = np.flatnonzero(batch[f"need{e}"])
            seconds = 0.0
            if len(todo):
                items = [image(k, int(j)) for j in todo]
                before = embedder.encode_seconds
                feats[todo] = measure_decoded([p for p, _ in items], [v for _, v in items], embedder, measure)
                seconds = embedder.encode_seconds - before
                if cache is not None:
                    cache.put([str(batch["sha"][j]) for j in todo], feats[todo], batch[f"stats{k}"][todo][:, : measure.n_stats])
            out[f"feats{e}"] = feats
            out[f"encode_seconds{e}"] = np.full(n, seconds / max(1, len(todo)))
        return out


def _cause(e: BaseException) -> AuditmiError | None:
    """The auditmi error behind a Ray task or actor error.

    Ray wraps remote exceptions (``RayTaskError.cause``); an actor that died in its constructor
    comes back as an ``ActorDiedError`` that keeps only the remote traceback's text, so the
    error is rebuilt from its last ``auditmi.errors.<Type>: message`` line.
    """
    import re

    from auditmi import errors

    cur: BaseException | None = e
    for _ in range(10):
        if cur is None:
            break
        if isinstance(cur, AuditmiError):
            return cur
        cur = getattr(cur, "cause", None) or cur.__cause__ or cur.__context__
    found = re.findall(r"auditmi\.errors\.(\w+): (.+)", str(e))
    if found:
        name, message = found[-1]
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, AuditmiError):
            return cls(message.strip())
    return None


def compute_features_ray(
    paths: Sequence[Path],
    encoder: Encoder,
    view_cfg: ViewConfig,
    seed: int = 0,
    batch_size: int | None = None,
    cache: FeatureCache | PairedCache | None = None,
    num_actors: int | None = None,
    progress: ProgressFn | None = None,
    device: str = "auto",
    what: str = FEATURES,
) -> FeatureSet:
    """:func:`auditmi.pipeline.compute_features` on Ray: :func:`compute_sets_ray` with one list and one encoder."""
    return compute_sets_ray([paths], [(encoder, what, cache)], view_cfg, seed, batch_size, num_actors, progress, device)[0][0]


def compute_sets_ray(
    sets: Sequence[Sequence[Path]],
    heads: Sequence[tuple[Encoder, str, FeatureCache | PairedCache | None]],
    view_cfg: ViewConfig,
    seed: int = 0,
    batch_size: int | None = None,
    num_actors: int | None = None,
    progress: ProgressFn | None = None,
    device: str = "auto",
) -> list[list[FeatureSet]]:
    """Every (encoder, measure, cache) of ``heads`` over every list of ``sets``, in ONE Ray Data run
    (see the module docstring): ``result[h][k]`` is head ``h``'s FeatureSet of list ``k``, equal to
    what :func:`auditmi.pipeline.compute_sets` gives for that head.

    Args:
        num_actors: embedding actors, each holding every encoder (default: one per GPU of the
            cluster, or one per CPU on a cluster without GPUs).
        device: auto (GPU actors when the cluster has GPUs), cpu or cuda.
        Others: as in :func:`auditmi.pipeline.compute_features`. Cache folders must be paths every
            node sees (actors write their shards there).
    """
    t_start = time.perf_counter()
    paths = [Path(p) for ps in sets for p in ps]
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise InputError(f"invalid --device {device!r} for --engine ray: use auto, cpu or cuda.")
    if num_actors is not None:
        positive_int("--workers (the number of embedding actors with --engine ray)", num_actors)
    for encoder, _, _ in heads:
        if encoder.remote:
            raise InputError(f"encoder {encoder.spec!r} is a remote service: --engine ray embeds in Ray actors, which gains nothing "
                             "for it; use --engine local (it keeps one client and the query budget in this process).")
    measures = [Measure(what, view_cfg.n_views) for _, what, _ in heads]
    for (_, _, cache), m in zip(heads, measures, strict=True):
        check_cache(cache, m)
    if not paths:
        return [assemble_sets(sets, {}, {}, [], m, {"seconds": 0.0}) for m in measures]
    cached = [cache.load() if cache is not None else {} for _, _, cache in heads]
    ray = _import_ray()
    connect()
    t_ray = time.perf_counter() - t_start
    resources = ray.cluster_resources()
    n_gpus, n_cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    if device.startswith("cuda") and n_gpus == 0:
        raise InputError("--device cuda was requested but the Ray cluster has no GPU; use --device auto or cpu.")
    on_gpu = n_gpus > 0 and device != "cpu"
    actors = num_actors or (n_gpus if on_gpu else n_cpus)
    if batch_size is None:
        sizes = [encoder.batch_size or default_batch_size(encoder, "cuda" if on_gpu else "cpu") for encoder, _, _ in heads]
    else:
        sizes = [positive_int("--batch-size", batch_size)] * len(heads)
    for (encoder, _, _), m, bs in zip(heads, measures, sizes, strict=True):
        if encoder.preflight is not None:  # refuse before any work, as the local engine does
            encoder.preflight(len(paths), m.per_image, bs)
    per_batch = max(1, min(bs // m.per_image for m, bs in zip(measures, sizes, strict=True)))
    sides = tuple(working_side(encoder.input_size, view_cfg) for encoder, _, _ in heads)
    side_index = {s: k for k, s in enumerate(sorted(set(sides)))}
    from ray.data import ActorPoolStrategy, DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # the caller draws one aggregated bar
    ctx.enable_operator_progress_bars = False
    ctx.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    items = [{"i": i, "path": str(p)} for i, p in enumerate(paths)]
    block = read_block_size(len(paths), max(actors, n_cpus), per_batch)
    ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / block)))
    decode_cpus = 1.0 if on_gpu else CPU_DECODE_SHARE
    ds = ds.map_batches(read_decode, batch_format="numpy", batch_size=None, num_cpus=decode_cpus,
                        fn_kwargs={"cached": tuple(frozenset(c) for c in cached), "sides": sides})
    from auditmi import __version__

    # What each actor loads: specs or recipes (a bundle shadow: its weights file and recorded
    # sha256) and the caches' folders and keys; never an encoder.
    specs = [{"spec": encoder.spec, "recipe": encoder.recipe, "amp": encoder.amp, "identity": encoder.identity, "what": what,
              "batch_size": bs, "side": side_index[side], "cache": cache}
             for (encoder, what, cache), bs, side in zip(heads, sizes, sides, strict=True)]
    ds = ds.map_batches(
        _EmbedActor, batch_format="numpy", batch_size=per_batch,
        compute=ActorPoolStrategy(size=actors),
        num_gpus=1 if on_gpu else 0, num_cpus=1.0 if on_gpu else CPU_ACTOR_SHARE,
        fn_constructor_kwargs={"heads": specs, "device": "cuda" if on_gpu else "cpu", "version": __version__, "seed": seed, "cfg": view_cfg},
    )
    by_sha: list[dict[str, tuple[np.ndarray, np.ndarray]]] = [dict(c) for c in cached]
    first: list[dict[str, int]] = [{} for _ in heads]
    info: list[dict[int, tuple[str, tuple[int, int] | None]]] = [{} for _ in heads]
    encode_seconds = [0.0] * len(heads)
    skipped: list[tuple[int, Skipped]] = []
    done = 0
    t_run = time.perf_counter()
    t_first = None  # until the first embedded batch: Ray Data's planning, the first decode tasks, the actors' start-up
    try:
        for b in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            t_first = t_first if t_first is not None else time.perf_counter() - t_run
            for j in range(len(b["i"])):
                i = int(b["i"][j])
                if b["error"][j]:
                    skipped.append((i, Skipped(paths[i], str(b["error"][j]))))
                    continue
                sha = str(b["sha"][j])
                for e, m in enumerate(measures):
                    if not b[f"need{e}"][j]:  # cached for this encoder
                        info[e][i] = (sha, None)
                        continue
                    info[e][i] = (sha, (int(b["ow"][j]), int(b["oh"][j])))
                    encode_seconds[e] += float(b[f"encode_seconds{e}"][j])
                    if sha not in first[e] or i < first[e][sha]:  # duplicates: the first file's row, as the local engine
                        first[e][sha] = i
                        stats = b[f"stats{side_index[sides[e]]}"][j][: m.n_stats].astype(np.float32)
                        by_sha[e][sha] = (b[f"feats{e}"][j].copy(), stats)
            done += len(b["i"])
            if progress is not None:
                progress(done, len(paths))
    except Exception as err:
        cause = _cause(err)
        if cause is not None:
            raise cause from None
        raise
    out = []
    for e, m in enumerate(measures):
        n_computed = sum(v[1] is not None for v in info[e].values())
        timing = {"seconds": time.perf_counter() - t_start, "ray_start_seconds": t_ray, "first_batch_seconds": t_first or 0.0,
                  "encode_seconds": encode_seconds[e],
                  "encode_in_workers": 1.0, "views_encoded": float(n_computed * m.per_image), "batch_size": float(sizes[e]),
                  "workers": float(actors), "gpu_actors": float(on_gpu), "encoders_in_run": float(len(heads))}
        out.append(assemble_sets(sets, info[e], by_sha[e], skipped, m, timing))
    return out
