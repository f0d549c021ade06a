"""Calibration bundles (auditmi.calibration): save/load round trip, tamper evidence, thresholds.

Fitted on synthetic shadow features (no encoder needed), so these run in about a second.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from auditmi.calibration import (
    ARRAYS_NAME,
    META_NAME,
    Calibration,
    fit_calibration,
    load_calibration,
    save_calibration,
)
from auditmi.errors import EXIT_CALIBRATION, CalibrationError, InputError
from auditmi.views import ViewConfig

VIEWS = 4
NF = VIEWS * (VIEWS - 1) // 2


def _features(n: int, mean: float, sd: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(mean, sd, (n, NF)), -1, 1).astype(np.float32)


@pytest.fixture(scope="module")
def fitted() -> Calibration:
    """T, V and S fitted on overlapping member / non-member similarity distributions."""
    members = _features(120, 0.80, 0.10, seed=1)
    non_members = _features(120, 0.70, 0.12, seed=2)
    return fit_calibration(members, non_members, ViewConfig(n_views=VIEWS), kinds=("T", "V", "S"), seed=0,
                           attack_options={"V": {"epochs": 8}, "S": {"epochs": 4}}, meta={"note": "synthetic"})


@pytest.fixture
def bundle(fitted: Calibration, tmp_path: Path) -> Path:
    return save_calibration(fitted, tmp_path / "bundle")


@pytest.fixture(scope="module")
def probe() -> np.ndarray:
    return np.concatenate([_features(30, 0.8, 0.1, seed=3), _features(30, 0.7, 0.12, seed=4)])


def test_bundle_files_and_metadata(bundle: Path, fitted: Calibration) -> None:
    assert (bundle / META_NAME).is_file() and (bundle / ARRAYS_NAME).is_file()
    meta = json.loads((bundle / META_NAME).read_text())
    assert meta["schema_version"] == 1 and meta["format"] == "auditmi-calibration"
    assert meta["views"]["n_views"] == VIEWS and meta["features"]["n_features"] == NF
    assert meta["default_attack"] == fitted.default_attack
    assert meta["note"] == "synthetic"
    for kind in "TVS":
        m = meta["attacks"][kind]["heldout_metrics"]
        for key in ("accuracy", "precision", "recall", "roc_auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr"):
            assert key in m
    # No pickle anywhere in a bundle.
    assert sorted(p.name for p in bundle.iterdir()) == [ARRAYS_NAME, META_NAME]


def test_round_trip_gives_identical_scores_for_each_attack(bundle: Path, fitted: Calibration, probe: np.ndarray) -> None:
    loaded = load_calibration(bundle)
    assert loaded.default_attack == fitted.default_attack
    assert loaded.views == fitted.views
    assert set(loaded.attacks) == {"T", "V", "S"}
    for kind, ac in fitted.attacks.items():
        lc = loaded.attacks[kind]
        assert np.array_equal(lc.attack.score(probe), ac.attack.score(probe)), kind
        assert np.array_equal(lc.attack.member_probability(probe), ac.attack.member_probability(probe)), kind
        assert lc.thresholds == ac.thresholds
        assert np.array_equal(lc.heldout_scores, ac.heldout_scores) and np.array_equal(lc.heldout_labels, ac.heldout_labels)
        assert lc.metrics["roc_auc"] == ac.metrics["roc_auc"]
    assert loaded.sha256 and loaded.path == bundle


def test_save_is_deterministic(fitted: Calibration, tmp_path: Path) -> None:
    """The same fitted calibration writes byte-identical arrays (the JSON differs only in 'created')."""
    a = save_calibration(fitted, tmp_path / "a")
    b = save_calibration(fitted, tmp_path / "b")
    assert (a / ARRAYS_NAME).read_bytes() == (b / ARRAYS_NAME).read_bytes()


@pytest.mark.parametrize("fpr", [0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.001])
def test_threshold_at_fpr_keeps_heldout_fpr_at_or_below_target(fitted: Calibration, bundle: Path, fpr: float) -> None:
    for cal in (fitted, load_calibration(bundle)):
        for kind, ac in cal.attacks.items():
            thr = ac.threshold_at(fpr)
            neg = ac.heldout_scores[ac.heldout_labels == 0]
            achieved = float((neg >= thr).mean())
            assert achieved <= fpr, (kind, fpr, achieved)
            tpr, fpr_reported = ac.tpr_fpr_at(thr)
            assert fpr_reported == achieved and 0.0 <= tpr <= 1.0
            # And it is not needlessly strict: one step lower would exceed the target (or flag a tie).
            if fpr >= 1 / len(neg):
                lower = neg[neg < thr]
                if lower.size:
                    assert float((neg >= lower.max()).mean()) > fpr or math.isclose(lower.max(), thr)


def test_stored_fpr_thresholds_match_threshold_at() -> None:
    """480 held-out non-members resolve 1% FPR (not 0.1%): the 1% threshold is stored, equal to threshold_at."""
    cal = fit_calibration(_features(1200, 0.80, 0.10, seed=5), _features(1200, 0.70, 0.12, seed=6), ViewConfig(n_views=VIEWS),
                          kinds=("T",), seed=0)
    ac = cal.attacks["T"]
    assert ac.heldout_non_members == 480
    assert ac.thresholds["fpr=0.01"] == ac.threshold_at(0.01)
    assert set(ac.thresholds) == {"accuracy", "fpr=0.01"}
    ft = cal.meta["fpr_thresholds"]
    assert ft["written"] == [0.01] and ft["heldout_non_members"] == 480 and list(ft["not_written"]) == ["fpr=0.001"]


def test_only_thresholds_a_scan_accepts_are_stored(fitted: Calibration, bundle: Path) -> None:
    """A threshold is stored only at a target FPR the held-out non-members resolve: the rest would be
    refused by ``scan --fpr`` (check_fpr). The bundle records which were left out and why."""
    for ac in fitted.attacks.values():
        assert ac.heldout_non_members == 48 and ac.finest_fpr == 1 / 48
        assert set(ac.thresholds) == {"accuracy"}  # 0.01 and 0.001 are finer than 1/48
        for f in (0.01, 0.001):
            assert not ac.supports_fpr(f)
            with pytest.raises(InputError, match=r"supports --fpr from 0.0208 \(1/48\)"):
                ac.check_fpr(f)
        ac.check_fpr(1 / 48)
    meta = json.loads((bundle / META_NAME).read_text())
    assert meta["fpr_thresholds"]["written"] == [] and meta["fpr_thresholds"]["finest_fpr"] == 1 / 48
    assert set(meta["fpr_thresholds"]["not_written"]) == {"fpr=0.01", "fpr=0.001"}
    assert all(set(am["thresholds"]) == {"accuracy"} for am in meta["attacks"].values())


def test_old_bundle_thresholds_finer_than_the_held_out_set_are_not_offered(tmp_path: Path) -> None:
    """Bundles written before this rule store thresholds at 0.01 and 0.001 whatever their held-out size
    (the example's has 40 held-out non-members). Loaded, they are dropped, so a scan report never
    lists a threshold scan would refuse."""
    import shutil

    from auditmi.bundle import repin

    old = tmp_path / "old"
    shutil.copytree(Path(__file__).resolve().parents[1] / "examples" / "fashion" / "calibration", old)
    meta = json.loads((old / META_NAME).read_text())
    meta.pop("fpr_thresholds", None)
    for am in meta["attacks"].values():  # what the old calibrate wrote
        am["thresholds"].update({"fpr=0.01": am["thresholds"]["accuracy"], "fpr=0.001": am["thresholds"]["accuracy"]})
    (old / META_NAME).write_text(json.dumps(meta))
    repin(old)
    assert "fpr=0.01" in json.loads((old / META_NAME).read_text())["attacks"]["T"]["thresholds"]
    ac = load_calibration(old).attacks["T"]
    assert ac.finest_fpr == 1 / 40 and set(ac.thresholds) == {"accuracy"}


# --------------------------------------------------------------------------------- refusals


def _refused(path: Path, *needles: str) -> CalibrationError:
    with pytest.raises(CalibrationError) as ei:
        load_calibration(path)
    msg = str(ei.value)
    for n in needles:
        assert n in msg, msg
    assert ei.value.exit_code == EXIT_CALIBRATION
    return ei.value


def test_missing_folder_is_refused(tmp_path: Path) -> None:
    _refused(tmp_path / "nowhere", "not a calibration bundle", "auditmi calibrate")


def test_flipped_byte_in_arrays_is_refused(bundle: Path) -> None:
    p = bundle / ARRAYS_NAME
    data = bytearray(p.read_bytes())
    data[-1] ^= 0x01
    p.write_bytes(bytes(data))
    _refused(bundle, "sha256", "modified or corrupted")


def test_missing_arrays_file_is_refused(bundle: Path) -> None:
    (bundle / ARRAYS_NAME).unlink()
    _refused(bundle, ARRAYS_NAME, "missing")


def test_other_schema_version_is_refused(bundle: Path) -> None:
    meta = json.loads((bundle / META_NAME).read_text())
    meta["schema_version"] = 2
    (bundle / META_NAME).write_text(json.dumps(meta))
    _refused(bundle, "schema_version 2", "reads version 1")


def test_corrupt_json_is_refused(bundle: Path) -> None:
    (bundle / META_NAME).write_text('{"format": "auditmi-calibration", ')
    _refused(bundle, "cannot read", "corrupt")


def test_foreign_json_is_refused(bundle: Path) -> None:
    (bundle / META_NAME).write_text(json.dumps({"format": "something-else"}))
    _refused(bundle, "not an auditmi calibration")


def test_json_not_an_object_is_refused(bundle: Path) -> None:
    (bundle / META_NAME).write_text("[1, 2, 3]")
    _refused(bundle, "not an auditmi calibration")


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["attacks"]["T"].pop("params"),
        lambda m: m["attacks"]["T"].pop("thresholds"),
        lambda m: m.pop("views"),
        lambda m: m.__setitem__("attacks", {"X": {}}),
        lambda m: m.__setitem__("attacks", []),
        lambda m: m.__setitem__("attacks", {}),
        lambda m: m.__setitem__("files", "arrays.safetensors"),
        lambda m: m["views"].__setitem__("n_views", 1),
        lambda m: m["attacks"]["V"]["params"].__setitem__("n_features", 7),
        lambda m: m["views"].__setitem__("gray_p", 1.5),
        lambda m: m["views"].__setitem__("scale", [0.0, 1.0]),
        lambda m: m["views"].__setitem__("algorithm", "auditmi-views-v9"),
        lambda m: m["views"].__setitem__("n_views", 4.5),
    ],
    ids=["no-params", "no-thresholds", "no-views", "unknown-attack", "attacks-list", "no-attacks", "files-string",
         "one-view", "wrong-n-features", "gray-probability", "zero-scale", "future-view-algorithm", "fractional-views"],
)
def test_edited_json_is_refused_with_a_calibration_error(bundle: Path, edit) -> None:
    """A hand-edited calibration.json is a CalibrationError (exit 3), never a crash (exit 1)."""
    meta = json.loads((bundle / META_NAME).read_text())
    edit(meta)
    (bundle / META_NAME).write_text(json.dumps(meta))
    with pytest.raises(CalibrationError):
        load_calibration(bundle)


def test_scan_views_must_match(fitted: Calibration) -> None:
    fitted.check_views(ViewConfig(n_views=VIEWS))  # same: accepted
    with pytest.raises(CalibrationError, match="n_views: 4 vs 10"):
        fitted.check_views(ViewConfig(n_views=10))
    with pytest.raises(CalibrationError, match="gray_p"):
        fitted.check_views(ViewConfig(n_views=VIEWS, gray_p=0.0))
