"""torch.export (.pt2) programs, and TorchScript files without torch's deprecation warning."""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from auditmi.encoders import load_encoder, parse_spec
from auditmi.encoders.export import save_export
from auditmi.errors import EncoderUnavailableError


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 1.5)
    return net.eval()


def test_pt2_round_trip_matches_the_model(tmp_path: Path) -> None:
    net = _net()
    path = save_export(net, tmp_path / "enc.pt2", 16, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    assert json.loads((tmp_path / "enc.pt2.json").read_text())["input_size"] == 16
    assert parse_spec(str(path)) == ("export", str(path), "")
    assert parse_spec(f"export:{path}") == ("export", str(path), "")
    enc = load_encoder(str(path), "cpu")
    assert (enc.backend, enc.input_size, enc.mean, enc.std) == ("export", 16, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    for b in (1, 5, 33):  # the batch dimension is dynamic
        x = torch.randn(b, 3, 16, 16)
        assert torch.allclose(enc.embed(x), torch.nn.functional.normalize(net(x), dim=-1), atol=1e-6)
    assert enc.identity.startswith("export:sha256:") and enc.identity == load_encoder(str(path), "cpu").identity


def test_pt2_exported_in_training_mode_is_refused(tmp_path: Path) -> None:
    net = _net().train()
    prog = torch.export.export(net, (torch.randn(2, 3, 16, 16),))
    torch.export.save(prog, str(tmp_path / "train.pt2"))
    with pytest.raises(EncoderUnavailableError, match=r"training mode.*model.eval\(\)"):
        load_encoder(str(tmp_path / "train.pt2"), "cpu")


def test_pt2_never_unpickles_beyond_weights_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_export(_net(), tmp_path / "enc.pt2", 16, (0.5,) * 3, (0.5,) * 3)
    seen: list[bool] = []
    orig = torch.load

    def spy(*a: object, **kw: object) -> object:
        seen.append(bool(kw.get("weights_only")))
        return orig(*a, **kw)

    monkeypatch.setattr(torch, "load", spy)
    load_encoder(str(path), "cpu")
    assert seen and all(seen)  # the example inputs are torch.load-ed, with weights_only=True
    monkeypatch.setattr(torch, "load", orig)

    # Example inputs replaced by a pickle that runs code: torch would retry with weights_only=False
    # (and run it); auditmi refuses and nothing runs.
    marker = tmp_path / "pwned"

    class Boom:
        def __reduce__(self) -> tuple:
            import os

            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if "sample_inputs" in item.filename:
                import io

                buf = io.BytesIO()
                torch.save(((Boom(),), {}), buf)
                data = buf.getvalue()
            dst.writestr(item, data)
    with pytest.raises(EncoderUnavailableError, match="never unpickles"):
        load_encoder(str(evil), "cpu")
    assert not marker.exists()

    # An archive carrying native code (an AOTInductor package) or a non-tensor constant is refused unread.
    for name, extra in (("native.pt2", ("enc/data/aotinductor/model.so", b"\x7fELF")),
                        ("custom.pt2", ("enc/data/constants/model_constants_config.json",
                                        json.dumps({"config": {"obj": {"path_name": "custom_obj_0"}}}).encode()))):
        bad = tmp_path / name
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
            for item in src.infolist():
                if not item.filename.endswith("_constants_config.json") or "custom" not in name:
                    dst.writestr(item, src.read(item))
            dst.writestr(extra[0], extra[1])
        with pytest.raises(EncoderUnavailableError, match="native code|non-tensor constant"):
            load_encoder(str(bad), "cpu")
    (tmp_path / "notes.pt2").write_bytes(b"not a zip")
    with pytest.raises(EncoderUnavailableError, match="not a torch.export archive"):
        load_encoder(str(tmp_path / "notes.pt2"), "cpu")


def test_torchscript_loads_without_deprecation_warning(tmp_path: Path) -> None:
    net = _net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(net, torch.randn(1, 3, 16, 16)), str(tmp_path / "enc.pt"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc = load_encoder(str(tmp_path / "enc.pt"), "cpu")
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(enc.embed(x), torch.nn.functional.normalize(net(x), dim=-1), atol=1e-6)
