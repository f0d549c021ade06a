"""An encoder's declared preprocessing is checked when it is loaded (issue 14): a bad config is the
encoder's problem (exit 4), never blamed on the images, and never allowed to allocate absurd memory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from auditmi.encoders import load_encoder
from auditmi.encoders.base import MAX_INPUT_SIZE, validate_preprocessing
from auditmi.errors import EXIT_ENCODER, EncoderUnavailableError

from e2e_support import (  # noqa: F401  (``calibrated`` is a fixture)
    Calibrated,
    assert_user_error,
    calibrated,
    invoke_in_process,
    make_noise_images,
)

GOOD_MEAN, GOOD_STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def _repinned_edit(ckpt: Path, key: str, value: object) -> None:
    """A bad value in a correctly pinned encoder.json: what a buggy exporter (or a careless
    re-pin) produces; only the value check can refuse it."""
    from auditmi import bundle as B

    cfg = json.loads((ckpt / "encoder.json").read_text())
    cfg[key] = value
    (ckpt / "encoder.json").write_text(json.dumps(B.pin(cfg, cfg["files"])))


@pytest.mark.parametrize(
    ("size", "mean", "std", "needle"),
    [
        (0, GOOD_MEAN, GOOD_STD, "input_size must be between"),
        (6000, GOOD_MEAN, GOOD_STD, "input_size must be between"),
        (-32, GOOD_MEAN, GOOD_STD, "input_size must be between"),
        (32.5, GOOD_MEAN, GOOD_STD, "whole number"),
        ("224", GOOD_MEAN, GOOD_STD, "whole number"),
        (True, GOOD_MEAN, GOOD_STD, "whole number"),
        (None, GOOD_MEAN, GOOD_STD, "whole number"),
        (32, GOOD_MEAN, [0, 0, 0], "std must be positive"),
        (32, GOOD_MEAN, [0.2, -0.1, 0.2], "std must be positive"),
        (32, [0.5, 0.5], GOOD_STD, "mean must be three finite numbers"),
        (32, [0.5, float("nan"), 0.5], GOOD_STD, "mean must be three finite numbers"),
        (32, GOOD_MEAN, "0.25", "std must be three finite numbers"),
        (32, GOOD_MEAN, None, "std must be three finite numbers"),
    ],
)
def test_validate_preprocessing_refuses_impossible_values(size: object, mean: object, std: object, needle: str) -> None:
    with pytest.raises(EncoderUnavailableError, match=needle) as ei:
        validate_preprocessing(size, mean, std, source="x/encoder.json")
    assert ei.value.exit_code == EXIT_ENCODER and "x/encoder.json" in str(ei.value)


def test_validate_preprocessing_returns_clean_values() -> None:
    assert validate_preprocessing(224.0, [0, 0.5, 1], (1, 2, 3)) == (224, (0.0, 0.5, 1.0), (1.0, 2.0, 3.0))
    assert validate_preprocessing(MAX_INPUT_SIZE, GOOD_MEAN, GOOD_STD)[0] == MAX_INPUT_SIZE


@pytest.mark.parametrize(("key", "value"), [("input_size", 0), ("input_size", 6000), ("std", [0, 0, 0]), ("mean", [1, 2]), ("input_size", "big")])
def test_local_checkpoint_with_bad_preprocessing_is_an_encoder_error(tiny_checkpoint: Path, tmp_path: Path, key: str, value: object) -> None:
    ckpt = tmp_path / "enc"
    shutil.copytree(tiny_checkpoint, ckpt)
    _repinned_edit(ckpt, key, value)
    with pytest.raises(EncoderUnavailableError, match=key) as ei:
        load_encoder(str(ckpt), "cpu")
    assert "encoder.json" in str(ei.value)


def test_scan_with_a_bad_encoder_config_exits_4_and_does_not_blame_the_images(calibrated: Calibrated, tmp_path: Path) -> None:
    ckpt = tmp_path / "enc"
    shutil.copytree(calibrated.encoder, ckpt)
    _repinned_edit(ckpt, "std", [0, 0, 0])
    imgs = tmp_path / "imgs"
    make_noise_images(imgs, 3, seed=1)
    p = invoke_in_process("scan", imgs, "-e", ckpt, "-c", calibrated.bundle, "--device", "cpu", "--no-cache")
    assert_user_error(p, 4, "encoder.json", "std must be positive")
    assert "image" not in p.stderr.lower().replace("re-export the encoder", "")


class _TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


@pytest.fixture()
def scripted(tmp_path: Path) -> Path:
    path = tmp_path / "enc.pt"
    torch.jit.save(torch.jit.script(_TinyNet().eval()), str(path))
    return path


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize(
    ("sidecar", "needle"),
    [
        (b'{"input_size": "big"}', "whole number"),
        (b'{"input_size": 0}', "input_size must be between"),
        (b'{"input_size": 32, "std": [0, 0, 0]}', "std must be positive"),
        (b'{"input_size": 32, "mean": 0.5}', "mean must be three finite numbers"),
        (b"[32, 0.5, 0.5]", "JSON object"),
        (b'{"size": 32}', "unknown keys"),
        (b"{not json", "cannot read the TorchScript sidecar"),
        (b"\xff\xfe\x00garbage", "cannot read the TorchScript sidecar"),
    ],
    ids=["size-string", "size-0", "std-0", "mean-scalar", "list", "unknown-key", "not-json", "not-utf8"],
)
def test_bad_torchscript_sidecar_is_an_encoder_error(scripted: Path, sidecar: bytes, needle: str) -> None:
    (scripted.parent / "enc.pt.json").write_bytes(sidecar)
    with pytest.raises(EncoderUnavailableError, match=needle):
        load_encoder(str(scripted), "cpu")


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_bad_torchscript_sidecar_exits_4_without_a_traceback(calibrated: Calibrated, scripted: Path, tmp_path: Path) -> None:
    (scripted.parent / "enc.pt.json").write_text('{"input_size": "big"}')
    mem, non = tmp_path / "mem", tmp_path / "non"
    make_noise_images(mem, 2, seed=2)
    make_noise_images(non, 2, seed=3)
    p = invoke_in_process("evaluate", "-e", scripted, "-c", calibrated.bundle, "--members", mem, "--non-members", non,
                          "--device", "cpu", "--no-cache", "-q")
    assert_user_error(p, 4, "enc.pt.json", "input_size must be a whole number")


def _fake_bundle(tmp_path: Path) -> Path:
    b = tmp_path / "bundle"
    b.mkdir(exist_ok=True)
    (b / "calibration.json").write_text("{}")
    return b


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_without_sidecar_warns_on_the_terminal(scripted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import typer

    import auditmi.jobs.evaluate
    import auditmi.jobs.scan

    def stop(*a: object, **k: object) -> None:
        raise typer.Exit(0)

    monkeypatch.setattr(auditmi.jobs.scan, "run_scan", stop)
    monkeypatch.setattr(auditmi.jobs.evaluate, "run_evaluate", stop)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    p = invoke_in_process("scan", imgs, "-e", scripted, "-c", _fake_bundle(tmp_path), "-q")
    text = " ".join(p.stderr.split())
    assert p.returncode == 0, p.stderr
    assert "warning:" in text and "has no sidecar enc.pt.json" in text and "assuming 224 px" in text and "ImageNet" in text
    p = invoke_in_process("evaluate", "-e", scripted, "-c", _fake_bundle(tmp_path), "--members", imgs, "--non-members", imgs, "-q")
    assert "has no sidecar" in " ".join(p.stderr.split())
    (scripted.parent / "enc.pt.json").write_text('{"input_size": 32}')
    p = invoke_in_process("scan", imgs, "-e", scripted, "-c", _fake_bundle(tmp_path), "-q")
    assert "sidecar" not in p.stderr


def test_torch_export_file_without_sidecar_warns_too(tmp_path: Path) -> None:
    from auditmi.cli.options import encoder_assumptions

    f = tmp_path / "enc.pt2"
    f.write_bytes(b"not loaded here")
    assert any("has no sidecar enc.pt2.json" in n for n in encoder_assumptions(str(f)))
    (tmp_path / "enc.pt2.json").write_text('{"input_size": 32}')
    assert encoder_assumptions(str(f)) == []
    assert encoder_assumptions("clip-vit-b32") == [] and encoder_assumptions("no-such-spec") == []
