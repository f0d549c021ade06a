"""timm and Hugging Face transformers backends, on tiny random models saved to temporary folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from auditmi.encoders import load_encoder, parse_spec
from auditmi.errors import EncoderUnavailableError

from e2e_support import assert_user_error, run_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "fashion"

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")


class _Boom:
    """A pickle that runs code when unpickled (it would create ``marker``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _malicious_bin(path: Path, marker: Path) -> None:
    torch.save({"weight": torch.zeros(2), "evil": _Boom(marker)}, path)


@pytest.fixture(scope="module")
def timm_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    from timm.models._hub import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False)
    d = tmp_path_factory.mktemp("timm") / "test_vit"
    save_for_hf(model, str(d), safe_serialization=True)
    model.reset_classifier(0)
    return d, model.eval()


def test_timm_dir_gives_pooled_features_and_timm_preprocessing(timm_dir: tuple[Path, torch.nn.Module]) -> None:
    d, model = timm_dir
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]
    assert parse_spec(f"timm:{d}") == ("timm", str(d), "")
    enc = load_encoder(f"timm:{d}", "cpu")
    dc = timm.data.resolve_model_data_config(model)
    assert (enc.input_size, enc.mean, enc.std) == (dc["input_size"][-1], tuple(dc["mean"]), tuple(dc["std"]))
    x = torch.randn(3, 3, enc.input_size, enc.input_size)
    want = torch.nn.functional.normalize(model(x), dim=-1)  # num_classes=0: pooled pre-logits
    assert enc.embed(x).shape == (3, model.num_features)
    assert torch.allclose(enc.embed(x), want, atol=1e-5)
    assert enc.identity == load_encoder(f"timm:{d}", "cpu").identity and "sha256:" in enc.identity


def test_timm_refuses_pickles_that_are_not_plain_weights(tmp_path: Path, timm_dir: tuple[Path, torch.nn.Module]) -> None:
    d = tmp_path / "evil"
    d.mkdir()
    (d / "config.json").write_text((timm_dir[0] / "config.json").read_text())
    marker = tmp_path / "pwned"
    _malicious_bin(d / "pytorch_model.bin", marker)
    with pytest.raises(EncoderUnavailableError, match="never unpickles"):
        load_encoder(f"timm:{d}", "cpu")
    assert not marker.exists()


def test_hub_names_offline_give_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(EncoderUnavailableError, match="offline .*HF_HUB_OFFLINE.*timm:DIR") as ei:
        load_encoder("timm:test_vit@r160_in1k", "cpu")
    assert ei.value.exit_code == 4
    with pytest.raises(EncoderUnavailableError, match="offline .*not in the Hugging Face cache.*hf:DIR"):
        load_encoder("hf:openai/clip-vit-base-patch32", "cpu")
    with pytest.raises(EncoderUnavailableError, match="timm has no model 'no_such_net'"):
        load_encoder("timm:no_such_net", "cpu")


def test_cli_offline_hub_encoder_exits_4(tmp_path: Path) -> None:
    env_home = tmp_path / "hf"
    os.environ["HF_HOME"], old = str(env_home), os.environ.get("HF_HOME")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        proc = run_cli("scan", EXAMPLE / "suspect" / "img_000.png", "--encoder", "timm:test_vit@r160_in1k",
                       "--calibration", EXAMPLE / "calibration", "--quiet", "--no-cache")
    finally:
        del os.environ["HF_HUB_OFFLINE"]
        if old is None:
            del os.environ["HF_HOME"]
        else:
            os.environ["HF_HOME"] = old
    assert_user_error(proc, 4, "offline", "HF_HUB_OFFLINE", "timm:DIR")


def _save_hf(model: torch.nn.Module, processor: object, d: Path) -> Path:
    model.save_pretrained(str(d))
    processor.save_pretrained(str(d))  # type: ignore[attr-defined]
    return d


def test_hf_clip_with_projection_gives_image_embeds(tmp_path: Path) -> None:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                           patch_size=8, projection_dim=16)
    model = CLIPVisionModelWithProjection(cfg).eval()
    d = _save_hf(model, CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), tmp_path / "clip")
    enc = load_encoder(f"hf:{d}", "cpu")
    assert enc.input_size == 32 and enc.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    x = torch.randn(4, 3, 32, 32)
    got = enc.embed(x)
    assert got.shape == (4, 16)  # projection_dim, not hidden_size: the projection was kept
    assert torch.allclose(got, torch.nn.functional.normalize(model(pixel_values=x).image_embeds, dim=-1), atol=1e-5)
    assert enc.info["embedding"] == "image_embeds"


@pytest.mark.parametrize("kind", ["dinov2", "siglip"])
def test_hf_dinov2_and_siglip_give_pooler_output(tmp_path: Path, kind: str) -> None:
    import transformers as T

    torch.manual_seed(0)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    if kind == "dinov2":
        model = T.Dinov2Model(T.Dinov2Config(**small, image_size=28, patch_size=14)).eval()
        proc = T.BitImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                   image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
        side = 28
    else:
        model = T.SiglipVisionModel(T.SiglipVisionConfig(**small, image_size=32, patch_size=8)).eval()
        proc = T.SiglipImageProcessor(size={"height": 32, "width": 32})
        side = 32
    d = _save_hf(model, proc, tmp_path / kind)
    enc = load_encoder(f"hf:{d}", "cpu")
    assert enc.input_size == side
    x = torch.randn(3, 3, side, side)
    assert torch.allclose(enc.embed(x), torch.nn.functional.normalize(model(pixel_values=x).pooler_output, dim=-1), atol=1e-5)


def test_hf_refuses_unsafe_pickles_and_missing_architecture(tmp_path: Path) -> None:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                           patch_size=8, projection_dim=16)
    model = CLIPVisionModelWithProjection(cfg).eval()
    d = _save_hf(model, CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), tmp_path / "m")
    # Plain weights in a .bin load (with weights_only=True) ...
    state = model.state_dict()
    (d / "model.safetensors").unlink()
    torch.save(state, d / "pytorch_model.bin")
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(load_encoder(f"hf:{d}", "cpu").embed(x),
                          torch.nn.functional.normalize(model(pixel_values=x).image_embeds, dim=-1), atol=1e-5)
    # ... a pickle that would run code is refused, and never runs.
    marker = tmp_path / "pwned"
    _malicious_bin(d / "pytorch_model.bin", marker)
    with pytest.raises(EncoderUnavailableError):
        load_encoder(f"hf:{d}", "cpu")
    assert not marker.exists()
    # No architectures: refused rather than guessed with AutoModel (which would drop the projection).
    c = json.loads((d / "config.json").read_text())
    c.pop("architectures")
    (d / "config.json").write_text(json.dumps(c))
    with pytest.raises(EncoderUnavailableError, match="config.architectures"):
        load_encoder(f"hf:{d}", "cpu")
