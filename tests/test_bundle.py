"""The versioned-bundle helper (auditmi.bundle) and the bundles built on it: calibrations and
encoder checkpoints are pinned as a whole (issue 14 item 6), strictly validated, and committed
atomically (issue 14 item 9)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import auditmi.bundle as B
from auditmi.calibration import ARRAYS_NAME, META_NAME, Calibration, fit_calibration, load_calibration, save_calibration
from auditmi.encoders.local import CONFIG_NAME, WEIGHTS_NAME, load_backbone
from auditmi.errors import EXIT_CALIBRATION, EXIT_ENCODER, CalibrationError, EncoderUnavailableError, InputError
from auditmi.views import ViewConfig

VIEWS = 4
NF = VIEWS * (VIEWS - 1) // 2
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fitted() -> Calibration:
    rng = np.random.default_rng(0)
    members = np.clip(rng.normal(0.8, 0.1, (60, NF)), -1, 1).astype(np.float32)
    non_members = np.clip(rng.normal(0.7, 0.12, (60, NF)), -1, 1).astype(np.float32)
    return fit_calibration(members, non_members, ViewConfig(n_views=VIEWS), kinds=("T", "V"), seed=0,
                           attack_options={"V": {"epochs": 2}})


@pytest.fixture
def bundle(fitted: Calibration, tmp_path: Path) -> Path:
    return save_calibration(fitted, tmp_path / "bundle")


def _edit(folder: Path, name: str, edit: Callable[[dict[str, Any]], Any], repin: bool = False) -> None:
    meta = json.loads((folder / name).read_text())
    edit(meta)
    if repin:  # a pinned bundle with a bad field: what a buggy writer (or a deliberate re-pin) produces
        meta = B.pin(meta, meta["files"])
    (folder / name).write_text(json.dumps(meta, allow_nan=True))


# ------------------------------------------------------------------------------ pinning the metadata

TAMPERING = {
    "views-augmentation-off": lambda m: m["views"].update(jitter_p=0.0, gray_p=0.0, flip_p=0.0),
    "forged-roc-auc": lambda m: m["attacks"]["T"]["heldout_metrics"].__setitem__("roc_auc", 0.999),
    "default-attack-Z": lambda m: m.__setitem__("default_attack", "Z"),
    "created": lambda m: m.__setitem__("created", "2000-01-01T00:00:00+00:00"),
    "extra-field": lambda m: m.__setitem__("note", "hi"),
}


@pytest.mark.parametrize("edit", list(TAMPERING.values()), ids=list(TAMPERING))
def test_any_edit_of_calibration_json_is_refused(bundle: Path, edit: Callable) -> None:
    _edit(bundle, META_NAME, edit)
    with pytest.raises(CalibrationError, match="was edited after it was written") as ei:
        load_calibration(bundle)
    assert ei.value.exit_code == EXIT_CALIBRATION


def test_any_edit_of_encoder_json_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, ck)
    _edit(ck, CONFIG_NAME, lambda c: c.__setitem__("mean", [0.4, 0.4, 0.4]))
    with pytest.raises(EncoderUnavailableError, match="was edited after it was written") as ei:
        load_backbone(ck)
    assert ei.value.exit_code == EXIT_ENCODER


def test_cli_refuses_a_tampered_calibration_with_exit_3(bundle: Path, tiny_checkpoint: Path, tiny_image_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    from conftest import make_image

    ref = tmp_path / "reference"
    ref.mkdir()
    for i in range(6):
        Image.fromarray(make_image(24, 24, seed=900 + i).permute(1, 2, 0).numpy()).save(ref / f"r{i}.png")
    _edit(bundle, META_NAME, TAMPERING["views-augmentation-off"])
    proc = subprocess.run(
        [sys.executable, "-m", "auditmi", "scan", str(tiny_image_dir), "--encoder", str(tiny_checkpoint),
         "--calibration", str(bundle), "--reference", str(ref), "--no-cache"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == EXIT_CALIBRATION, proc.stderr
    assert "edited" in proc.stderr + proc.stdout and "Traceback" not in proc.stderr


def test_bundle_of_the_previous_release_is_refused_with_how_to_rebuild_or_repin(bundle: Path) -> None:
    arrays = (bundle / ARRAYS_NAME).read_bytes()
    _edit(bundle, META_NAME, lambda m: m.pop(B.PIN_KEY))  # what 0.1.0 wrote: no metadata pin
    with pytest.raises(CalibrationError, match="without a bundle_sha256") as ei:
        load_calibration(bundle)
    assert "auditmi calibrate" in str(ei.value) and "python -m auditmi.bundle repin" in str(ei.value)
    B.repin(bundle)
    assert load_calibration(bundle).attacks
    assert (bundle / ARRAYS_NAME).read_bytes() == arrays


def test_repin_refuses_data_files_that_changed(bundle: Path) -> None:
    _edit(bundle, META_NAME, lambda m: m.pop(B.PIN_KEY))
    data = bytearray((bundle / ARRAYS_NAME).read_bytes())
    data[-1] ^= 1
    (bundle / ARRAYS_NAME).write_bytes(bytes(data))
    with pytest.raises(InputError, match="not re-pinned"):
        B.repin(bundle)


def test_example_bundles_are_pinned() -> None:
    load_calibration(REPO / "examples/fashion/calibration")
    load_backbone(REPO / "examples/fashion/encoder")


# ------------------------------------------------------------------------------ strict validation

BAD_CALIBRATION = {
    "no-accuracy-threshold": lambda m: m["attacks"]["T"]["thresholds"].pop("accuracy"),
    "minus-infinity-threshold": lambda m: m["attacks"]["T"]["thresholds"].__setitem__("accuracy", float("-inf")),
    "nan-threshold": lambda m: m["attacks"]["T"]["thresholds"].__setitem__("fpr=0.01", float("nan")),
    "string-threshold": lambda m: m["attacks"]["T"]["thresholds"].__setitem__("accuracy", "0.5"),
    "metrics-list": lambda m: m["attacks"]["T"].__setitem__("heldout_metrics", [1, 2]),
    "metric-string": lambda m: m["attacks"]["T"]["heldout_metrics"].__setitem__("roc_auc", "high"),
    "metric-out-of-range": lambda m: m["attacks"]["T"]["heldout_metrics"].__setitem__("roc_auc", 7.0),
    "roc-string": lambda m: m["attacks"]["T"].__setitem__("roc", "curve"),
    "roc-lengths": lambda m: m["attacks"]["T"]["roc"].__setitem__("tpr", [0.5]),
    "roc-nan": lambda m: m["attacks"]["T"]["roc"]["fpr"].__setitem__(0, float("nan")),
    "unknown-default-attack": lambda m: m.__setitem__("default_attack", "Z"),
    "attacks-list": lambda m: m.__setitem__("attacks", []),
}


@pytest.mark.parametrize("edit", list(BAD_CALIBRATION.values()), ids=list(BAD_CALIBRATION))
def test_pinned_but_invalid_calibration_is_a_clear_calibration_error(bundle: Path, edit: Callable) -> None:
    _edit(bundle, META_NAME, edit, repin=True)
    with pytest.raises(CalibrationError) as ei:
        load_calibration(bundle)
    assert "edited" not in str(ei.value)  # refused by validation, not by the pin


def test_unknown_default_attack_no_longer_falls_back(bundle: Path) -> None:
    _edit(bundle, META_NAME, BAD_CALIBRATION["unknown-default-attack"], repin=True)
    with pytest.raises(CalibrationError, match="default_attack 'Z'"):
        load_calibration(bundle)


@pytest.mark.parametrize("what", ["calibration", "encoder"])
def test_unreadable_safetensors_is_a_clear_error(bundle: Path, tiny_checkpoint: Path, tmp_path: Path, what: str) -> None:
    if what == "calibration":
        folder, meta, data, err = bundle, META_NAME, ARRAYS_NAME, CalibrationError
    else:
        folder, meta, data, err = tmp_path / "ck", CONFIG_NAME, WEIGHTS_NAME, EncoderUnavailableError
        shutil.copytree(tiny_checkpoint, folder)
    (folder / data).write_bytes(b"\xff" * 64)  # garbage, then re-pinned: only the reader can notice
    _edit(folder, meta, lambda m: m["files"].__setitem__(data, B.sha256_file(folder / data)), repin=True)
    if what == "encoder":
        _edit(folder, meta, lambda m: m.__setitem__("weights_sha256", m["files"][data]), repin=True)
    with pytest.raises(err, match="cannot read"):
        load_calibration(folder) if what == "calibration" else load_backbone(folder)


BAD_ENCODER = {
    "weights-outside": lambda c: c.__setitem__("weights", "../model.safetensors"),
    "weights-number": lambda c: c.__setitem__("weights", 7),
    "input-size-huge": lambda c: c.__setitem__("input_size", 6000),
    "input-size-zero": lambda c: c.__setitem__("input_size", 0),
    "input-size-string": lambda c: c.__setitem__("input_size", "32"),
    "input-size-bool": lambda c: c.__setitem__("input_size", True),
    "mean-short": lambda c: c.__setitem__("mean", [0.5, 0.5]),
    "mean-nan": lambda c: c.__setitem__("mean", [0.5, float("nan"), 0.5]),
    "std-zero": lambda c: c.__setitem__("std", [0, 0, 0]),
    "arch-not-a-dict": lambda c: c.__setitem__("architecture", "resnet"),
    "arch-huge-width": lambda c: c["architecture"].__setitem__("width", 10**9),
    "arch-string-width": lambda c: c["architecture"].__setitem__("width", "8"),
    "arch-unknown": lambda c: c["architecture"].__setitem__("arch", "transformer-xxl"),
}


@pytest.mark.parametrize("edit", list(BAD_ENCODER.values()), ids=list(BAD_ENCODER))
def test_pinned_but_invalid_encoder_json_is_a_clear_encoder_error(tiny_checkpoint: Path, tmp_path: Path, edit: Callable) -> None:
    ck = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, ck)
    _edit(ck, CONFIG_NAME, edit, repin=True)
    with pytest.raises(EncoderUnavailableError) as ei:
        load_backbone(ck)
    assert "edited" not in str(ei.value)


# ------------------------------------------------------------------------------ atomic commit


def test_dying_mid_write_keeps_the_old_bundle(bundle: Path, fitted: Calibration, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}

    def dies(arrays: dict, path: str, *a: Any, **k: Any) -> None:
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt

    import safetensors.numpy

    monkeypatch.setattr(safetensors.numpy, "save_file", dies)
    with pytest.raises(KeyboardInterrupt):
        save_calibration(fitted, bundle)
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
    assert [p.name for p in bundle.parent.iterdir()] == ["bundle"]
    load_calibration(bundle)


def test_rewrite_replaces_the_whole_bundle(bundle: Path, fitted: Calibration) -> None:
    old = load_calibration(bundle).sha256
    (bundle / META_NAME).chmod(0o644)
    save_calibration(fitted, bundle)
    assert load_calibration(bundle).sha256 and sorted(p.name for p in bundle.iterdir()) == [ARRAYS_NAME, META_NAME]
    assert [p.name for p in bundle.parent.iterdir()] == ["bundle"]
    assert old  # both versions loaded


def test_swap_fallback_interrupted_between_renames_is_recovered(bundle: Path, fitted: Calibration, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where renameat2 is unavailable: a kill after moving the old bundle aside restores it on the next load."""
    monkeypatch.setattr(B, "_exchange", lambda a, b: False)
    real_rename = os.rename
    calls: list[str] = []

    def rename(src: Any, dst: Any) -> None:
        calls.append(str(dst))
        if len(calls) == 2:  # the new folder would now be moved into place: killed instead
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        save_calibration(fitted, bundle)
    monkeypatch.setattr(os, "rename", real_rename)
    assert not bundle.exists()
    assert load_calibration(bundle).attacks  # recovered from the aside copy
    assert sorted(p.name for p in bundle.parent.iterdir()) == ["bundle"]
    save_calibration(fitted, bundle)  # and the fallback path commits normally
    load_calibration(bundle)


def test_folder_with_other_files_is_refused_and_untouched(fitted: Calibration, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="thesis.tex"):
        save_calibration(fitted, out)
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


def test_empty_folder_and_symlinked_folder_are_accepted(fitted: Calibration, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    save_calibration(fitted, empty)
    load_calibration(empty)
    link = tmp_path / "link"
    link.symlink_to(empty)
    save_calibration(fitted, link)
    assert link.is_symlink() and load_calibration(link).attacks


def test_stale_temporaries_of_dead_writers_are_removed(bundle: Path, fitted: Calibration) -> None:
    dead = bundle.parent / f".bundle.new-{2**22 + 12345}-abcdefgh"
    dead.mkdir()
    (dead / META_NAME).write_text("{}")
    save_calibration(fitted, bundle)
    assert not dead.exists()


def test_rewriting_a_bundle_keeps_its_shadow_training_run(bundle: Path, fitted: Calibration) -> None:
    """`auditmi calibrate` trains its shadow encoder under OUT/shadow-encoder: the swap must not lose it."""
    from auditmi.calibration import check_bundle_destination

    run = bundle / "shadow-encoder" / "abc" / "final"
    run.mkdir(parents=True)
    (run / "model.safetensors").write_bytes(b"weights")
    check_bundle_destination(bundle)
    save_calibration(fitted, bundle)
    assert (run / "model.safetensors").read_bytes() == b"weights"
    load_calibration(bundle)
    (bundle / "stray.txt").write_text("x")
    with pytest.raises(InputError, match="stray.txt"):
        check_bundle_destination(bundle)
