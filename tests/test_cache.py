"""The feature cache, end to end: reuse, --no-cache, kill -9 and resume, corrupt shards.

CLI runs go through ``python -m auditmi`` (see e2e_support.py); the shared tiny calibration
bundle's shadow encoder is the audited encoder.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from auditmi.cache import COMPACT_AT, FeatureCache
from auditmi.errors import InputError

from e2e_support import (  # noqa: F401  (``calibrated`` is a fixture)
    Calibrated,
    calibrated,
    make_noise_images,
    popen_cli,
    run_cli,
)

N_IMAGES = 12


def _rows(report: dict[str, Any]) -> list[tuple]:
    """Everything per image that must not depend on the cache."""
    return [(r["path"], r["sha256"], r["score"], r["member_probability"], r["decision"]) for r in report["images"]]


def _feature_dirs(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "features").glob("*") if p.is_dir())


class CacheRuns:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.images = root / "images"
        make_noise_images(self.images, N_IMAGES, seed=5, prefix="c")
        self.cache = root / "cache"
        self.nocache_dir = root / "never-written"
        self.env_cache = root / "env-cache"
        self.garbage: list[Path] = []
        self.reports: dict[str, dict[str, Any]] = {}
        self.procs: dict[str, Any] = {}


@pytest.fixture(scope="module")
def runs(calibrated: Calibrated, tmp_path_factory: pytest.TempPathFactory) -> CacheRuns:
    """first (fills the cache), --no-cache (concurrently), then second (after planting corrupt shards)."""
    r = CacheRuns(tmp_path_factory.mktemp("cache-runs"))
    base = ["scan", r.images, "-e", calibrated.encoder, "-c", calibrated.bundle, "--quiet", "--device", "cpu"]
    first = popen_cli(*base, "--json", r.root / "first.json", "--cache", r.cache, cache_dir=r.env_cache)
    nocache = popen_cli(*base, "--json", r.root / "nocache.json", "--cache", r.nocache_dir, "--no-cache", cache_dir=r.env_cache)
    for name, p in (("first", first), ("nocache", nocache)):
        out, err = p.communicate(timeout=300)
        r.procs[name] = (p.returncode, out, err)
    dirs = _feature_dirs(r.cache)
    if dirs:  # corrupt shards a crashed disk or a foreign tool could leave behind
        g1 = dirs[0] / "shard-00000000000000000000-garbage.npz"
        g1.write_bytes(np.random.default_rng(0).bytes(300))
        g2 = dirs[0] / "shard-00000000000000000001-empty.npz"
        g2.write_bytes(b"")
        r.garbage = [g1, g2]
    p = run_cli(*base, "--json", r.root / "second.json", "--cache", r.cache, cache_dir=r.env_cache)
    r.procs["second"] = (p.returncode, p.stdout, p.stderr)
    for name, (rc, _, err) in r.procs.items():
        assert rc == 0, f"{name} scan failed (rc={rc}):\n{err}"
        assert "Traceback" not in err, err
        r.reports[name] = json.loads((r.root / f"{name}.json").read_text())
    return r


def test_first_scan_fills_the_cache(runs: CacheRuns) -> None:
    first = runs.reports["first"]
    assert first["timing"]["from_cache"] == 0
    dirs = _feature_dirs(runs.cache)
    assert len(dirs) == 1
    assert (dirs[0] / "key.json").is_file()
    assert [p for p in dirs[0].glob("shard-*.npz") if p not in runs.garbage]
    assert first["config"]["cache"] == str(dirs[0])


def test_second_identical_scan_reuses_the_cache(runs: CacheRuns) -> None:
    first, second = runs.reports["first"], runs.reports["second"]
    assert second["timing"]["from_cache"] == N_IMAGES
    assert second["timing"]["suspect"]["views_encoded"] == 0  # the encoder was not run at all
    assert _rows(second) == _rows(first)
    assert second["verdict"] == first["verdict"]


def test_corrupt_shards_are_ignored_not_fatal(runs: CacheRuns) -> None:
    assert runs.garbage, "the first scan wrote no cache folder to plant corrupt shards in"
    rc, _, err = runs.procs["second"]
    assert rc == 0 and "Traceback" not in err
    assert runs.reports["second"]["timing"]["from_cache"] == N_IMAGES


def test_no_cache_writes_nothing_and_scores_the_same(runs: CacheRuns) -> None:
    nc = runs.reports["nocache"]
    assert not runs.nocache_dir.exists(), "--no-cache created the --cache folder"
    assert not runs.env_cache.exists(), "--no-cache wrote to $AUDITMI_CACHE_DIR"
    assert nc["config"]["cache"] is None
    assert nc["timing"]["from_cache"] == 0
    assert _rows(nc) == _rows(runs.reports["first"])


def test_killed_scan_resumes_with_identical_results(calibrated: Calibrated, tmp_path: Path) -> None:
    """kill -9 mid-scan leaves only complete shards; re-running resumes and matches a clean run exactly."""
    images = tmp_path / "many"
    make_noise_images(images, 200, seed=11, prefix="m")
    cache = tmp_path / "cache"
    base = ["scan", images, "-e", calibrated.encoder, "-c", calibrated.bundle, "--quiet", "--device", "cpu",
            "--batch-size", str(4)]  # 4 views per pass: one image per shard, so there is time to interrupt
    clean = popen_cli(*base, "--no-cache", "--json", tmp_path / "clean.json", cache_dir=tmp_path / "unused")
    # Output to files, not pipes: the killed scan's orphaned decoding worker may keep a pipe open.
    log = open(tmp_path / "killed.log", "w")
    killed = popen_cli(*base, "--cache", cache, "--json", tmp_path / "killed.json", cache_dir=tmp_path / "unused",
                       stdout=log, stderr=log)
    n_at_kill = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and killed.poll() is None:
        n_at_kill = len(list(cache.glob("features/*/shard-*.npz")))
        if n_at_kill >= 5:
            killed.kill()  # SIGKILL: no cleanup handler runs
            break
        time.sleep(0.01)
    killed.wait(timeout=60)
    log.close()
    assert killed.returncode == -9, f"the scan ended before it could be interrupted (rc={killed.returncode}, {n_at_kill} shards)"
    assert not (tmp_path / "killed.json").exists()

    shards = list(cache.glob("features/*/shard-*.npz"))
    assert len(shards) >= n_at_kill
    for p in shards:  # every file that looks like a shard is complete and readable
        with np.load(p, allow_pickle=False) as z:
            assert len(z["sha256"]) == len(z["features"]) == len(z["stats"]) >= 1
    cached_images = sum(len(np.load(p, allow_pickle=False)["sha256"]) for p in shards)
    assert cached_images < 200

    resumed = run_cli(*base, "--cache", cache, "--json", tmp_path / "resumed.json", cache_dir=tmp_path / "unused")
    assert resumed.returncode == 0, resumed.stderr
    out, err = clean.communicate(timeout=300)
    assert clean.returncode == 0, err
    r_resumed = json.loads((tmp_path / "resumed.json").read_text())
    r_clean = json.loads((tmp_path / "clean.json").read_text())
    assert r_resumed["timing"]["from_cache"] == cached_images
    assert len(r_resumed["images"]) == 200
    assert _rows(r_resumed) == _rows(r_clean)
    assert r_resumed["verdict"] == r_clean["verdict"]
    # Leftover temporary files of the killed write are never taken for shards.
    for p in cache.glob("features/*/*"):
        # (temporaries: "tmp-*" from older writers, ".shard-*.tmp" from the atomic writer in auditmi/_io.py)
        assert p.name == "key.json" or p.name.startswith("shard-") or p.name.startswith("tmp-") or (
            p.name.startswith(".shard-") and p.name.endswith(".tmp")), p.name


# ------------------------------------------------------------------------------ FeatureCache (unit)

KEY = {"encoder": "test-encoder", "views": {"n_views": 4}, "features": {"n_features": 6}, "seed": 0}


def _entries(n: int, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shas = [f"{seed:02d}{i:062x}" for i in range(n)]
    return shas, rng.random((n, 6), dtype=np.float32), rng.random((n, 3), dtype=np.float32)


def test_cache_round_trip_is_exact(tmp_path: Path) -> None:
    c = FeatureCache(tmp_path, KEY)
    shas, f, st = _entries(5)
    c.put(shas, f, st)
    got = FeatureCache(tmp_path, KEY).load()
    assert list(got) == shas
    for i, s in enumerate(shas):
        assert np.array_equal(got[s][0], f[i]) and np.array_equal(got[s][1], st[i])


def test_cache_key_separates_encoders_and_seeds(tmp_path: Path) -> None:
    a = FeatureCache(tmp_path, KEY)
    b = FeatureCache(tmp_path, {**KEY, "seed": 1})
    c = FeatureCache(tmp_path, {**KEY, "encoder": "other"})
    assert len({a.dir, b.dir, c.dir}) == 3
    a.put(*_entries(2))
    assert b.load() == {} and c.load() == {}


def test_garbage_and_temporary_files_are_not_shards(tmp_path: Path) -> None:
    c = FeatureCache(tmp_path, KEY)
    shas, f, st = _entries(3)
    c.put(shas, f, st)
    (c.dir / "shard-00000000000000000000-x.npz").write_bytes(b"\x00garbage" * 10)
    (c.dir / "shard-00000000000000000001-y.npz").write_bytes(b"")
    (c.dir / "tmp-abc123.npz").write_bytes(b"half a write")
    np.savez(c.dir / "shard-00000000000000000002-z.npz", unrelated=np.arange(3))  # valid npz, wrong contents
    assert all(p.name.startswith("shard-") for p in c.shards())
    assert set(c.load()) == set(shas)


def test_shard_with_wrong_feature_length_is_ignored(tmp_path: Path) -> None:
    """A readable shard whose arrays do not fit this cache key must not poison the scan."""
    c = FeatureCache(tmp_path, KEY)
    shas, f, st = _entries(3)
    c.put(shas, f, st)
    bad_shas = [f"ff{i:062x}" for i in range(2)]
    np.savez(c.dir / "shard-00000000000000000003-w.npz", sha256=np.array(bad_shas, dtype="U64"),
             features=np.zeros((2, 9), np.float32), stats=np.zeros((2, 3), np.float32))
    np.savez(c.dir / "shard-00000000000000000004-v.npz", sha256=np.array(bad_shas, dtype="U64"),
             features=np.zeros((1, 6), np.float32), stats=np.zeros((1, 3), np.float32))
    got = c.load()
    assert set(got) == set(shas)


def test_many_shards_are_compacted_without_losing_entries(tmp_path: Path) -> None:
    c = FeatureCache(tmp_path, KEY)
    expected: dict[str, np.ndarray] = {}
    for k in range(COMPACT_AT):
        shas, f, st = _entries(2, seed=k)
        c.put(shas, f, st)
        expected.update({s: f[i] for i, s in enumerate(shas)})
    assert len(c.shards()) == COMPACT_AT
    got = c.load()
    assert len(c.shards()) == 1
    again = FeatureCache(tmp_path, KEY).load()
    for d in (got, again):
        assert set(d) == set(expected)
        assert all(np.array_equal(d[s][0], expected[s]) for s in expected)


def test_cache_root_that_is_a_file_is_a_user_error(tmp_path: Path) -> None:
    f = tmp_path / "not-a-folder"
    f.write_text("x")
    with pytest.raises(InputError, match="--no-cache"):
        FeatureCache(f, KEY)


def test_stale_temporaries_of_killed_writers_are_cleaned(tmp_path):
    import time as _time

    from auditmi.cache import FeatureCache

    c = FeatureCache(tmp_path, {"k": 1})
    old = c.dir / "tmp-old.npz"
    new = c.dir / "tmp-new.npz"
    old.write_bytes(b"partial")
    new.write_bytes(b"partial")
    past = _time.time() - 2 * 3600
    os.utime(old, (past, past))
    assert c.load() == {}
    assert not old.exists(), "a temp file older than an hour is left behind"
    assert new.exists(), "a fresh temp file (maybe a live writer's) must not be deleted"
