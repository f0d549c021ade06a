"""The bundled Fashion-MNIST example: the README's first command and the CI example work on it.

These run the real encoder shipped in examples/fashion (trained by examples/fashion/build.py on
known Fashion-MNIST members) and check the verdict against the example's truth.csv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2e_support import cli_env, invoke_in_process

ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "examples" / "fashion"


@pytest.fixture(scope="module")
def example_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cache = tmp_path_factory.mktemp("excache")
    proc = invoke_in_process("scan", EX / "suspect", "--encoder", EX / "encoder", "--calibration", EX / "calibration",
                             "--reference", EX / "reference", "--truth", EX / "suspect" / "truth.csv", "--json", "-", "--quiet",
                             "--device", "cpu", cache_dir=cache)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_readme_scan_scores_every_suspect_and_compares_with_truth(example_report: dict) -> None:
    from auditmi.report import validate_report

    validate_report(example_report)
    assert example_report["aggregate"]["n_scored"] == 80
    assert example_report["skipped"] == []
    assert example_report["ignored"] == []  # suspect/truth.csv is the --truth file, not an ignored file
    truth = example_report["truth"]
    assert truth["n_matched"] == 80 and truth["n_members"] == 40 and truth["n_non_members"] == 40


def test_example_verdict_matches_what_the_encoder_was_trained_on(example_report: dict) -> None:
    # Half the suspects are training images of the example encoder: an honest audit finds it.
    v = example_report["verdict"]
    assert v["label"] == "likely-used", v
    assert v["p_value"] < 0.05
    # The bundle carries shadow encoders, so the scan with --reference uses EncoderMI-R, which
    # reaches p < 1e-4 on this example (7.3e-06 measured; the reference-free T score gave 0.014).
    assert example_report["score"]["name"] == "EncoderMI-R" and v["p_value"] < 1e-4
    assert example_report["aggregate"]["shift_check"]["distinguishable"] is False
    truth = example_report["truth"]
    # Members are flagged more often than non-members (the per-image signal is real, not a fluke).
    assert truth["true_positives"] / 40 > truth["false_positives"] / 40


def test_reference_against_itself_is_not_used(tmp_path: Path) -> None:
    # Known non-members split into suspects and reference: no evidence, whatever the encoder.
    refs = sorted((EX / "reference").glob("*.png"))
    sus, ref = tmp_path / "sus", tmp_path / "ref"
    sus.mkdir()
    ref.mkdir()
    for i, p in enumerate(refs):
        ((sus if i % 4 == 0 else ref) / p.name).write_bytes(p.read_bytes())
    proc = invoke_in_process("scan", sus, "--encoder", EX / "encoder", "--calibration", EX / "calibration", "--reference", ref,
                             "--json", "-", "--quiet", "--device", "cpu", cache_dir=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["verdict"]["label"] != "likely-used"


def test_ci_example_fails_the_pipeline_on_a_positive_verdict(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "cache")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(["bash", str(ROOT / "examples" / "ci" / "audit.sh"), str(EX / "suspect"), str(EX / "encoder"),
                           str(EX / "calibration"), str(EX / "reference")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "LIKELY USED" in proc.stdout
    assert json.loads((tmp_path / "audit-report.json").read_text())["verdict"]["label"] == "likely-used"
    assert (tmp_path / "audit-report.html").read_text().lstrip().lower().startswith("<!doctype html")
