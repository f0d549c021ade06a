"""End-to-end tests of the ``auditmi`` command through its real entry point (``python -m auditmi``).

One tiny calibration bundle (resnet-tiny shadow encoder, 2 epochs, 4 views, 48 noise images) is
built once by ``auditmi calibrate`` and shared; its shadow encoder doubles as the audited
encoder. The tests check what a user sees: files written, exit codes, one JSON document on
stdout, skipped-file reasons, and error messages without tracebacks.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import auditmi

from e2e_support import (  # noqa: F401  (``calibrated`` is a fixture)
    CALIBRATE_ARGS,
    N_SHADOW,
    VIEWS,
    Calibrated,
    assert_user_error,
    calibrated,
    cli_env,
    copy_bundle,
    invoke_in_process,
    make_broken_files,
    make_noise_images,
    popen_cli,
    run_cli,
    sha256,
)

METRICS = ("accuracy", "precision", "recall", "roc_auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr")


# ---------------------------------------------------------------------------------- entry points


def test_console_script_is_installed() -> None:
    """``pip install`` put an ``auditmi`` executable next to the interpreter, and it runs."""
    bindir = Path(sys.executable).parent
    exe = shutil.which("auditmi", path=str(bindir))
    assert exe is not None, f"no auditmi console script in {bindir}"
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"auditmi {auditmi.__version__}"


def test_version() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"auditmi {auditmi.__version__}"
    assert proc.stderr == ""


def test_no_arguments_shows_help_with_exit_codes() -> None:
    proc = run_cli()
    text = proc.stdout + proc.stderr
    assert "scan" in text and "calibrate" in text
    assert "Traceback" not in text


def test_encoders_lists_clip_vit_b32_with_input_size() -> None:
    """The alias list works offline and shows each encoder's input size."""
    proc = run_cli("encoders")
    assert proc.returncode == 0, proc.stderr
    line = next((ln for ln in proc.stdout.splitlines() if "clip-vit-b32" in ln), None)
    assert line is not None, proc.stdout
    assert "ViT-B-32" in line and re.search(r"\b224\b", line), line


# ------------------------------------------------------------------------------------ calibrate


def test_calibrate_writes_a_complete_bundle(calibrated: Calibrated) -> None:
    b = calibrated.bundle
    assert (b / "calibration.json").is_file() and (b / "arrays.safetensors").is_file()
    meta = json.loads((b / "calibration.json").read_text())
    assert meta["format"] == "auditmi-calibration"
    assert meta["schema_version"] == 1
    assert meta["views"]["n_views"] == VIEWS
    assert meta["features"] == {"algorithm": "pairwise-cosine-v1", "n_views": VIEWS, "n_features": VIEWS * (VIEWS - 1) // 2}
    assert meta["default_attack"] in {"T", "V", "S"}
    assert set(meta["attacks"]) == {"T", "V", "S"}
    for kind, am in meta["attacks"].items():
        m = am["heldout_metrics"]
        for key in METRICS:
            assert key in m, (kind, key)
            assert m[key] is None or 0.0 <= m[key] <= 1.0, (kind, key, m[key])
        assert m["n_members"] + m["n_non_members"] == meta["n_heldout"]
        # Only thresholds a scan accepts: this tiny calibration resolves neither 1% nor 0.1% FPR.
        ft = meta["fpr_thresholds"]
        assert ft["finest_fpr"] == 1 / ft["heldout_non_members"] > 0.01 and ft["written"] == []
        assert set(am["thresholds"]) == {"accuracy"} and set(ft["not_written"]) == {"fpr=0.01", "fpr=0.001"}
    # The arrays file is pinned by its hash (tamper evidence).
    assert meta["files"]["arrays.safetensors"] == sha256(b / "arrays.safetensors")
    # The summary printed with --json - is one JSON document and agrees with the bundle.
    s = calibrated.summary
    assert s["default_attack"] == meta["default_attack"]
    assert set(s["heldout_metrics"]) == {"T", "V", "S"}
    for kind in "TVS":
        for key in METRICS:
            assert s["heldout_metrics"][kind][key] == meta["attacks"][kind]["heldout_metrics"][key]


def test_calibrate_records_member_and_non_member_hashes(calibrated: Calibrated) -> None:
    """Which shadow images were members is recorded by content hash: disjoint, covering all images."""
    meta = json.loads((calibrated.bundle / "calibration.json").read_text())
    mem, non = set(meta["shadow"]["member_sha256"]), set(meta["shadow"]["non_member_sha256"])
    good = {sha256(p) for p in calibrated.shadow_dir.iterdir() if not p.name.startswith("zz-")}
    assert len(good) == N_SHADOW
    assert mem and non and not (mem & non)
    assert mem | non == good, "unreadable files must not be recorded as shadow members or non-members"
    skipped = {Path(s["path"]).name for s in meta["skipped"]}
    assert skipped == {"zz-empty.png", "zz-truncated.png"}
    assert meta["n_shadow_members"] == len(mem) and meta["n_shadow_non_members"] == len(non)
    # The shadow encoder's checkpoint records the images it was trained on: the members.
    enc_meta = json.loads((calibrated.encoder / "encoder.json").read_text())
    assert set(enc_meta["training"]["member_sha256"]) == mem


def test_calibrate_again_reuses_the_shadow_encoder(calibrated: Calibrated, tmp_path: Path) -> None:
    """Re-running the same command does not retrain: the final/ checkpoint is untouched."""
    out = tmp_path / "bundle"
    shutil.copytree(calibrated.bundle, out)
    final = next((out / "shadow-encoder").glob("*/final"))
    before = {p.name: p.stat().st_mtime_ns for p in final.iterdir()}
    history_before = (final.parent / "history.json").read_text()
    proc = run_cli("calibrate", "--shadow-data", calibrated.shadow_dir, "--out", out, *CALIBRATE_ARGS, "--json", "-",
                   cache_dir=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    after = {p.name: p.stat().st_mtime_ns for p in final.iterdir()}
    assert after == before, "the shadow encoder was retrained although its final/ checkpoint matched"
    assert (final.parent / "history.json").read_text() == history_before
    assert len(list((out / "shadow-encoder").iterdir())) == 1
    # Same command, same seed, same encoder: the same classifiers and held-out metrics.
    again = json.loads(proc.stdout)
    assert again["default_attack"] == calibrated.summary["default_attack"]
    assert again["heldout_metrics"] == calibrated.summary["heldout_metrics"]
    # The --fpr the bundle supports is said on stderr (also with --json -), and is in the summary.
    ft = again["fpr_thresholds"]
    assert (f"scans accept --fpr {ft['finest_fpr']:.3g} or more (1/{ft['heldout_non_members']} held-out shadow non-members); "
            "thresholds stored for --fpr none; not for 0.01, 0.001") in " ".join(proc.stderr.split())


# ----------------------------------------------------------------------------------------- scan


class Scan:
    """The folders of a scan and the result of running it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.suspects = root / "suspects"
        self.good = make_noise_images(self.suspects, 10, seed=1, prefix="photo")
        self.good += make_noise_images(self.suspects / "holiday", 2, seed=3, prefix="nested")
        self.broken = make_broken_files(self.suspects)
        self.reference = root / "reference"
        make_noise_images(self.reference, 16, seed=2, prefix="ref")
        self.cache = root / "cache"
        self.html = root / "report.html"
        self.truth = root / "truth.csv"
        self.proc: subprocess.CompletedProcess | None = None
        self.report: dict[str, Any] = {}


@pytest.fixture(scope="module")
def scan(calibrated: Calibrated, tmp_path_factory: pytest.TempPathFactory) -> Scan:
    """A scan of a folder mixing good and broken files, with a reference set and an HTML page.

    Run without --quiet: progress bars must go to stderr, leaving stdout to the JSON document.
    """
    s = Scan(tmp_path_factory.mktemp("scan"))
    # Known membership of a few files, as a model builder would have it ("file,member").
    s.truth = s.root / "truth.csv"
    s.truth.write_text("file,member\n" + "".join(f"{p.name},{i % 2}\n" for i, p in enumerate(s.good[:6])) + "unknown.png,1\n")
    s.proc = run_cli("scan", s.suspects, "-e", calibrated.encoder, "-c", calibrated.bundle, "--reference", s.reference,
                     "--html", s.html, "--json", "-", "--cache", s.cache, "--device", "cpu", "--truth", s.truth)
    return s


@pytest.fixture(scope="module")
def scan_result(scan: Scan, calibrated: Calibrated) -> Any:
    """The typed result of the same scan, run in this process (from the scan's feature cache)."""
    from auditmi.jobs.scan import ScanOptions, run_scan

    return run_scan([scan.suspects], ScanOptions(encoder=str(calibrated.encoder), calibration=calibrated.bundle, reference=[scan.reference],
                                                 device="cpu", cache_dir=scan.cache, workers=0))


def test_scan_json_stdout_is_exactly_one_document(scan: Scan) -> None:
    p = scan.proc
    assert p is not None and p.returncode == 0, f"rc={p.returncode}\n{p.stderr}"
    assert "Traceback" not in p.stderr
    report = json.loads(p.stdout)  # the whole of stdout: nothing else may be printed there
    assert isinstance(report, dict)
    assert report["schema_version"]
    assert report["kind"] == "auditmi.scan-report"
    assert report["verdict"]["label"] in {"likely-used", "no-evidence", "inconclusive"}
    scan.report = report


def _report(scan: Scan) -> dict[str, Any]:
    if not scan.report:
        assert scan.proc is not None and scan.proc.returncode == 0, scan.proc.stderr if scan.proc else ""
        scan.report = json.loads(scan.proc.stdout)
    return scan.report


def test_scan_rows_for_good_images_and_reasons_for_broken_files(scan: Scan) -> None:
    r = _report(scan)
    rows = {Path(row["path"]).resolve(): row for row in r["images"]}
    assert set(rows) == {p.resolve() for p in scan.good}, "one row per good image, nested folders included"
    thr = r["aggregate"]["decision_threshold"]
    for path, row in rows.items():
        assert row["sha256"] == sha256(path)
        assert np.isfinite(row["score"])
        if r["score"]["calibrated"]:  # EncoderMI-R: p-values, no calibrated probability
            assert row["member_probability"] is None and 0.0 < row["p_value"] <= 1.0
        else:
            assert 0.0 <= row["member_probability"] <= 1.0
        assert row["decision"] == ("member" if row["score"] >= thr else "non-member")
    skipped = {Path(s["path"]).resolve(): s for s in r["skipped"]}
    assert set(skipped) == {p.resolve() for p in scan.broken.values()}
    for s in skipped.values():
        assert s["set"] == "suspect" and s["reason"].strip()
    assert "empty" in skipped[scan.broken["empty"].resolve()]["reason"]
    agg = r["aggregate"]
    assert agg["n_scored"] == len(scan.good) and agg["n_skipped"] == len(scan.broken)
    assert agg["n_images"] == len(scan.good) + len(scan.broken)


def test_scan_with_reference_reports_rank_test_pvalues_and_shift_check(scan: Scan) -> None:
    r = _report(scan)
    agg = r["aggregate"]
    rt = agg["rank_test"]
    assert rt is not None and 0.0 <= rt["p_value"] <= 1.0 and 0.0 <= rt["auc"] <= 1.0
    assert rt["n_suspects"] == len(scan.good) and rt["n_reference"] == 16
    assert r["verdict"]["test"] == "rank-test"
    for row in r["images"]:
        assert 0.0 < row["p_value"] <= 1.0
        assert isinstance(row["bh_flag"], bool)
    assert agg["n_bh_flagged"] == sum(row["bh_flag"] for row in r["images"])
    sc = agg["shift_check"]
    assert sc is not None and isinstance(sc["distinguishable"], bool) and sc["reason"]
    if sc["distinguishable"]:  # never "likely-used" when the sets differ without the encoder
        assert r["verdict"]["label"] == "inconclusive"
    assert r["reference"]["n_images"] == 16 and len(r["reference"]["scores"]) == 16


def test_scan_truth_file_is_compared_with_decisions(scan: Scan) -> None:
    t = _report(scan)["truth"]
    assert t["n_matched"] == 6 and t["n_members"] == 3 and t["n_non_members"] == 3
    assert t["true_positives"] + t["false_negatives"] == 3
    assert t["true_negatives"] + t["false_positives"] == 3


def test_scan_html_report_is_self_contained(scan: Scan) -> None:
    r = _report(scan)
    page = scan.html.read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html")
    assert r["verdict"]["label"] in page.lower()
    # Nothing is fetched from elsewhere: no external scripts, stylesheets or images.
    assert not re.search(r"<script[^>]*\ssrc=", page, re.I)
    assert not re.search(r"<link[^>]*stylesheet", page, re.I)
    for src in re.findall(r"""\ssrc=["']([^"']*)""", page, re.I):
        assert src.startswith("data:"), src
    assert not re.search(r"""(src|href)=["']https?:""", page, re.I)
    assert "HTML report written" in scan.proc.stderr  # type: ignore[union-attr]


def _always_flag_bundle(dest: Path) -> Path:
    """A T-only bundle whose shadow non-members had *negative* similarities.

    Any real image scores above its threshold, so every suspect is flagged and the binomial
    test against the calibrated false-positive rate must say "likely-used": an honest way to
    force that verdict (and the reason a reference set is recommended).
    """
    from auditmi.calibration import fit_calibration, save_calibration
    from auditmi.views import ViewConfig

    rng = np.random.default_rng(0)
    nf = VIEWS * (VIEWS - 1) // 2
    members = rng.uniform(-0.45, -0.05, (40, nf)).astype(np.float32)
    non_members = rng.uniform(-1.0, -0.55, (40, nf)).astype(np.float32)
    cal = fit_calibration(members, non_members, ViewConfig(n_views=VIEWS), kinds=("T",), seed=0)
    return save_calibration(cal, dest)


@pytest.fixture(scope="module")
def verdict_runs(calibrated: Calibrated, scan: Scan, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Scans without a reference (binomial verdict), with --fail-on likely-used, run concurrently.

    'T', 'V', 'S': each classifier of the shared bundle (T also at --fpr 0.1).
    'always': a bundle that flags every image, forcing a likely-used verdict.
    Each value is (returncode, stdout, stderr, report).
    """
    root = tmp_path_factory.mktemp("verdicts")
    bundles = {"T": calibrated.bundle, "V": calibrated.bundle, "S": calibrated.bundle, "always": _always_flag_bundle(root / "always")}
    procs = {}
    for name, bundle in bundles.items():
        extra = ["--attack", name.lower() if name == "V" else name] if name in "TVS" else []
        if name == "T":
            extra += ["--fpr", "0.1"]
        procs[name] = popen_cli("scan", scan.suspects, "-e", calibrated.encoder, "-c", bundle, "--json", root / f"{name}.json",
                                "--cache", scan.cache, "--fail-on", "likely-used", "--quiet", "--device", "cpu", *extra)
    results = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=300)
        path = root / f"{name}.json"
        results[name] = (p.returncode, out, err, json.loads(path.read_text()) if path.exists() else None)
    return results


@pytest.mark.parametrize("kind", ["T", "V", "S"])
def test_scan_each_attack_and_fail_on_matches_the_verdict(kind: str, scan: Scan, verdict_runs: dict) -> None:
    """--attack T/V/S each work (binomial verdict, no reference); --fail-on likely-used exits 5 iff likely-used."""
    rc, out, err, r = verdict_runs[kind]
    assert "Traceback" not in err, err
    assert r is not None, f"no report written (rc={rc}):\n{err}"
    assert rc == (5 if r["verdict"]["label"] == "likely-used" else 0), (rc, r["verdict"], err)
    assert r["calibration"]["attack"] == kind
    assert r["calibration"]["attack_name"] == f"EncoderMI-{kind}"
    assert r["verdict"]["test"] == "binomial-test" and r["aggregate"]["rank_test"] is None
    assert 0.0 <= r["verdict"]["p_value"] <= 1.0
    assert all(row["p_value"] is None and row["bh_flag"] is None for row in r["images"])
    assert len(r["images"]) == len(scan.good)
    assert r["timing"]["from_cache"] == len(scan.good)  # same encoder, views and seed as the first scan
    # Without --json -, the human report goes to stdout, verdict first.
    assert "auditmi verdict" in out and r["verdict"]["label"].upper() in out
    if kind == "T":
        agg = r["aggregate"]
        assert agg["threshold_kind"] == "fpr=0.1"
        assert agg["expected_fpr"] <= 0.1
        # The report says which --fpr the bundle supports, and lists no threshold a scan would refuse.
        assert r["calibration"]["finest_fpr"] <= 0.1 and set(r["calibration"]["thresholds"]) == {"accuracy"}


def test_attacks_score_the_same_images_differently(verdict_runs: dict) -> None:
    scores = {k: [row["score"] for row in verdict_runs[k][3]["images"]] for k in "TVS"}
    assert scores["T"] != scores["V"] and scores["V"] != scores["S"]


def test_fail_on_likely_used_exits_5(scan: Scan, verdict_runs: dict) -> None:
    rc, out, err, r = verdict_runs["always"]
    assert rc == 5, err
    assert "Traceback" not in err
    assert r is not None  # the report is still written before the exit
    assert r["verdict"]["label"] == "likely-used"
    assert r["aggregate"]["n_flagged"] == len(scan.good)
    assert "LIKELY-USED" in out


@pytest.mark.parametrize(
    ("label", "fail_on", "code"),
    [
        ("likely-used", "likely-used", 5),
        ("likely-used", "never", 0),
        ("likely-used", "inconclusive", 5),
        ("no-evidence", "likely-used", 0),
        ("no-evidence", "inconclusive", 0),
        ("inconclusive", "likely-used", 0),
        ("inconclusive", "inconclusive", 5),
    ],
)
def test_fail_on_exit_code_mapping(label: str, fail_on: str, code: int, scan: Scan, calibrated: Calibrated, scan_result: Any,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Every (verdict, --fail-on) pair maps to the documented exit code (in process, run_scan patched)."""
    from typer.testing import CliRunner

    import auditmi.jobs.scan
    from auditmi.cli.main import _register, app
    from auditmi.verdict import Label

    _register()
    result = dataclasses.replace(scan_result, verdict=dataclasses.replace(scan_result.verdict, label=Label(label)))
    monkeypatch.setattr(auditmi.jobs.scan, "run_scan", lambda *a, **k: result)
    res = CliRunner().invoke(app, ["scan", str(scan.suspects), "-e", "unused", "-c", str(calibrated.bundle), "--fail-on", fail_on, "--quiet"])
    assert res.exit_code == code, res.output


# ---------------------------------------------------------------------------- user errors: exit codes


@pytest.fixture(scope="module")
def error_runs(calibrated: Calibrated, scan: Scan, tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    """Every user-error scenario of ``auditmi scan``.

    One case per exit code (2, 3, 4) runs as a real ``python -m auditmi`` process (three at once,
    to overlap interpreter start-up); the others run the same Typer app in this process, which
    keeps the suite fast while still going through the CLI's argument parsing and error mapping.
    """
    root = tmp_path_factory.mktemp("errors")
    empty_dir = root / "no-images"
    empty_dir.mkdir()
    (empty_dir / "readme.txt").write_text("not an image\n")
    broken_only = root / "broken-only"
    make_broken_files(broken_only)

    tampered = copy_bundle(calibrated, root / "tampered")
    data = bytearray((tampered / "arrays.safetensors").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tampered / "arrays.safetensors").write_bytes(bytes(data))
    no_arrays = copy_bundle(calibrated, root / "no-arrays")
    (no_arrays / "arrays.safetensors").unlink()
    future = copy_bundle(calibrated, root / "future")
    meta = json.loads((future / "calibration.json").read_text())
    meta["schema_version"] = 99
    (future / "calibration.json").write_text(json.dumps(meta))

    enc, good = calibrated.encoder, scan.suspects
    in_subprocess: dict[str, list[Any]] = {
        "nonexistent-folder": [root / "does-not-exist", "-e", enc, "-c", calibrated.bundle],
        "unknown-encoder": [good, "-e", "no-such-encoder", "-c", calibrated.bundle],
        "tampered-arrays": [good, "-e", enc, "-c", tampered],
    }
    in_process: dict[str, list[Any]] = {
        "no-image-files": [empty_dir, "-e", enc, "-c", calibrated.bundle],
        "no-usable-image": [broken_only, "-e", enc, "-c", calibrated.bundle],
        "missing-bundle": [good, "-e", enc, "-c", root / "no-bundle-here"],
        "deleted-arrays": [good, "-e", enc, "-c", no_arrays],
        "schema-version": [good, "-e", enc, "-c", future],
        "views-mismatch": [good, "-e", enc, "-c", calibrated.bundle, "--views", str(VIEWS + 2)],
        "bad-fpr": [good, "-e", enc, "-c", calibrated.bundle, "--fpr", "2"],
        "batch-size-0": [good, "-e", enc, "-c", calibrated.bundle, "--batch-size", "0"],
        "negative-workers": [good, "-e", enc, "-c", calibrated.bundle, "--workers", "-1"],
        "cache-is-a-file": [good, "-e", enc, "-c", calibrated.bundle, "--cache", calibrated.bundle / "calibration.json"],
    }
    common = ["--json", "-", "--device", "cpu"]
    cache = ["--cache", root / "cache"]
    procs = {n: popen_cli("scan", *a, *common, *cache) for n, a in in_subprocess.items()}
    results: dict[str, subprocess.CompletedProcess] = {}
    for n, a in in_process.items():
        results[n] = invoke_in_process("scan", *a, *common, *([] if "--cache" in a else cache))
    for n, p in procs.items():
        out, err = p.communicate(timeout=300)
        results[n] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    return results


def test_nonexistent_folder_exits_2(error_runs: dict) -> None:
    p = error_runs["nonexistent-folder"]
    assert_user_error(p, 2, "does-not-exist", "does not exist")
    assert p.stdout == ""


def test_folder_without_image_files_exits_2(error_runs: dict) -> None:
    assert_user_error(error_runs["no-image-files"], 2, "no image files")


def test_folder_with_no_usable_image_exits_2(error_runs: dict) -> None:
    p = error_runs["no-usable-image"]
    assert_user_error(p, 2, "none of the suspect images could be used")
    # The message says why, per file.
    assert "empty" in p.stderr and "truncated.png" in p.stderr


def test_unknown_encoder_exits_4_and_lists_valid_forms(error_runs: dict) -> None:
    assert_user_error(error_runs["unknown-encoder"], 4, "no-such-encoder", "clip-vit-b32", "open_clip:MODEL@TAG", "torchscript")


def test_missing_bundle_exits_3(error_runs: dict) -> None:
    assert_user_error(error_runs["missing-bundle"], 3, "not a calibration bundle", "auditmi calibrate")


def test_tampered_arrays_exit_3(error_runs: dict) -> None:
    assert_user_error(error_runs["tampered-arrays"], 3, "sha256", "modified or corrupted")


def test_deleted_arrays_exit_3(error_runs: dict) -> None:
    assert_user_error(error_runs["deleted-arrays"], 3, "arrays.safetensors", "missing")


def test_changed_schema_version_exits_3(error_runs: dict) -> None:
    assert_user_error(error_runs["schema-version"], 3, "schema_version 99", "re-run `auditmi calibrate`")


def test_views_different_from_calibration_exit_3_and_explain(error_runs: dict) -> None:
    assert_user_error(error_runs["views-mismatch"], 3, f"n_views: {VIEWS} vs {VIEWS + 2}", "same augmentation")


def test_user_errors_never_print_a_traceback(error_runs: dict) -> None:
    for name, p in error_runs.items():
        assert "Traceback" not in p.stderr, name
        assert p.returncode not in (0, 1), (name, p.returncode, p.stderr)
        assert p.stdout == "", (name, p.stdout)  # --json - must not get half a report


def test_bad_option_value_exits_2(error_runs: dict) -> None:
    assert_user_error(error_runs["bad-fpr"], 2, "--fpr must be between 0 and 1")


def test_unusable_cache_folder_exits_2(error_runs: dict) -> None:
    """--cache naming a file is the user's to fix: a message, not an internal error."""
    assert_user_error(error_runs["cache-is-a-file"], 2, "feature cache", "--no-cache")


def test_invalid_report_is_an_internal_error_not_a_usage_error(scan: Scan, calibrated: Calibrated, scan_result: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """If auditmi builds a report its own schema rejects, that is a bug (exit 1), not bad input (exit 2)."""
    from typer.testing import CliRunner

    import auditmi.jobs.scan
    import auditmi.report
    from auditmi.cli.main import _register, app

    _register()
    build = auditmi.report.scan_report

    def broken(*a: Any, **k: Any) -> dict[str, Any]:
        report = build(*a, **k)
        report["aggregate"]["not_in_the_schema"] = 1
        return report

    monkeypatch.setattr(auditmi.jobs.scan, "run_scan", lambda *a, **k: scan_result)
    monkeypatch.setattr(auditmi.report, "scan_report", broken)
    res = CliRunner().invoke(app, ["scan", str(scan.suspects), "-e", "unused", "-c", str(calibrated.bundle), "--quiet"])
    assert res.exit_code == 1, res.output
    assert "internal error" in res.stderr and "not_in_the_schema" in res.stderr


def test_batch_size_0_and_negative_workers_exit_2(error_runs: dict) -> None:
    assert_user_error(error_runs["batch-size-0"], 2, "--batch-size must be positive (got 0)")
    assert_user_error(error_runs["negative-workers"], 2, "--workers must be 0 or more")


def test_report_destination_in_a_missing_folder_is_refused_before_scanning(calibrated: Calibrated, tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    proc = invoke_in_process("scan", tmp_path / "imgs", "--encoder", "x", "--calibration", calibrated.bundle,
                             "--json", tmp_path / "missing" / "r.json", cache_dir=tmp_path / "c")
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "missing" in proc.stderr


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (["scan", "/no/such/folder", "-e", "x", "-c", "y"], 2, "does not exist"),
        (["scan", ".", "-e", "x", "-c", "/no/such/bundle"], 3, "is not a calibration bundle"),
        (["scan", ".", "-e", "x", "-c", "y", "--fdr", "2"], 2, "--fdr must be between 0 and 1"),
        (["evaluate", "-e", "x", "-c", "/no/such/bundle", "--members", ".", "--non-members", "."], 3, "is not a calibration bundle"),
        (["calibrate", "--shadow-data", "/no/such/folder", "--out", "/tmp/unused"], 2, "does not exist"),
        (["scan", ".", "-e", "x", "-c", "y", "--views", "1"], 2, "--views must be at least 2"),
        (["scan", ".", "-e", "x", "-c", "y", "--batch-size", "0"], 2, "--batch-size must be positive"),
        (["scan", ".", "-e", "x", "-c", "y", "--workers", "-1"], 2, "--workers must be 0 or more"),
        (["scan", ".", "-e", "x", "-c", "y", "--device", "gpu"], 2, "invalid --device 'gpu'"),
        (["scan", ".", "-e", "x", "-c", "y", "--attack", "Z"], 2, "--attack must be one of T, V, S"),
        (["calibrate", "--shadow-data", ".", "--out", "/tmp/unused", "--attacks", "TX"], 2, "--attacks must be letters among T, V, S"),
        (["calibrate", "--shadow-data", ".", "--out", "/tmp/unused", "--views", "1"], 2, "--views must be at least 2"),
        (["calibrate", "--shadow-data", ".", "--out", "/tmp/unused", "--member-fraction", "1.5"], 2, "--member-fraction must be between 0 and 1"),
        (["calibrate", "--shadow-data", ".", "--out", "/tmp/unused", "--device", "gpu"], 2, "invalid --device"),
        (["evaluate", "-e", "x", "-c", "y", "--members", ".", "--non-members", ".", "--batch-size", "-3"], 2, "--batch-size must be positive"),
        (["calibrate", "--shadow-data", ".", "--out", "/tmp/unused", "--json", "/tmp"], 2, "/tmp is a folder"),
        (["scan", ".", "-e", "x", "-c", "y", "--json", ""], 2, "an output path is empty"),
        (["scan", ".", "-e", "x", "-c", "y", "--html", "/tmp"], 2, "/tmp is a folder"),
    ],
    ids=["missing-images", "missing-calibration", "bad-fdr", "evaluate-missing-calibration", "calibrate-missing-data",
         "scan-views", "scan-batch-size", "scan-workers", "scan-device", "scan-attack", "calibrate-attacks", "calibrate-views",
         "calibrate-member-fraction", "calibrate-device", "evaluate-batch-size", "calibrate-json-dir", "scan-json-empty", "scan-html-dir"],
)
def test_input_errors_fail_before_torch_is_imported(args: list[str], code: int, needle: str) -> None:
    """A typo must fail at once, not after the seconds it takes to import torch."""
    prog = (
        "import sys\n"
        "from auditmi.cli.main import run\n"
        f"sys.argv = ['auditmi', *{args!r}]\n"
        "try:\n"
        "    run()\n"
        "except SystemExit as e:\n"
        "    print('torch imported:', 'torch' in sys.modules, file=sys.stderr)\n"
        "    raise\n"
    )
    p = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert p.returncode == code, p.stderr
    assert needle in " ".join(p.stderr.split())
    assert "torch imported: False" in p.stderr


def test_typed_scan_result_builds_the_same_report_as_the_cli(scan: Scan, scan_result: Any) -> None:
    """report.build is the one place that knows the layout: the in-process result gives the CLI's document."""
    from auditmi.report import scan_report, to_json, validate_report

    built = json.loads(to_json(scan_report(scan_result)))
    validate_report(built)
    cli = dict(_report(scan))
    cli.pop("truth")
    for doc in (built, cli):
        for key in ("created", "command", "timing"):
            doc.pop(key)
    assert built == cli


def test_evaluate_table_fits_80_columns() -> None:
    """The evaluate table and its legend stay within 80 columns; no header is cut short."""
    from rich.console import Console

    from auditmi.cli.evaluate import print_evaluation
    from auditmi.jobs.evaluate import AtCalibratedFpr, ClassifierEvaluation, EvaluateResult
    from auditmi.stats import binary_metrics

    metrics = binary_metrics(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.6, 0.1]), 0.5)
    result = EvaluateResult(created=None, encoder={}, calibration_path=None, calibration_sha256=None, default_attack="V",  # type: ignore[arg-type]
                            finest_fpr=0.001, n_members=12345, n_non_members=67890, skipped=[],
                            classifiers=[ClassifierEvaluation(k, metrics, [AtCalibratedFpr(0.01, 0.5, 0.123, 0.0101),
                                                                           AtCalibratedFpr(0.001, 0.7, 0.05, 0.001)], {})
                                         for k in "TVS"],
                            views=None, seed=0, environment={})  # type: ignore[arg-type]
    console = Console(width=80, record=True, color_system=None)
    print_evaluation(result, console)
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    assert "\u2026" not in text  # rich's ellipsis: nothing truncated
    for head in ("classifier", "acc", "prec", "recall", "AUC", "TPR@1%", "TPR@.1%", "cal.TPR", "cal.FPR"):
        assert head in text
    row = next(line for line in lines if line.strip().startswith("V "))
    assert row.split() == ["V", "0.500", "0.500", "0.500", "0.750", "0.500", "0.500", "0.123", "0.010"]
    assert "calibrated for 1% FPR" in " ".join(text.split())
    # A calibration that resolves neither 1% nor 0.1%: the cal. columns use its finest rate, and say so.
    coarse = dataclasses.replace(result, finest_fpr=0.025, classifiers=[
        ClassifierEvaluation(k, metrics, [AtCalibratedFpr(0.025, 0.5, 0.2, 0.03)], {}) for k in "TVS"])
    console = Console(width=80, record=True, color_system=None)
    print_evaluation(coarse, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert next(line for line in text.splitlines() if line.strip().startswith("V ")).split()[-2:] == ["0.200", "0.030"]
    assert "calibrated for 0.025 FPR on the shadow data (the finest this calibration supports: 1/40" in " ".join(text.split())


def test_scan_with_reference_uses_encodermi_r_from_the_bundle_shadows(scan: Scan, calibrated: Calibrated, tmp_path: Path) -> None:
    """The shared bundle was calibrated with the default --shadows 4: a scan with a large enough
    reference uses EncoderMI-R, and the report says so (shadows, difficulty-model R^2, p-value
    method, reference threshold); the shared scan's 16-image reference is too small, and says so."""
    small = _report(scan)["score"]
    assert small["calibrated"] is False and "at least 30" in small["note"]
    ref = tmp_path / "reference"
    make_noise_images(ref, 32, seed=7, prefix="ref")
    html = tmp_path / "r.html"
    # --fpr 0.05 is finer than the bundle's held-out set resolves, but EncoderMI-R places the threshold
    # on the reference (33 slots resolve 0.05), so it is accepted.
    assert json.loads((calibrated.bundle / "calibration.json").read_text())["fpr_thresholds"]["finest_fpr"] > 0.05
    proc = run_cli("scan", scan.suspects, "-e", calibrated.encoder, "-c", calibrated.bundle, "--reference", ref, "--json", "-",
                   "--html", html, "--device", "cpu", "--quiet", "--fpr", "0.05", cache_dir=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["aggregate"]["threshold_kind"].startswith("reference fpr=0.05")
    sc = r["score"]
    assert sc["name"] == "EncoderMI-R" and sc["calibrated"] and len(sc["shadows"]) == 4
    assert sc["spec"]["regression"] in ("diff", "ols_same", "ols_all") and sc["p_values"].startswith("conformal")
    assert sc["r2_out_of_fold"] is not None and set(sc["difficulty_r2"]) == set(sc["spec"]["signals"])
    assert sc["threshold"]["n_reference"] == 32 and r["aggregate"]["threshold_kind"].startswith("reference fpr=")
    assert all(row["member_probability"] is None and 0 < row["p_value"] <= 1 for row in r["images"])
    assert "EncoderMI-R" in html.read_text()
    cal = json.loads((calibrated.bundle / "calibration.json").read_text())
    assert [e["weights"] for e in cal["shadows"]["encoders"]] == [f"shadow-{k}.safetensors" for k in range(4)]
    assert all(f"shadow-{k}.safetensors" in cal["files"] for k in range(4))  # covered by the bundle's pin
