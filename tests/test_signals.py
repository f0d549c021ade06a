"""Richer black-box signals: raw vectors, summaries, and the image -> signal path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auditmi.features import pairwise_cosine
from auditmi.signals import (
    SUMMARY_NAMES,
    layout,
    n_raw,
    pairwise_block,
    raw_signals,
    summaries,
)


def test_raw_layout_and_pairwise_block_matches_encodermi_features():
    g = torch.Generator().manual_seed(0)
    views = torch.randn(3, 5, 8, generator=g) * 3
    whole = torch.randn(3, 8, generator=g)
    raw = raw_signals(views, whole).numpy()
    assert raw.shape == (3, n_raw(5)) == (3, 10 + 5 + 5 + 1)
    np.testing.assert_allclose(pairwise_block(raw, 5), pairwise_cosine(views).numpy(), atol=1e-6)
    lay = layout(5)
    np.testing.assert_allclose(raw[:, lay["norm_view"]], views.norm(dim=-1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(raw[:, lay["norm_whole"]][:, 0], whole.norm(dim=-1).numpy(), rtol=1e-6)
    # view-to-whole cosine is scale-free and 1 for a view equal to the whole image
    v2 = views.clone()
    v2[:, 0] = whole * 7
    raw2 = raw_signals(v2, whole).numpy()
    np.testing.assert_allclose(raw2[:, lay["whole"]][:, 0], 1.0, atol=1e-6)


def test_summaries_order_and_norm_logs():
    views = torch.ones(2, 4, 6)
    views[1] *= 2
    whole = torch.ones(2, 6)
    s = summaries(raw_signals(views, whole).numpy(), 4)
    assert s.shape == (2, len(SUMMARY_NAMES))
    d = dict(zip(SUMMARY_NAMES, s[1], strict=True))
    assert d["pair_mean"] == pytest.approx(1.0) and d["whole_min"] == pytest.approx(1.0)
    # log-norms: scaling the embedding by 2 adds log 2
    assert s[1, SUMMARY_NAMES.index("lognorm_view_mean")] - s[0, SUMMARY_NAMES.index("lognorm_view_mean")] == pytest.approx(np.log(2), rel=1e-5)
    with pytest.raises(ValueError):
        summaries(np.zeros((2, 5)), 4)


def test_compute_signals_matches_scan_features(tmp_path, tiny_image_dir, tiny_checkpoint):
    from auditmi.encoders.local import load_local
    from auditmi.pipeline import compute_features
    from auditmi.signals import compute_signals
    from auditmi.views import ViewConfig

    paths = sorted(tiny_image_dir.glob("*.png"))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    enc = load_local(tiny_checkpoint, torch.device("cpu"))
    cfg = ViewConfig(n_views=4)
    s = compute_signals(paths + [tmp_path / "bad.png"], enc, cfg, seed=3, num_workers=0)
    f = compute_features(paths, enc, cfg, seed=3, num_workers=0)
    assert len(s.skipped) == 1 and s.sha256 == [r.sha256 for r in f.rows]
    np.testing.assert_allclose(pairwise_block(s.raw, 4), f.features, atol=1e-5)
    # an image's signals do not depend on the images batched with it
    one = compute_signals(paths[1:2], enc, cfg, seed=3)
    np.testing.assert_allclose(one.raw[0], s.raw[1], atol=1e-5)
