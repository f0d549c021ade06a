"""The Ray engine gives the local engine's results, resumes from the cache, and never aborts on a bad file.

One local Ray (2 CPUs, no dashboard) is started per test session by the ``ray_cluster`` fixture;
CLI subprocesses join it through ``RAY_ADDRESS`` instead of starting their own. The Parquet and
capped-report tests need no Ray.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from e2e_support import example_subset, make_broken_files, popen_cli, run_cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "fashion"


@pytest.fixture(scope="session")
def ray_cluster() -> str:
    """A local Ray for the session; yields its address (for CLI subprocesses)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    started = not ray.is_initialized()
    if started:
        # address="local": always a fresh Ray of our own, even when another Ray runs on this machine
        # (without it, ray.init joins that one and refuses num_cpus)
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


def _image_folder(tmp: Path, tiny_image_dir: Path) -> list[Path]:
    """Tiny images, a duplicate, three broken files and a path that vanished."""
    d = tmp / "imgs"
    shutil.copytree(tiny_image_dir, d)
    shutil.copy(d / "img_00.png", d / "img_00_copy.png")
    make_broken_files(d)
    return sorted(d.iterdir()) + [d / "vanished.png"]


@pytest.mark.parametrize("actors", [1, 2])
def test_ray_features_match_local(ray_cluster: str, tiny_checkpoint: Path, tiny_image_dir: Path, tmp_path: Path, actors: int) -> None:
    from auditmi.cache import FeatureCache
    from auditmi.encoders import load_encoder
    from auditmi.engines import compute_features
    from auditmi.pipeline import cache_key
    from auditmi.views import ViewConfig

    paths = _image_folder(tmp_path, tiny_image_dir)
    enc = load_encoder(str(tiny_checkpoint), "cpu")
    cfg = ViewConfig(n_views=4)
    local = compute_features(paths, enc, cfg, seed=3, batch_size=8, num_workers=0)
    cache = FeatureCache(tmp_path / "cache", cache_key(enc, cfg, 3))
    ray_fs = compute_features(paths, enc, cfg, seed=3, batch_size=8, num_workers=actors, cache=cache, engine="ray")
    assert [r.path for r in ray_fs.rows] == [r.path for r in local.rows]
    assert [r.sha256 for r in ray_fs.rows] == [r.sha256 for r in local.rows]
    assert [r.original_size for r in ray_fs.rows] == [r.original_size for r in local.rows]
    assert ray_fs.skipped == local.skipped and len(local.skipped) == 4  # broken files become skip reasons, in path order
    assert ray_fs.duplicates == local.duplicates and len(local.duplicates) == 1
    np.testing.assert_allclose(ray_fs.features, local.features, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(ray_fs.stats, local.stats)
    # The actors wrote the features to the cache: a rerun takes every image from it, identically.
    assert cache.shards()
    again = compute_features(paths, enc, cfg, seed=3, batch_size=8, num_workers=actors, cache=cache, engine="ray")
    assert again.n_from_cache == again.n == local.n
    # Exactly the same features, except that two files with the same bytes may have been embedded
    # in different batches (float rounding of batched kernels) and either copy may come back.
    dup = {r.sha256 for r in ray_fs.rows if sum(q.sha256 == r.sha256 for q in ray_fs.rows) > 1}
    single = np.array([r.sha256 not in dup for r in ray_fs.rows])
    np.testing.assert_array_equal(again.features[single], ray_fs.features[single])
    np.testing.assert_allclose(again.features, ray_fs.features, atol=1e-6, rtol=0)
    assert again.skipped == local.skipped


def test_ray_actor_refuses_other_weights(ray_cluster: str, tiny_checkpoint: Path, tiny_image_dir: Path, tmp_path: Path) -> None:
    """An actor that loads different weights from the same spec fails the job with a typed error."""
    from auditmi.encoders import load_encoder
    from auditmi.engines import compute_features
    from auditmi.errors import AuditmiError
    from auditmi.views import ViewConfig

    ck = tmp_path / "enc"
    shutil.copytree(tiny_checkpoint, ck)
    enc = load_encoder(str(ck), "cpu")
    enc.identity = "something-else"  # as if the node saw another checkpoint at this path
    with pytest.raises(AuditmiError, match="same weights"):
        compute_features(sorted(tiny_image_dir.iterdir()), enc, ViewConfig(n_views=4), num_workers=1, engine="ray")


@pytest.mark.parametrize("which", ["encoder", "shadow"])
def test_ray_signals_match_local(ray_cluster: str, tmp_path: Path, which: str) -> None:
    """EncoderMI-R's raw signals on Ray actors (a bundle shadow rebuilt from its recipe, not pickled)."""
    import torch
    from test_signal_engines import assert_signals_close, direct_signals

    from auditmi.cache import FeatureCache
    from auditmi.calibration import load_calibration
    from auditmi.encoders import load_encoder
    from auditmi.engines import compute_features
    from auditmi.measures import signal_cache_key
    from auditmi.shadow_set import ShadowRecipe, load_shadows, shadow_encoder

    cal = load_calibration(EXAMPLE / "calibration")
    ss = load_shadows(cal.meta, cal.path)
    enc = load_encoder(str(EXAMPLE / "encoder"), "cpu") if which == "encoder" else shadow_encoder(ss.shadows[1], torch.device("cpu"))
    assert (enc.recipe is None) == (which == "encoder") and (which == "encoder" or isinstance(enc.recipe, ShadowRecipe))
    paths = sorted((EXAMPLE / "suspect").glob("*.png"))[:6]
    cache = FeatureCache(tmp_path / "cache", signal_cache_key(enc, cal.views, 0))
    fs = compute_features(paths, enc, cal.views, seed=0, batch_size=22, cache=cache, num_workers=2, engine="ray", what="signals")
    assert [r.path for r in fs.rows] == paths and fs.stats.shape == (6, 0)
    assert_signals_close(fs.features, direct_signals(paths, enc, cal.views, 0), cal.views.n_views)
    local = compute_features(paths, enc, cal.views, seed=0, batch_size=22, num_workers=2, what="signals")
    assert_signals_close(fs.features, local.features, cal.views.n_views)
    again = compute_features(paths, enc, cal.views, seed=0, batch_size=22, cache=cache, num_workers=2, engine="ray", what="signals")
    assert again.n_from_cache == 6  # the actors wrote every row to the shared cache


def test_ray_shadow_recipe_refuses_other_weights(tmp_path: Path) -> None:
    """A node whose copy of the bundle has other shadow weights refuses to load them."""
    import dataclasses

    from auditmi.calibration import load_calibration
    from auditmi.errors import CalibrationError
    from auditmi.shadow_set import ShadowRecipe, load_shadows

    cal = load_calibration(EXAMPLE / "calibration")
    entry = load_shadows(cal.meta, cal.path).shadows[0]
    other = tmp_path / "shadow-0.safetensors"
    other.write_bytes(entry.weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(CalibrationError, match="same calibration bundle"):
        ShadowRecipe(dataclasses.replace(entry, weights=other)).load("cpu")


def test_encodermi_r_with_the_ray_engine_runs_no_local_signal_pass(ray_cluster: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Every encoder's signal pass (audited and both shadows) runs on Ray, with the local engine's scores."""
    import auditmi.pipeline
    from auditmi.calibrated_scan import run_encodermi_r
    from auditmi.calibration import load_calibration
    from auditmi.encoders import load_encoder
    from auditmi.engines import EngineOptions
    from auditmi.shadow_set import load_shadows

    cal = load_calibration(EXAMPLE / "calibration")
    ss = load_shadows(cal.meta, cal.path)
    enc = load_encoder(str(EXAMPLE / "encoder"), "cpu")
    sus = sorted((EXAMPLE / "suspect").glob("*.png"))[:6]
    ref = sorted((EXAMPLE / "reference").glob("*.png"))[:40]
    local = run_encodermi_r(sus, ref, enc, ss, cal.views, 0, None, engine=EngineOptions(workers=2))

    def no_local(*a: object, **k: object) -> None:
        raise AssertionError("the local engine ran a signal pass")

    monkeypatch.setattr(auditmi.pipeline, "compute_features", no_local)
    on_ray = run_encodermi_r(sus, ref, enc, ss, cal.views, 0, tmp_path / "cache", engine=EngineOptions("ray", workers=2))
    assert len(list((tmp_path / "cache").glob("features/*"))) == 1 + ss.k  # one signal cache per encoder, filled by the actors
    np.testing.assert_allclose(on_ray.scores.suspect_scores, local.scores.suspect_scores, atol=1e-6, rtol=0)
    np.testing.assert_allclose(on_ray.scores.reference_scores, local.scores.reference_scores, atol=1e-6, rtol=0)
    assert on_ray.suspects.paths == local.suspects.paths and on_ray.reference.paths == local.reference.paths


def _example_subset(tmp: Path) -> tuple[Path, Path]:
    sus, ref = example_subset(tmp, 40, 60)
    (sus / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return sus, ref


def _scan(sus: Path, ref: Path, out: Path, cache: Path, *extra: object) -> dict:
    proc = run_cli("scan", sus, "-e", EXAMPLE / "encoder", "-c", EXAMPLE / "calibration", "-r", ref, "--cache", cache,
                   "--json", out, "--quiet", *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


def test_ray_scan_cli_matches_local_and_writes_parquet(ray_cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster)  # the CLI joins the session's Ray instead of starting one
    sus, ref = _example_subset(tmp_path)
    local = _scan(sus, ref, tmp_path / "local.json", tmp_path / "c-local")
    ray_rep = _scan(sus, ref, tmp_path / "ray.json", tmp_path / "c-ray", "--engine", "ray", "--parquet", tmp_path / "ray.parquet",
                    "--max-report-images", "10", "--html", tmp_path / "ray.html")
    assert ray_rep["verdict"] == local["verdict"]
    # the bundle carries shadows and the reference has 60 images: EncoderMI-R, whose signal passes ran on Ray
    assert ray_rep["score"]["name"] == local["score"]["name"] == "EncoderMI-R"
    assert len(ray_rep["score"]["shadows"]) == len(local["score"]["shadows"]) >= 2
    assert ray_rep["config"]["engine"] == "ray" and local["config"]["engine"] == "local"
    assert ray_rep["aggregate"]["n_skipped"] == local["aggregate"]["n_skipped"] == 1
    # The JSON lists the 10 highest scores and says so; the aggregate covers all 40 images.
    assert ray_rep["images_listed"] == {"n_scored": 40, "n_listed": 10, "complete": False, "cap": 10, "order": "score-descending",
                                        "parquet": str(tmp_path / "ray.parquet")}
    assert local["images_listed"]["complete"] is True
    assert "n = 40" in (tmp_path / "ray.html").read_text()  # the HTML's histogram has every score, not the 10 listed
    local_scores = {r["path"]: r["score"] for r in local["images"]}
    top = sorted(local_scores.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert [r["path"] for r in ray_rep["images"]] == [p for p, _ in top]
    table = pq.read_table(tmp_path / "ray.parquet").to_pydict()
    assert len(table["path"]) == 40
    ray_scores = dict(zip(table["path"], table["score"], strict=True))
    assert ray_scores.keys() == local_scores.keys()
    assert max(abs(ray_scores[p] - local_scores[p]) for p in local_scores) <= 1e-6
    assert all(len(f) == 45 for f in table["features"])
    assert sum(table["flagged"]) == ray_rep["aggregate"]["n_flagged"]
    np.testing.assert_allclose(ray_rep["reference"]["scores"], local["reference"]["scores"], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_ray_scan_resumes_after_the_driver_is_killed(ray_cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 the driver once some shards are cached; the rerun reuses them and matches an uninterrupted scan."""
    sus, ref = _example_subset(tmp_path)
    cache = tmp_path / "cache"
    args = ["scan", sus, "-e", EXAMPLE / "encoder", "-c", EXAMPLE / "calibration", "-r", ref, "--cache", cache, "--quiet",
            "--engine", "ray", "--workers", "1", "--batch-size", "20", "--json", tmp_path / "killed.json"]
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster)
    proc = popen_cli(*args)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(cache.glob("features/*/shard-*.npz"))) < 3 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the scan finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_shards = len(list(cache.glob("features/*/shard-*.npz")))
    assert n_shards >= 3 and not (tmp_path / "killed.json").exists()
    resumed = _scan(sus, ref, tmp_path / "resumed.json", cache, "--engine", "ray", "--workers", "1", "--batch-size", "20")
    full = _scan(sus, ref, tmp_path / "full.json", tmp_path / "fresh-cache")
    assert 0 < resumed["timing"]["from_cache"] < 100  # some images came from the killed run's shards, not all
    assert resumed["verdict"] == full["verdict"]
    a = {r["path"]: r["score"] for r in resumed["images"]}
    b = {r["path"]: r["score"] for r in full["images"]}
    assert a.keys() == b.keys() and max(abs(a[p] - b[p]) for p in a) <= 1e-6


def test_parquet_table_and_capped_list_without_ray(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    from auditmi.jobs.scan import ScoredImage
    from auditmi.parquet import write_image_table
    from auditmi.pipeline import STAT_NAMES, FeatureSet, ImageRow
    from auditmi.report import cap_image_list

    rng = np.random.default_rng(0)
    n = 7
    fs = FeatureSet(rows=[ImageRow(Path(f"/x/im{i}.png"), f"{i:064x}", (10 + i, 20)) for i in range(n)],
                    features=rng.random((n, 6), dtype=np.float32), stats=rng.random((n, len(STAT_NAMES)), dtype=np.float32),
                    skipped=[], duplicates=[])
    scores = [0.5, 0.9, 0.1, 0.9, 0.3, 0.7, 0.2]
    rows = [ScoredImage(path=r.path, sha256=r.sha256, score=s, member_probability=s, member=s > 0.6, p_value=None, bh_flag=None)
            for r, s in zip(fs.rows, scores, strict=True)]
    dest = write_image_table(tmp_path / "t.parquet", rows, fs, {"n_views": 4, "n_features": 6})
    t = pq.read_table(dest)
    assert t.column("path").to_pylist() == [str(r.path) for r in rows]
    np.testing.assert_array_equal(np.array(t.column("features").to_pylist(), np.float32), fs.features)
    assert t.column("flagged").to_pylist() == [s > 0.6 for s in scores]
    assert t.column("p_value").null_count == n and t.column("width").to_pylist()[2] == 12
    assert json.loads(t.schema.metadata[b"features"]) == {"n_views": 4, "n_features": 6}
    report = {"images": [{"path": str(r.path), "score": r.score} for r in rows], "aggregate": {"n_scored": n}}
    cap_image_list(report, 3, dest)
    assert [r["path"] for r in report["images"]] == ["/x/im1.png", "/x/im3.png", "/x/im5.png"]  # ties by path
    assert report["images_listed"]["complete"] is False and report["images_listed"]["n_listed"] == 3


def test_unknown_engine_is_a_usage_error(tmp_path: Path) -> None:
    proc = run_cli("scan", EXAMPLE / "suspect", "-e", EXAMPLE / "encoder", "-c", EXAMPLE / "calibration", "--engine", "spark")
    assert proc.returncode == 2 and "unknown --engine 'spark'" in proc.stderr and "Traceback" not in proc.stderr


def test_ray_runs_several_encoders_of_two_input_sizes_in_one_run_as_the_local_engine(
        ray_cluster: str, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """compute_sets on Ray (one run: audited 'both', a shadow's signals, a 16 px encoder's features,
    so images are decoded at two working sides) gives every head the local engine's rows, and fills each cache."""
    import torch
    from test_signal_engines import assert_signals_close

    from auditmi.calibration import load_calibration
    from auditmi.encoders import load_encoder
    from auditmi.engines import EngineOptions, Head, compute_sets
    from auditmi.measures import BOTH, FEATURES, SIGNALS, Measure
    from auditmi.shadow_set import load_shadows, shadow_encoder

    cal = load_calibration(EXAMPLE / "calibration")
    cfg = cal.views
    encs = [load_encoder(str(EXAMPLE / "encoder"), "cpu"), shadow_encoder(load_shadows(cal.meta, cal.path).shadows[0], torch.device("cpu")),
            load_encoder(str(tiny_checkpoint), "cpu")]
    kinds = [BOTH, SIGNALS, FEATURES]
    sus, ref = example_subset(tmp_path, 5, 7)
    make_broken_files(sus)
    sets = [sorted(sus.iterdir()), sorted(ref.iterdir())]

    def heads(root: Path | None) -> list[Head]:
        return [Head(e, k, Measure(k, cfg.n_views).open_cache(root, e, cfg, 0) if root else None) for e, k in zip(encs, kinds, strict=True)]

    local = compute_sets(sets, heads(None), cfg, 0, EngineOptions(workers=0, batch_size=22))
    calls = []
    on_ray = compute_sets(sets, heads(tmp_path / "cache"), cfg, 0, EngineOptions("ray", workers=2, batch_size=22),
                          lambda d, t: calls.append((d, t)))
    n = len(sets[0]) + len(sets[1])
    assert calls[-1] == (n, n) and {t for _, t in calls} == {n}  # one run over both lists: one progress bar
    for h, kind in enumerate(kinds):
        for k in range(2):
            a, b = on_ray[h][k], local[h][k]
            assert [r.path for r in a.rows] == [r.path for r in b.rows] and a.skipped == b.skipped
            assert a.timing["encoders_in_run"] == 3.0
            np.testing.assert_array_equal(a.stats, b.stats)
            if kind == FEATURES:
                np.testing.assert_allclose(a.features, b.features, atol=1e-6, rtol=0)
            else:
                assert_signals_close(a.signals if kind == BOTH else a.features, b.signals if kind == BOTH else b.features, cfg.n_views)
            if kind == BOTH:
                np.testing.assert_allclose(a.features, b.features, atol=1e-6, rtol=0)
    assert len(on_ray[0][0].skipped) == 3 and on_ray[0][1].skipped == []
    again = compute_sets(sets, heads(tmp_path / "cache"), cfg, 0, EngineOptions("ray", workers=2, batch_size=22))
    assert all(again[h][k].n_from_cache == again[h][k].n for h in range(3) for k in range(2))  # the actors filled every cache


def test_ray_scan_is_one_ray_run_with_the_local_engine_results(ray_cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scan with shadows and a reference makes exactly one Ray Data run (actors start once), and
    gives the local engine's scores (1e-6), p-values and verdict."""
    import auditmi.engines.ray as ray_engine
    from auditmi.jobs.scan import ScanOptions, run_scan

    sus, ref = example_subset(tmp_path, 10, 40)
    opts = ScanOptions(encoder=str(EXAMPLE / "encoder"), calibration=EXAMPLE / "calibration", reference=[ref], workers=2, use_cache=False)
    local = run_scan([sus], opts)
    runs = []
    real = ray_engine.compute_sets_ray

    def counted(*a: object, **k: object) -> object:
        runs.append(len(a[1]))  # type: ignore[arg-type]
        return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(ray_engine, "compute_sets_ray", counted)
    on_ray = run_scan([sus], ScanOptions(**{**opts.__dict__, "engine": "ray"}))
    assert on_ray.score is not None and on_ray.score.name == "EncoderMI-R"
    assert runs == [1 + len(on_ray.score.shadows)]  # one run, every encoder in it
    assert on_ray.verdict == local.verdict
    a = {str(r.path): (r.score, r.p_value) for r in on_ray.images}
    b = {str(r.path): (r.score, r.p_value) for r in local.images}
    assert a.keys() == b.keys()
    assert max(abs(a[p][0] - b[p][0]) for p in a) <= 1e-6 and max(abs(a[p][1] - b[p][1]) for p in a) <= 1e-6  # type: ignore[operator]
    assert local.reference is not None and on_ray.reference is not None
    np.testing.assert_allclose(on_ray.reference.scores, local.reference.scores, atol=1e-6, rtol=0)


def test_ray_started_in_the_background_hands_its_error_to_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI starts Ray in a background thread; the engine's connect() waits for it and raises
    its error (a user error, with its exit code) in the caller's thread, once."""
    import threading

    import auditmi.engines.ray_connect as rc
    from auditmi.errors import InputError

    calls: list[str] = []
    gate = threading.Event()

    def failing() -> bool:
        calls.append(threading.current_thread().name)
        gate.wait(5)
        raise InputError("cannot start or reach a local Ray (test)")

    monkeypatch.setattr(rc, "_connect_now", failing)
    monkeypatch.setattr(rc, "_pending", None)
    rc.start_connecting()
    rc.start_connecting()  # idempotent: one start
    gate.set()
    with pytest.raises(InputError, match="local Ray"):
        rc.connect()
    assert calls == ["auditmi-ray-connect"]
    monkeypatch.setattr(rc, "_connect_now", lambda: False)
    assert rc.connect() is False  # a later call starts afresh, in this thread


@pytest.mark.slow
def test_cli_scan_starting_its_own_ray_in_the_background(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without RAY_ADDRESS the CLI starts a local Ray in a background thread while the scan loads;
    Ray's head processes must outlive that thread (they die with the thread that spawned them)."""
    pytest.importorskip("ray.data")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    sus, ref = example_subset(tmp_path, 6, 40)
    rep = _scan(sus, ref, tmp_path / "ray.json", tmp_path / "cache", "--engine", "ray", "--workers", "1")
    assert rep["score"]["name"] == "EncoderMI-R" and rep["config"]["engine"] == "ray"
