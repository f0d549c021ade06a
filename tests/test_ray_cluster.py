"""The Ray engine on a two-node Ray cluster (``ray.cluster_utils.Cluster``: two raylets on this
machine, one CPU each, so the two embedding actors land on different nodes): a scan gives the
local engine's verdict and scores, and a worker node lost mid-scan costs only the unfinished work.

Both tests start their scans as CLI subprocesses that join the cluster through ``RAY_ADDRESS``,
as a user's scan would. They take minutes on a 2-core machine, hence ``slow``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from e2e_support import example_subset, popen_cli, run_cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "fashion"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """40 example suspects and 60 reference images (EncoderMI-R with the bundle's shadows)."""
    return example_subset(tmp_path_factory.mktemp("cluster_images"), 40, 60)


def _args(images: tuple[Path, Path], cache: Path, out: Path) -> list[object]:
    return ["scan", images[0], "-e", EXAMPLE / "encoder", "-c", EXAMPLE / "calibration", "-r", images[1], "--quiet",
            "--cache", cache, "--json", out]


@pytest.fixture(scope="module")
def local_report(images: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("cluster_local")
    proc = run_cli(*_args(images, tmp / "cache", tmp / "local.json"), timeout=900)
    assert proc.returncode == 0, proc.stderr
    return json.loads((tmp / "local.json").read_text())


@pytest.fixture()
def cluster(monkeypatch: pytest.MonkeyPatch):
    """A head node and one worker node, one CPU each; CLI subprocesses join it via RAY_ADDRESS."""
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    pytest.importorskip("ray.data")
    monkeypatch.setenv("RAY_BACKEND_LOG_LEVEL", "fatal")
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    logging.getLogger("ray").setLevel(logging.ERROR)
    monkeypatch.setenv("RAY_ADDRESS", c.address)
    yield c
    c.shutdown()


def _same_scan(a: dict, b: dict) -> None:
    assert a["verdict"] == b["verdict"]
    assert a["score"]["name"] == b["score"]["name"] == "EncoderMI-R"
    sa = {r["path"]: r["score"] for r in a["images"]}
    sb = {r["path"]: r["score"] for r in b["images"]}
    assert sa.keys() == sb.keys() and len(sa) == 40
    assert max(abs(sa[p] - sb[p]) for p in sa) <= 1e-6


def test_scan_on_a_two_node_cluster_matches_local(cluster, images: tuple[Path, Path], local_report: dict, tmp_path: Path) -> None:
    assert len(cluster.list_all_nodes()) == 2
    proc = run_cli(*_args(images, tmp_path / "cache", tmp_path / "ray.json"), "--engine", "ray", "--workers", "2", timeout=900)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "ray.json").read_text())
    assert report["config"]["engine"] == "ray"
    _same_scan(report, local_report)
    # one cache per (encoder, measure): features of the audited encoder, raw signals of it and of every shadow
    assert len(list((tmp_path / "cache").glob("features/*"))) == 2 + len(report["score"]["shadows"])


def test_losing_a_node_mid_scan_keeps_the_finished_shards(cluster, images: tuple[Path, Path], local_report: dict, tmp_path: Path) -> None:
    """The worker node's raylet and processes are killed (not a graceful drain) once some shards are
    cached, and a replacement node joins, as an autoscaler would add one. Ray re-runs the lost
    tasks and restarts the lost actor; the scan finishes with the local engine's results, no
    finished shard is lost, and a rerun takes every image from the cache."""
    cache = tmp_path / "cache"
    worker = next(n for n in cluster.list_all_nodes() if n is not cluster.head_node)
    with open(tmp_path / "scan.log", "w") as log:  # a file, not a pipe: see test_cache.py
        proc = popen_cli(*_args(images, cache, tmp_path / "lost.json"), "--engine", "ray", "--workers", "2", "--batch-size", "20",
                         stdout=log, stderr=log)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None and len(list(cache.glob("features/*/shard-*.npz"))) < 6:
            time.sleep(0.05)
        assert proc.poll() is None, "the scan finished before a node could be lost"
        before = {p.name for p in cache.glob("features/*/shard-*.npz")}
        cluster.remove_node(worker, allow_graceful=False)
        cluster.add_node(num_cpus=1)
        assert proc.wait(timeout=600) == 0, (tmp_path / "scan.log").read_text()[-3000:]
    after = {p.name for p in cache.glob("features/*/shard-*.npz")}
    assert before <= after and len(after) > len(before)  # finished shards were kept; the rest were completed
    _same_scan(json.loads((tmp_path / "lost.json").read_text()), local_report)
    proc2 = run_cli(*_args(images, cache, tmp_path / "again.json"), "--engine", "ray", "--workers", "2", timeout=900)
    assert proc2.returncode == 0, proc2.stderr
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["timing"]["from_cache"] == 100
    _same_scan(again, local_report)
