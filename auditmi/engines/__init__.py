"""Engines: where the images -> features (or raw signals) stage runs.

Every engine returns the same :class:`~auditmi.pipeline.FeatureSet` for the same images, encoder,
views and seed (features agree to float rounding, row order and skip reasons are identical), so
everything downstream of features (scores, statistics, verdict, report) is engine-independent.
What is computed per image is a :class:`~auditmi.measures.Measure`: EncoderMI's features, or
EncoderMI-R's raw signals of the audited encoder and of every shadow encoder.

* ``local``: this machine, worker processes (:func:`auditmi.pipeline.compute_features`).
* ``ray``: a Ray cluster, or a Ray started on this machine (:mod:`auditmi.engines.ray`); needs
  the ``auditmi[ray]`` extra.

A scan computes several encoders' rows over its suspects and reference at once
(:func:`compute_sets`, one :class:`Head` per encoder): the local engine runs one pass per
encoder over both lists; the Ray engine runs ONE Ray Data run whose actors load every encoder,
so actors start once per scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from auditmi.errors import InputError

if TYPE_CHECKING:  # importing this package must stay cheap (the CLI checks --engine before torch)
    from auditmi.cache import FeatureCache
    from auditmi.encoders.base import Encoder
    from auditmi.measures import PairedCache
    from auditmi.pipeline import FeatureSet, ProgressFn
    from auditmi.views import ViewConfig

ENGINES = ("local", "ray")


def check_engine(engine: str) -> str:
    """``engine`` if it names an engine, else an InputError listing them."""
    if engine not in ENGINES:
        raise InputError(f"unknown --engine {engine!r}; use one of: {', '.join(ENGINES)}.")
    return engine


@dataclass(frozen=True)
class EngineOptions:
    """How a job runs its images -> rows stages: ``--engine``, ``--workers``, ``--batch-size``, ``--device``."""

    engine: str = "local"
    workers: int | None = None
    batch_size: int | None = None
    device: str = "auto"


def compute_features(
    paths: Sequence[Path],
    encoder: Encoder,
    view_cfg: ViewConfig,
    seed: int = 0,
    batch_size: int | None = None,
    cache: FeatureCache | PairedCache | None = None,
    num_workers: int | None = None,
    progress: ProgressFn | None = None,
    engine: str = "local",
    device: str = "auto",
    what: str = "features",
) -> FeatureSet:
    """Membership features of ``paths`` computed by ``engine``.

    Arguments are those of :func:`auditmi.pipeline.compute_features`; for the Ray engine
    ``num_workers`` is the number of embedding actors and ``device`` (auto, cpu or cuda) says
    whether they take a GPU each (auto: when the cluster has GPUs). ``what``: ``features``,
    ``signals`` or ``both`` (see :mod:`auditmi.measures`); the ``cache`` must be that measure's.
    """
    check_engine(engine)
    if engine == "local":
        from auditmi.pipeline import compute_features as local

        return local(paths, encoder, view_cfg, seed=seed, batch_size=batch_size, cache=cache, num_workers=num_workers, progress=progress,
                     what=what)
    from auditmi.engines.ray import compute_features_ray

    return compute_features_ray(paths, encoder, view_cfg, seed=seed, batch_size=batch_size, cache=cache,
                                num_actors=num_workers, progress=progress, device=device, what=what)


@dataclass(frozen=True)
class Head:
    """One encoder of a multi-encoder pass: what it measures (features, signals or both) and its cache."""

    encoder: Encoder
    what: str = "features"
    cache: FeatureCache | PairedCache | None = None


def compute_sets(sets: Sequence[Sequence[Path]], heads: Sequence[Head], view_cfg: ViewConfig, seed: int = 0,
                 opts: EngineOptions | None = None, progress: ProgressFn | None = None) -> list[list[FeatureSet]]:
    """Rows of every head over every list of ``sets``: ``result[h][k]`` is head ``h``'s FeatureSet
    of list ``k``, the same as computing that head on that list alone.

    local: one pass per head over all the lists (worker processes, as :func:`compute_features`);
    ray: one Ray Data run for every head and list, whose actors load every encoder once.
    ``progress`` gets (images done, total) over the whole call.
    """
    o = opts or EngineOptions()
    check_engine(o.engine)
    if o.engine == "ray":
        from auditmi.engines.ray import compute_sets_ray

        return compute_sets_ray(sets, [(h.encoder, h.what, h.cache) for h in heads], view_cfg, seed, o.batch_size, o.workers,
                                progress, o.device)
    from auditmi.pipeline import compute_sets as local

    total = sum(len(ps) for ps in sets) * len(heads)
    out = []
    for e, h in enumerate(heads):
        def cb(d: int, t: int, base: int = e * total // max(1, len(heads))) -> None:
            if progress is not None:
                progress(base + d, total)

        out.append(local(sets, h.encoder, view_cfg, seed, o.batch_size, h.cache, o.workers, cb, h.what))
    return out


__all__ = ["ENGINES", "EngineOptions", "Head", "check_engine", "compute_features", "compute_sets"]
