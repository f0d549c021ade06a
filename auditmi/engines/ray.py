"""The Ray engine: images -> features (or raw signals) on a Ray cluster (or a Ray started on this machine).

Plan of the Ray Data pipeline (one dataset, streamed):

1. ``from_items`` of (index, path), in blocks of :func:`read_block_size` images;
2. CPU tasks (:func:`auditmi.engines.ray_tasks.read_decode`, one fused stage that imports no
   torch) read and hash each file, then decode it, downscale it and compute its encoder-free
   statistics, with the same functions as the local engine. An unreadable or undecodable file
   becomes a row with a skip reason, never an exception: Ray Data fails the whole job on the first
   error in user code. Images whose sha256 is already in the cache are not decoded;
3. embedding actors (``map_batches`` with ``compute=ActorPoolStrategy(size=n)`` and
   ``num_gpus=1`` on GPUs): each loads the encoder once, from its spec or its recipe (a
   calibration bundle's shadow: the weights file and its recorded sha256; the encoder is never
   pickled into a task), renders the views of a batch of images on its device and embeds them
   with :func:`auditmi.measures.measure_decoded` (features, or EncoderMI-R's raw signals), and
   writes that batch's rows to the cache as one shard (atomic ``os.replace``), so a killed driver or a lost node costs only the
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
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from auditmi.cache import FeatureCache
from auditmi.encoders.base import Encoder
from auditmi.engines.ray_tasks import read_decode
from auditmi.errors import AuditmiError, EncoderUnavailableError, InputError
from auditmi.images import Skipped
from auditmi.measures import FEATURES, Measure, check_cache
from auditmi.pipeline import FeatureSet, ProgressFn, assemble, default_batch_size
from auditmi.validate import positive_int
from auditmi.views import ViewConfig, working_side

#: Logical CPU share of a CPU embedding actor and of a decode task on a CPU-only cluster: n
#: actors (one per core, each embedding with one thread) plus the decode tasks that feed them
#: fit on n cores (decoding is light next to embedding).
CPU_ACTOR_SHARE = 0.75
CPU_DECODE_SHARE = 0.25


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise InputError("--engine ray needs Ray Data: pip install 'auditmi[ray]' (ray[data] and pyarrow), or use --engine local.") from e
    return ray


def connect() -> bool:
    """Connect to the cluster at ``$RAY_ADDRESS``, or start a Ray on this machine.

    Returns True when this call initialised Ray. A Ray already initialised in this process (a
    notebook, the tests, an earlier stage of the same scan) is used as it is; Ray shuts down
    when the process exits (``ray.shutdown()`` stops it earlier).
    """
    ray = _import_ray()
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    # Ray's C++ core logs an error line per actor whose constructor arguments sit in the object
    # store (Ray Data always puts them there); real failures reach us as exceptions.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    address = os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            # No dashboard, and no worker processes prestarted for the driver: on a small machine
            # they compete for the cores with Ray's own start-up (measured in benchmarks/RESULTS.md,
            # "Scale-out"); the pipeline's tasks and actors start the processes they need.
            ray.init(include_dashboard=False, _system_config={"prestart_worker_first_driver": False}, **quiet)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at RAY_ADDRESS={address}" if address else "a local Ray"
        raise InputError(f"cannot start or reach {where} ({e}). Check the address and that the cluster runs, "
                         "or unset RAY_ADDRESS to start Ray on this machine.") from e
    return True


def read_block_size(n_images: int, n_slots: int, images_per_batch: int) -> int:
    """Images per read/decode task: about four tasks per CPU (or actor, if more), between one
    actor batch and 1,024 images."""
    return max(images_per_batch, min(1024, math.ceil(n_images / max(1, 4 * n_slots))))


class _EmbedActor:
    """Embedding actor: loads the encoder once from its spec (or its recipe, e.g. a bundle's
    shadow), then renders, embeds and caches batches."""

    def __init__(self, spec: str, recipe: Any, amp: bool, device: str, identity: str, version: str, batch_size: int, seed: int,
                 cfg: ViewConfig, what: str, cache_root: str | None, cache_key: dict[str, Any] | None) -> None:
        import torch

        from auditmi import __version__
        from auditmi.encoders import load_encoder
        from auditmi.measures import Embedder

        if version != __version__:
            raise EncoderUnavailableError(f"this Ray node runs auditmi {__version__} but the driver runs {version}: "
                                          "install the same auditmi version on every node.")
        if device == "cpu":
            torch.set_num_threads(1)  # one thread per actor, as the local engine's workers
        self.enc = load_encoder(spec, device, amp=amp) if recipe is None else recipe.load(device)
        if self.enc.identity != identity:
            raise EncoderUnavailableError(f"encoder {spec!r} loaded on a Ray node has identity {self.enc.identity}, "
                                          f"the driver's has {identity}: every node must see the same weights.")
        self.measure = Measure(what, cfg.n_views)
        self.embedder = Embedder(self.enc, batch_size, self.measure.normalize)
        self.seed, self.cfg = seed, cfg
        self.cache = FeatureCache(cache_root, cache_key) if cache_root is not None and cache_key is not None else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from auditmi.measures import measure_decoded
        from auditmi.views import params_for_image

        n = len(batch["i"])
        feats = np.zeros((n, self.measure.width), np.float32)
        todo = np.flatnonzero(batch["todo"])
        seconds = 0.0
        if len(todo):
            pixels, params = [], []
            for j in todo:
                h, w, sha = int(batch["h"][j]), int(batch["w"][j]), str(batch["sha"][j])
                pixels.append(torch.frombuffer(bytearray(batch["pixels"][j]), dtype=torch.uint8).view(3, h, w))
                params.append(params_for_image(h, w, sha, self.seed, self.cfg))
            before = self.embedder.encode_seconds
            feats[todo] = measure_decoded(pixels, params, self.embedder, self.measure)
            seconds = self.embedder.encode_seconds - before
            if self.cache is not None:
                self.cache.put([str(batch["sha"][j]) for j in todo], feats[todo], batch["stats"][todo][:, : self.measure.n_stats])
        keep = ("i", "sha", "error", "cached", "todo", "ow", "oh", "stats")
        return {**{k: batch[k] for k in keep}, "feats": feats, "encode_seconds": np.full(n, seconds / max(1, len(todo)))}


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
    cache: FeatureCache | None = None,
    num_actors: int | None = None,
    progress: ProgressFn | None = None,
    device: str = "auto",
    what: str = FEATURES,
) -> FeatureSet:
    """:func:`auditmi.pipeline.compute_features` on Ray (see the module docstring).

    Args:
        num_actors: embedding actors (default: one per GPU of the cluster, or one per CPU on a
            cluster without GPUs).
        device: auto (GPU actors when the cluster has GPUs), cpu or cuda.
        Others: as in :func:`auditmi.pipeline.compute_features`. The ``cache`` folder must be a
            path every node sees (actors write their shards there).
    """
    t_start = time.perf_counter()
    paths = [Path(p) for p in paths]
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise InputError(f"invalid --device {device!r} for --engine ray: use auto, cpu or cuda.")
    if num_actors is not None:
        positive_int("--workers (the number of embedding actors with --engine ray)", num_actors)
    if encoder.remote:
        raise InputError(f"encoder {encoder.spec!r} is a remote service: --engine ray embeds in Ray actors, which gains nothing "
                         "for it; use --engine local (it keeps one client and the query budget in this process).")
    n_views = view_cfg.n_views
    measure = Measure(what, n_views)
    check_cache(cache, measure)
    if not paths:
        return assemble(paths, {}, {}, [], 0, measure, {"seconds": 0.0})
    cached = cache.load() if cache is not None else {}
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
        bs = encoder.batch_size or default_batch_size(encoder, "cuda" if on_gpu else "cpu")
    else:
        bs = positive_int("--batch-size", batch_size)
    if encoder.preflight is not None:  # refuse before any work, as the local engine does
        encoder.preflight(len(paths), measure.per_image, bs)
    per_batch = max(1, bs // measure.per_image)
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
                        fn_kwargs={"cached": frozenset(cached), "max_side": working_side(encoder.input_size, view_cfg)})
    from auditmi import __version__

    ds = ds.map_batches(
        _EmbedActor, batch_format="numpy", batch_size=per_batch,
        compute=ActorPoolStrategy(size=actors),
        num_gpus=1 if on_gpu else 0, num_cpus=1.0 if on_gpu else CPU_ACTOR_SHARE,
        fn_constructor_kwargs={"spec": encoder.spec, "recipe": encoder.recipe, "amp": encoder.amp, "device": "cuda" if on_gpu else "cpu",
                               "identity": encoder.identity, "version": __version__, "batch_size": bs, "seed": seed, "cfg": view_cfg, "what": what,
                               "cache_root": str(cache.dir.parent.parent) if cache is not None else None,
                               "cache_key": cache.key if cache is not None else None},
    )
    by_sha: dict[str, tuple[np.ndarray, np.ndarray]] = dict(cached)
    first: dict[str, int] = {}
    info: dict[int, tuple[str, tuple[int, int] | None]] = {}
    skipped: list[tuple[int, Skipped]] = []
    n_from_cache = done = 0
    encode_seconds = 0.0
    try:
        for b in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            for j in range(len(b["i"])):
                i = int(b["i"][j])
                if b["error"][j]:
                    skipped.append((i, Skipped(paths[i], str(b["error"][j]))))
                    continue
                sha = str(b["sha"][j])
                if b["cached"][j]:
                    n_from_cache += 1
                    info[i] = (sha, None)
                    continue
                info[i] = (sha, (int(b["ow"][j]), int(b["oh"][j])))
                encode_seconds += float(b["encode_seconds"][j])
                if sha not in first or i < first[sha]:  # duplicates: the first file's features, as the local engine
                    first[sha] = i
                    by_sha[sha] = (b["feats"][j].copy(), b["stats"][j][: measure.n_stats].astype(np.float32))
            done += len(b["i"])
            if progress is not None:
                progress(done, len(paths))
    except Exception as e:
        cause = _cause(e)
        if cause is not None:
            raise cause from None
        raise
    skipped.sort(key=lambda t: t[0])
    n_computed = len(info) - n_from_cache
    return assemble(paths, info, by_sha, [s for _, s in skipped], n_from_cache, measure,
                    {"seconds": time.perf_counter() - t_start, "ray_start_seconds": t_ray, "encode_seconds": encode_seconds,
                     "encode_in_workers": 1.0, "views_encoded": float(n_computed * measure.per_image), "batch_size": float(bs),
                     "workers": float(actors), "gpu_actors": float(on_gpu)})
