"""Tests for auditmi.pipeline: the CPU worker path (decode, render and embed in forked
single-threaded workers) against the in-process path, worker defaults, skipped files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import auditmi.pipeline as pipeline
from auditmi.encoders import load_encoder
from auditmi.pipeline import compute_features, default_workers
from auditmi.views import ViewConfig

from e2e_support import make_broken_files, make_noise_images

CFG = ViewConfig(n_views=4)
BATCH = 16  # 4 images of 4 views per worker chunk: 40 images make 10 chunks


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], dict[str, Path]]:
    d = tmp_path_factory.mktemp("pipeline")
    good = make_noise_images(d, 40, seed=5, prefix="p", size=24)
    broken = make_broken_files(d)
    paths = sorted(good + list(broken.values()))
    return paths, broken


@pytest.fixture(scope="module")
def in_process(tiny_checkpoint: Path, folder) -> pipeline.FeatureSet:
    enc = load_encoder(str(tiny_checkpoint), "cpu")
    return compute_features(folder[0], enc, CFG, seed=3, batch_size=BATCH, num_workers=0)


def _same(a: pipeline.FeatureSet, b: pipeline.FeatureSet) -> None:
    assert [r.path for r in a.rows] == [r.path for r in b.rows]
    assert [r.sha256 for r in a.rows] == [r.sha256 for r in b.rows]
    assert sorted(str(s.path) for s in a.skipped) == sorted(str(s.path) for s in b.skipped)
    np.testing.assert_array_equal(a.stats, b.stats)
    # Workers embed with one thread and other batch shapes: equal up to float rounding.
    np.testing.assert_allclose(a.features, b.features, rtol=0, atol=1e-5)


def test_cpu_workers_render_and_embed_and_match_the_in_process_path(tiny_checkpoint: Path, folder, in_process) -> None:
    enc = load_encoder(str(tiny_checkpoint), "cpu")
    fs = compute_features(folder[0], enc, CFG, seed=3, batch_size=BATCH, num_workers=2)
    assert fs.timing["workers"] == 2 and fs.timing["encode_in_workers"] == 1.0
    assert fs.timing["encode_seconds"] > 0
    assert in_process.timing["encode_in_workers"] == 0.0
    assert fs.n == 40 and len(fs.skipped) == 3
    _same(fs, in_process)


def test_without_fork_workers_only_render_and_results_are_the_same(tiny_checkpoint: Path, folder, in_process, monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "_fork_available", lambda: False)
    enc = load_encoder(str(tiny_checkpoint), "cpu")
    fs = compute_features(folder[0], enc, CFG, seed=3, batch_size=BATCH, num_workers=1)
    assert fs.timing["workers"] == 1 and fs.timing["encode_in_workers"] == 0.0
    _same(fs, in_process)


def test_a_single_chunk_of_images_runs_in_this_process(tiny_checkpoint: Path, folder) -> None:
    enc = load_encoder(str(tiny_checkpoint), "cpu")
    fs = compute_features(folder[0][:3], enc, CFG, seed=3, batch_size=BATCH, num_workers=4)
    assert fs.timing["workers"] == 0  # 3 images fit in one chunk of 4: no worker would help


def test_worker_results_do_not_depend_on_the_number_of_workers(tiny_checkpoint: Path, folder, monkeypatch) -> None:
    import auditmi._paths

    monkeypatch.setattr(auditmi._paths, "usable_cores", lambda: 8)  # 3 workers even on a 2-core machine (the cap is tested elsewhere)
    enc = load_encoder(str(tiny_checkpoint), "cpu")
    a = compute_features(folder[0], enc, CFG, seed=3, batch_size=BATCH, num_workers=2)
    b = compute_features(folder[0], enc, CFG, seed=3, batch_size=BATCH, num_workers=3)
    assert b.timing["workers"] == 3
    _same(a, b)


def test_default_workers(monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "_fork_available", lambda: True)
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 6)
    assert default_workers("cpu") == 6  # one single-threaded worker per core; this process only collects
    assert default_workers("cuda") == 5  # decoders, leaving a core to the process driving the GPU
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 64)
    assert default_workers(torch.device("cpu")) == 32 and default_workers("cuda") == 8
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 1)
    assert default_workers("cpu") == 0 and default_workers("cuda") == 0
    monkeypatch.setattr(pipeline, "_fork_available", lambda: False)  # macOS, Windows
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 6)
    assert default_workers("cpu") == 5  # decode-and-render workers beside the encoding process


def test_more_workers_than_cores_does_not_show_pytorchs_dataloader_warning(tiny_checkpoint: Path, folder, monkeypatch) -> None:
    """Should more workers than PyTorch counts cores run, PyTorch's warning about it is not shown.

    (auditmi caps --workers at the usable cores, issue 14; the cap is lifted here to reach the case.)
    """
    import os
    import warnings

    import auditmi._paths

    monkeypatch.setattr(auditmi._paths, "usable_cores", lambda: 64)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = cores + 1
    if workers > 10:  # 40 images in chunks of 4: no more than 10 workers are started
        pytest.skip("too many cores for this folder to need more workers than cores")
    # Without the filter PyTorch does warn in this setting (so the check below is not vacuous).
    with pytest.warns(UserWarning, match="This DataLoader will create"):
        torch.utils.data.DataLoader(list(range(4)), num_workers=workers)
    enc = load_encoder(str(tiny_checkpoint), "cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fs = compute_features(folder[0], enc, CFG, seed=3, batch_size=BATCH, num_workers=workers)
    assert fs.timing["workers"] == workers
    assert not [w for w in caught if "DataLoader will create" in str(w.message)], [str(w.message) for w in caught]
