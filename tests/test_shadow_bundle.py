"""Shadow encoders inside a calibration bundle: pinned, never pickled, old bundles explained."""

from __future__ import annotations

import json

import pytest

from auditmi.difficulty import ScoreSpec
from auditmi.errors import CalibrationError
from auditmi.shadow_bundle import (
    NO_SHADOWS_REASON,
    has_shadows,
    load_shadows,
    save_shadows,
)


def test_round_trip_and_overlap(tmp_path, tiny_checkpoint):
    spec = ScoreSpec(regression="ols_same")
    save_shadows(tmp_path / "bundle", [tiny_checkpoint, tiny_checkpoint], [["a", "b"], ["b", "c"]], spec, ["a", "b", "c", "d"])
    assert has_shadows(tmp_path / "bundle")
    ss = load_shadows(tmp_path / "bundle")
    assert ss is not None and ss.k == 2 and ss.spec.regression == "ols_same"
    assert ss.overlap(["b", "c", "z"]) == {"b": [0, 1], "c": [1]}
    assert not list((tmp_path / "bundle").rglob("*.pt")) and not list((tmp_path / "bundle").rglob("*.pkl"))


def test_old_bundle_and_tampering(tmp_path, tiny_checkpoint):
    assert load_shadows(tmp_path) is None and "cannot be calibrated per image" in NO_SHADOWS_REASON
    root = save_shadows(tmp_path / "b", [tiny_checkpoint], [[]], ScoreSpec())
    w = root / "shadow-0" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-1] + b"\0")
    with pytest.raises(CalibrationError, match="sha256"):
        load_shadows(tmp_path / "b")
    idx = json.loads((root / "shadows.json").read_text())
    idx["shadows"][0]["dir"] = "../../elsewhere"
    (root / "shadows.json").write_text(json.dumps(idx))
    with pytest.raises(CalibrationError, match="outside"):
        load_shadows(tmp_path / "b")
