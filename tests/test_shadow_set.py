"""Training K shadows on seeded halves of public images and carrying them in the calibration bundle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from auditmi.errors import CalibrationError
from auditmi.shadow import TrainConfig
from auditmi.shadow_set import NO_SHADOWS_REASON, build_shadow_set, halves, load_public, load_shadows, shadow_encoder
from auditmi.views import ViewConfig
from tests.conftest import make_image


def test_halves_are_seeded_and_cover_both_sides():
    inc = halves(100, 8, seed=0)
    assert inc.shape == (8, 100) and (inc.sum(1) == 50).all()
    np.testing.assert_array_equal(inc, halves(100, 8, seed=0))
    assert not np.array_equal(inc, halves(100, 8, seed=1))
    assert (inc.any(0) & (~inc).any(0)).mean() > 0.95  # almost every image is in some shadows and out of others
    # shadow 0 is the reference-free calibration's split (default_rng(seed))
    assert set(np.flatnonzero(inc[0])) == set(np.random.default_rng(0).permutation(100)[:50])


def test_shadows_in_a_calibration_bundle(tmp_path):
    from auditmi.calibration import fit_calibration, load_calibration, save_calibration

    pub = tmp_path / "public"
    pub.mkdir()
    for i in range(20):
        Image.fromarray(make_image(20, 20, seed=i).permute(1, 2, 0).numpy()).save(pub / f"p{i:02d}.png")
    Image.fromarray(make_image(20, 20, seed=3).permute(1, 2, 0).numpy()).save(pub / "dup.png")  # same content as p03
    cfg = ViewConfig(n_views=3)
    public, skipped = load_public(sorted(pub.glob("*.png")), 16, cfg)
    assert len(public.images) == 20 and not skipped
    tcfg = TrainConfig(arch="resnet-tiny", image_size=16, epochs=1, batch_size=8, checkpoint_every=1)
    meta, files = build_shadow_set(public, 3, tcfg, cfg, seed=0, run_root=tmp_path / "runs")
    assert "default" in meta["score"]["chosen_by"]["method"]  # 20 public images are too few for the shadow game
    rng = np.random.default_rng(0)
    cal = fit_calibration(rng.normal(0.2, 1, (30, 3)), rng.normal(0, 1, (30, 3)), cfg, kinds=("T",), meta={"shadows": meta})
    save_calibration(cal, tmp_path / "cal", extra_files=files)
    loaded = load_calibration(tmp_path / "cal")
    ss = load_shadows(loaded.meta, loaded.path)
    assert ss is not None and ss.k == 3 and all(len(s.training_sha256) == 10 for s in ss.shadows)
    assert len({s.weights_sha256 for s in ss.shadows}) == 3
    enc = shadow_encoder(ss.shadows[0], torch.device("cpu"))
    assert enc.embed(torch.zeros(2, 3, 16, 16)).shape[0] == 2
    assert load_shadows({}, None) is None and "per image" in NO_SHADOWS_REASON
    # the shadows are covered by the bundle's pin: a changed weights file is refused
    w = tmp_path / "cal" / "shadow-1.safetensors"
    w.write_bytes(w.read_bytes()[:-1] + b"\0")
    with pytest.raises(CalibrationError):
        load_calibration(tmp_path / "cal")
