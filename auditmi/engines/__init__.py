"""Engines: where the images -> features (or raw signals) stage runs.

Every engine returns the same :class:`~auditmi.pipeline.FeatureSet` for the same images, encoder,
views and seed (features agree to float rounding, row order and skip reasons are identical), so
everything downstream of features (scores, statistics, verdict, report) is engine-independent.
What is computed per image is a :class:`~auditmi.measures.Measure`: EncoderMI's features, or
EncoderMI-R's raw signals of the audited encoder and of every shadow encoder.

* ``local``: this machine, worker processes (:func:`auditmi.pipeline.compute_features`).
* ``ray``: a Ray cluster, or a Ray started on this machine (:mod:`auditmi.engines.ray`); needs
  the ``auditmi[ray]`` extra.
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
    cache: FeatureCache | None = None,
    num_workers: int | None = None,
    progress: ProgressFn | None = None,
    engine: str = "local",
    device: str = "auto",
    what: str = "features",
) -> FeatureSet:
    """Membership features of ``paths`` computed by ``engine``.

    Arguments are those of :func:`auditmi.pipeline.compute_features`; for the Ray engine
    ``num_workers`` is the number of embedding actors and ``device`` (auto, cpu or cuda) says
    whether they take a GPU each (auto: when the cluster has GPUs). ``what``: ``features`` or
    ``signals`` (see :mod:`auditmi.measures`); the ``cache`` key must match it.
    """
    check_engine(engine)
    if engine == "local":
        from auditmi.pipeline import compute_features as local

        return local(paths, encoder, view_cfg, seed=seed, batch_size=batch_size, cache=cache, num_workers=num_workers, progress=progress,
                     what=what)
    from auditmi.engines.ray import compute_features_ray

    return compute_features_ray(paths, encoder, view_cfg, seed=seed, batch_size=batch_size, cache=cache,
                                num_actors=num_workers, progress=progress, device=device, what=what)


__all__ = ["ENGINES", "EngineOptions", "check_engine", "compute_features"]
