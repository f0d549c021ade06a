"""The EncoderMI-R scan step: cached signals for the encoder and every shadow, and the reference-free rule."""

from __future__ import annotations

import numpy as np
import torch

from auditmi.calibrated_scan import (
    cached_signals,
    reference_free_mismatch,
    run_encodermi_r,
)
from auditmi.difficulty import ScoreSpec
from auditmi.encoders.local import load_local
from auditmi.shadow_set import bundle_parts, load_shadows
from auditmi.signals import SUMMARY_NAMES
from auditmi.views import ViewConfig
from tests.conftest import make_image


def _write(folder, n, start):
    from PIL import Image

    folder.mkdir()
    for i in range(n):
        Image.fromarray(make_image(18, 22, seed=start + i).permute(1, 2, 0).numpy()).save(folder / f"i{i:03d}.png")
    return sorted(folder.glob("*.png"))


def test_cached_signals_reuse_the_cache(tmp_path, tiny_checkpoint):
    enc = load_local(tiny_checkpoint, torch.device("cpu"))
    paths = _write(tmp_path / "a", 4, 0)
    cfg = ViewConfig(n_views=3)
    first = cached_signals(paths, enc, cfg, 0, tmp_path / "cache")
    again = cached_signals(paths[::-1], enc, cfg, 0, tmp_path / "cache")
    np.testing.assert_allclose(again.raw[::-1], first.raw)
    assert again.sha256[::-1] == first.sha256


def test_run_encodermi_r_scores_suspects_against_the_reference(tmp_path, tiny_checkpoint):
    enc = load_local(tiny_checkpoint, torch.device("cpu"))
    sus = _write(tmp_path / "sus", 5, 0)
    ref = _write(tmp_path / "ref", 24, 100)
    spec = ScoreSpec(regression="ols_same", weights=[1.0 if s == "whole_mean" else 0.0 for s in SUMMARY_NAMES], folds=4)
    from auditmi.images import read_and_hash

    trained_on = [read_and_hash(ref[0])[1]]  # one reference image was a shadow's training image
    meta, files = bundle_parts([tiny_checkpoint, tiny_checkpoint], [trained_on, []], spec)
    (tmp_path / "bundle").mkdir()
    for name, write in files.items():
        write(str(tmp_path / "bundle" / name))
    ss = load_shadows({"shadows": meta}, tmp_path / "bundle")
    (tmp_path / "broken.png").write_bytes(b"not an image")  # one unreadable file in each list: skipped, rows stay aligned
    out = run_encodermi_r([*sus[:2], tmp_path / "broken.png", *sus[2:]], [tmp_path / "broken.png", *ref], enc, ss,
                          ViewConfig(n_views=3), 0, tmp_path / "cache")
    assert out.scores.suspect_scores.shape == (5,) and out.scores.reference_scores.shape == (24,)
    assert out.suspects.paths == sus and out.reference.paths == ref
    assert [s.path.name for s in out.suspects.skipped] == [s.path.name for s in out.reference.skipped] == ["broken.png"]
    assert [o["sha256"] for o in out.scores.overlap] == trained_on
    assert np.all(np.isfinite(out.scores.suspect_scores))


def test_reference_free_mismatch():
    enc = {"input_size": 224, "architecture": {"arch": "vit"}}
    assert reference_free_mismatch(enc, None) is None
    assert reference_free_mismatch({"input_size": 32, "architecture": {"arch": "cifar_resnet"}},
                                   {"input_size": 32, "architecture": {"arch": "cifar_resnet"}}) is None
    why = reference_free_mismatch(enc, {"input_size": 32, "architecture": {"arch": "cifar_resnet"}})
    assert "input size 224" in why and "architecture family vit" in why and "--reference" in why and "after the encoder's release" in why


def test_bundle_without_shadows_scans_with_tvs_and_says_why_not_calibrated(tmp_path):
    """A bundle built without shadows (as every bundle before EncoderMI-R) keeps working with the
    reference-free classifier, and the report says why it cannot calibrate per image."""
    import json

    from tests.e2e_support import CALIBRATE_ARGS, make_noise_images, run_cli

    make_noise_images(tmp_path / "public", 24, seed=0)
    make_noise_images(tmp_path / "sus", 6, seed=1)
    make_noise_images(tmp_path / "ref", 12, seed=2)
    proc = run_cli("calibrate", "--shadow-data", tmp_path / "public", "--out", tmp_path / "cal", "--shadows", "0", *CALIBRATE_ARGS,
                   cache_dir=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    assert "shadows" not in json.loads((tmp_path / "cal" / "calibration.json").read_text())
    enc = next((tmp_path / "cal" / "shadow-encoder").glob("*/final"))
    proc = run_cli("scan", tmp_path / "sus", "-e", enc, "-c", tmp_path / "cal", "--reference", tmp_path / "ref", "--json", "-",
                   "--device", "cpu", "--quiet", cache_dir=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    score = json.loads(proc.stdout)["score"]
    assert score["calibrated"] is False and "cannot be calibrated per image" in score["note"]
