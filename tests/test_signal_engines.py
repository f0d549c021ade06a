"""EncoderMI-R's raw signals through the local engine: same numbers as a direct one-image-at-a-time
computation, for the audited encoder and a bundle shadow, with 1 or 2 workers; a killed signal
pass resumes from its cached shards. (The Ray engine's signal pass: tests/test_ray_engine.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "fashion"


def direct_signals(paths: list[Path], enc, cfg, seed: int) -> np.ndarray:
    """Raw signals computed the plain way (the single-process path the engines replaced): each
    image alone, views and whole image rendered separately, the encoder's raw output."""
    from auditmi.images import decode, read_and_hash
    from auditmi.signals import raw_signals, whole_params
    from auditmi.views import ViewParams, pad_batch, params_for_image, render_views, working_side

    rows = []
    for p in paths:
        data, sha = read_and_hash(p)
        pix, _ = decode(data, working_side(enc.input_size, cfg))
        imgs, sizes = pad_batch([torch.from_numpy(np.ascontiguousarray(pix)).permute(2, 0, 1).contiguous()])
        with torch.inference_mode():
            params = ViewParams.cat([params_for_image(pix.shape[0], pix.shape[1], sha, seed, cfg)])
            views = render_views(imgs, params, enc.input_size, enc.mean, enc.std)
            whole = render_views(imgs, whole_params(sizes[:, 0], sizes[:, 1]), enc.input_size, enc.mean, enc.std)
            ev, ew = enc.forward(views).float().flatten(1), enc.forward(whole).float().flatten(1)
        rows.append(raw_signals(ev[None], ew).numpy())
    return np.concatenate(rows)


def assert_signals_close(actual: np.ndarray, desired: np.ndarray, n_views: int) -> None:
    """Cosines agree to 1e-6; raw norms (about 1-10 here) to a relative 1e-6 (float32 rounding)."""
    from auditmi.signals import layout

    lay = layout(n_views)
    cos = np.r_[np.arange(actual.shape[1])[lay["pair"]], np.arange(actual.shape[1])[lay["whole"]]]
    np.testing.assert_allclose(actual[:, cos], desired[:, cos], atol=1e-6, rtol=0)
    norms = np.setdiff1d(np.arange(actual.shape[1]), cos)
    np.testing.assert_allclose(actual[:, norms], desired[:, norms], rtol=1e-6, atol=0)


@pytest.fixture(scope="module")
def example_encoders():
    """The bundled example encoder and the first shadow of its calibration bundle."""
    from auditmi.calibration import load_calibration
    from auditmi.encoders.local import load_local
    from auditmi.shadow_set import load_shadows, shadow_encoder

    cal = load_calibration(EXAMPLE / "calibration")
    shadows = load_shadows(cal.meta, cal.path)
    assert shadows is not None and shadows.k >= 2
    cpu = torch.device("cpu")
    return cal.views, {"encoder": load_local(EXAMPLE / "encoder", cpu), "shadow": shadow_encoder(shadows.shadows[0], cpu)}


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("which", ["encoder", "shadow"])
def test_local_engine_signals_match_the_direct_computation(example_encoders, tmp_path: Path, workers: int, which: str) -> None:
    from auditmi.cache import FeatureCache
    from auditmi.engines import compute_features
    from auditmi.measures import signal_cache_key
    from auditmi.signals import n_raw

    cfg, encs = example_encoders
    enc = encs[which]
    paths = sorted((EXAMPLE / "suspect").glob("*.png"))[:7]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    cache = FeatureCache(tmp_path / "cache", signal_cache_key(enc, cfg, 0))
    # batch_size 22 = two images (10 views + the whole image each) per chunk: 4 chunks, so 2 workers really fork
    fs = compute_features([*paths, bad], enc, cfg, seed=0, batch_size=22, cache=cache, num_workers=workers, what="signals")
    assert fs.timing["workers"] == (workers if workers > 1 else 0)  # a lone worker runs in this process
    assert [r.path for r in fs.rows] == paths and len(fs.skipped) == 1 and fs.skipped[0].path == bad
    assert fs.features.shape == (7, n_raw(cfg.n_views)) and fs.stats.shape == (7, 0)
    assert_signals_close(fs.features, direct_signals(paths, enc, cfg, 0), cfg.n_views)
    again = compute_features(paths, enc, cfg, seed=0, batch_size=22, cache=cache, num_workers=workers, what="signals")
    assert again.n_from_cache == 7
    np.testing.assert_array_equal(again.features, fs.features)


def test_a_feature_cache_is_refused_for_signals(example_encoders, tmp_path: Path) -> None:
    from auditmi.cache import FeatureCache
    from auditmi.engines import compute_features
    from auditmi.pipeline import cache_key

    cfg, encs = example_encoders
    cache = FeatureCache(tmp_path / "cache", cache_key(encs["encoder"], cfg, 0))
    with pytest.raises(ValueError, match="not one of signals"):
        compute_features(sorted((EXAMPLE / "suspect").glob("*.png"))[:2], encs["encoder"], cfg, cache=cache, what="signals")


_KILLED_PASS = """
import sys
from pathlib import Path
import torch
from auditmi.calibration import load_calibration
from auditmi.calibrated_scan import cached_signals
from auditmi.engines import EngineOptions
from auditmi.encoders.local import load_local
cal = load_calibration(Path(sys.argv[1]) / "calibration")
paths = sorted(Path(sys.argv[2]).glob("*.png"))
enc = load_local(Path(sys.argv[1]) / "encoder", torch.device("cpu"))
cached_signals(paths, enc, cal.views, 0, Path(sys.argv[3]), engine=EngineOptions(workers=2, batch_size=11))
"""


def test_killed_signal_pass_recomputes_only_the_missing_images(example_encoders, tmp_path: Path) -> None:
    """kill -9 a signal pass once some shards are written; the rerun embeds only the other images
    and gives the same signals as an uninterrupted pass."""
    from auditmi.cache import FeatureCache
    from auditmi.engines import compute_features
    from auditmi.measures import signal_cache_key

    cfg, encs = example_encoders
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((EXAMPLE / "reference").glob("*.png"))[:120]:
        shutil.copy(p, images / p.name)
    paths = sorted(images.glob("*.png"))
    root = tmp_path / "cache"
    cache = FeatureCache(root, signal_cache_key(encs["encoder"], cfg, 0))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with open(tmp_path / "killed.log", "w") as log:  # a file, not a pipe: an orphaned worker may keep a pipe open
        proc = subprocess.Popen([sys.executable, "-c", _KILLED_PASS, str(EXAMPLE), str(images), str(root)], stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and len(cache.shards()) < 5:
            time.sleep(0.02)
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -9, f"the signal pass ended before it could be killed: {(tmp_path / 'killed.log').read_text()[-2000:]}"
    done = set(cache.load())
    assert 0 < len(done) < len(paths)
    resumed = compute_features(paths, encs["encoder"], cfg, seed=0, batch_size=11, cache=cache, num_workers=2, what="signals")
    assert resumed.n_from_cache == len(done)  # only the missing images were embedded
    assert resumed.timing["views_encoded"] == (len(paths) - len(done)) * (cfg.n_views + 1)
    fresh = compute_features(paths, encs["encoder"], cfg, seed=0, batch_size=11, num_workers=2, what="signals")
    assert_signals_close(resumed.features, fresh.features, cfg.n_views)
