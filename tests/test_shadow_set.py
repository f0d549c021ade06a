"""Training K shadows on seeded halves of public images and carrying them in the bundle."""

from __future__ import annotations

import numpy as np
from PIL import Image

from auditmi.shadow import TrainConfig
from auditmi.shadow_bundle import load_shadows
from auditmi.shadow_set import build_shadow_set, halves, load_public
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


def test_build_shadow_set_writes_pinned_shadows(tmp_path):
    pub = tmp_path / "public"
    pub.mkdir()
    for i in range(20):
        Image.fromarray(make_image(20, 20, seed=i).permute(1, 2, 0).numpy()).save(pub / f"p{i:02d}.png")
    Image.fromarray(make_image(20, 20, seed=3).permute(1, 2, 0).numpy()).save(pub / "dup.png")  # same content as p03
    cfg = ViewConfig(n_views=3)
    public, skipped = load_public(sorted(pub.glob("*.png")), 16, cfg)
    assert len(public.images) == 20 and not skipped
    tcfg = TrainConfig(arch="resnet-tiny", image_size=16, epochs=1, batch_size=8, checkpoint_every=1)
    ss = build_shadow_set(public, tmp_path / "bundle", 3, tcfg, cfg, seed=0, run_root=tmp_path / "runs")
    assert ss.k == 3 and load_shadows(tmp_path / "bundle").k == 3
    assert all(len(s.training_sha256) == 10 for s in ss.shadows)
    assert "default" in ss.spec.chosen_by["method"]  # 20 public images are too few for the shadow game
    assert len({s.weights_sha256 for s in ss.shadows}) == 3
