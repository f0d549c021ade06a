"""Tests for auditmi.encoders: spec parsing, the three backends, integrity checks, devices."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch

from auditmi.encoders import ALIASES, list_encoders, load_encoder, parse_spec, resolve_device
from auditmi.encoders import openclip as oc_backend
from auditmi.encoders.local import CONFIG_NAME, WEIGHTS_NAME, load_backbone, read_config, save_checkpoint
from auditmi.errors import EncoderUnavailableError, InputError
from auditmi.models import ARCH_PRESETS, arch_config, build_backbone

from conftest import TINY_INPUT_SIZE

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


# --------------------------------------------------------------------------------------------
# Spec parsing
# --------------------------------------------------------------------------------------------


def test_parse_spec_aliases() -> None:
    assert parse_spec("clip-vit-b32") == ("open_clip", "ViT-B-32", "openai")
    assert parse_spec("  clip-vit-l14  ") == ("open_clip", "ViT-L-14", "openai")
    for alias, (model, tag) in ALIASES.items():
        assert parse_spec(alias) == ("open_clip", model, tag)


def test_parse_spec_explicit_backends(tmp_path: Path) -> None:
    assert parse_spec("open_clip:ViT-B-16@laion2b_s34b_b88k") == ("open_clip", "ViT-B-16", "laion2b_s34b_b88k")
    assert parse_spec("open_clip:RN50") == ("open_clip", "RN50", "openai")
    assert parse_spec("open_clip:ViT-B-32@random") == ("open_clip", "ViT-B-32", "random")
    assert parse_spec("open_clip:ViT-B-32@/w/model.safetensors") == ("open_clip", "ViT-B-32", "/w/model.safetensors")
    assert parse_spec("local:/some/dir") == ("local", "/some/dir", "")
    assert parse_spec("torchscript:/m/enc.bin") == ("torchscript", "/m/enc.bin", "")


def test_parse_spec_bare_paths(tmp_path: Path) -> None:
    d = tmp_path / "enc"
    d.mkdir()
    assert parse_spec(str(d)) == ("local", str(d), "")
    for suffix in (".pt", ".ts", ".torchscript", ".PT"):
        f = tmp_path / f"model{suffix}"
        f.write_bytes(b"x")
        assert parse_spec(str(f)) == ("torchscript", str(f), "")


def test_home_relative_paths_are_expanded(tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(tiny_checkpoint, tmp_path / "enc")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_spec("~/enc") == ("local", str(tmp_path / "enc"), "")
    assert parse_spec("local:~/enc") == ("local", str(tmp_path / "enc"), "")
    assert load_encoder("~/enc", device="cpu").backend == "local"
    assert load_encoder("local:~/enc", device="cpu").backend == "local"


@pytest.mark.parametrize("spec", ["resnet50-imagenet", "clip-vit-b33", "missing_model.pt", "notes.txt"])
def test_unknown_spec_lists_valid_forms(spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if spec == "notes.txt":
        (tmp_path / spec).write_text("not an encoder")
    with pytest.raises(EncoderUnavailableError) as ei:
        parse_spec(spec)
    msg = str(ei.value)
    assert spec in msg
    for form in ("clip-vit-b32", "open_clip:MODEL@TAG", "encoder.json", "TorchScript", "auditmi encoders"):
        assert form in msg, form
    assert ei.value.exit_code == 4


def test_list_encoders_reports_input_sizes_without_download() -> None:
    rows = {r.name: r for r in list_encoders()}
    assert set(rows) == set(ALIASES)
    assert rows["clip-vit-b32"].input_size == 224
    assert rows["clip-vit-l14-336"].input_size == 336
    assert rows["clip-vit-b32"].spec == "open_clip:ViT-B-32@openai"


# --------------------------------------------------------------------------------------------
# Local checkpoints
# --------------------------------------------------------------------------------------------


def _batch(size: int = TINY_INPUT_SIZE, n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_local_checkpoint_round_trip_gives_identical_embeddings(tiny_checkpoint: Path, tmp_path: Path) -> None:
    model, cfg = load_backbone(tiny_checkpoint)
    x = _batch()
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.eval()(x), dim=-1)
    enc = load_encoder(str(tiny_checkpoint), device="cpu")
    got = enc.embed(x)
    assert torch.allclose(got, expected, atol=1e-6)
    assert enc.backend == "local"
    assert enc.input_size == TINY_INPUT_SIZE
    assert enc.mean == (0.5, 0.4, 0.3) and enc.std == (0.2, 0.25, 0.3)
    assert enc.identity == f"local:sha256:{cfg['weights_sha256']}"
    # Saving the loaded backbone again reproduces the same weights, hence the same identity.
    again = save_checkpoint(tmp_path / "copy", model, cfg["architecture"], TINY_INPUT_SIZE, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    enc2 = load_encoder(f"local:{again}", device="cpu")
    assert enc2.identity == enc.identity
    assert torch.equal(enc2.embed(x), got)


def test_checkpoint_config_is_json_and_describes_the_model(tiny_checkpoint: Path) -> None:
    cfg = read_config(tiny_checkpoint)
    assert cfg["format"] == "auditmi-encoder" and cfg["schema_version"] == 1
    assert cfg["architecture"] == arch_config("resnet-tiny")
    assert cfg["embedding_dim"] == 32
    assert len(cfg["weights_sha256"]) == 64
    enc = load_encoder(str(tiny_checkpoint), device="cpu")
    assert enc.embed(_batch()).shape == (3, 32)


def _copy(ckpt: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(ckpt, dst)
    return dst


def test_tampered_weights_are_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    ck = _copy(tiny_checkpoint, tmp_path)
    w = ck / WEIGHTS_NAME
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit inside the tensor data
    w.write_bytes(bytes(data))
    with pytest.raises(EncoderUnavailableError, match="sha256"):
        load_encoder(str(ck), device="cpu")


def _write_pinned(ck: Path, cfg: dict) -> None:
    from auditmi.bundle import pin

    (ck / CONFIG_NAME).write_text(json.dumps(pin(cfg, cfg["files"])))


def test_unpinned_checkpoint_of_an_older_release_is_refused_with_the_fix(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """A checkpoint written before encoder.json was pinned is refused with how to rebuild or re-pin it."""
    from auditmi.bundle import repin

    ck = _copy(tiny_checkpoint, tmp_path)
    cfg = json.loads((ck / CONFIG_NAME).read_text())
    cfg.pop("bundle_sha256")
    cfg.pop("files")
    (ck / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(EncoderUnavailableError, match="without a bundle_sha256") as ei:
        load_encoder(str(ck), device="cpu")
    assert "python -m auditmi.bundle repin" in str(ei.value)
    weights = (ck / WEIGHTS_NAME).read_bytes()
    repin(ck)
    assert (ck / WEIGHTS_NAME).read_bytes() == weights
    load_encoder(str(ck), device="cpu")


def test_wrong_schema_version_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    ck = _copy(tiny_checkpoint, tmp_path)
    cfg = json.loads((ck / CONFIG_NAME).read_text())
    cfg["schema_version"] = 99
    (ck / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(EncoderUnavailableError, match="schema_version 99"):
        load_encoder(str(ck), device="cpu")


def test_foreign_json_and_missing_files_are_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    ck = _copy(tiny_checkpoint, tmp_path)
    cfg = json.loads((ck / CONFIG_NAME).read_text())
    (ck / CONFIG_NAME).write_text(json.dumps({**cfg, "format": "something-else"}))
    with pytest.raises(EncoderUnavailableError, match="not an auditmi encoder config"):
        load_encoder(str(ck), device="cpu")
    (ck / CONFIG_NAME).write_text(json.dumps(cfg))
    (ck / WEIGHTS_NAME).unlink()
    with pytest.raises(EncoderUnavailableError, match="missing"):
        load_encoder(str(ck), device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EncoderUnavailableError, match="no encoder.json"):
        load_encoder(f"local:{empty}", device="cpu")


def test_unknown_architecture_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    ck = _copy(tiny_checkpoint, tmp_path)
    cfg = json.loads((ck / CONFIG_NAME).read_text())
    cfg["architecture"] = {"arch": "transformer-xxl"}
    _write_pinned(ck, cfg)  # a pinned config that is wrong (a buggy writer)
    with pytest.raises(EncoderUnavailableError, match="unknown architecture"):
        load_encoder(str(ck), device="cpu")
    with pytest.raises(EncoderUnavailableError, match="resnet-tiny"):
        arch_config("resnet-9000")


def test_mismatched_weights_and_architecture_are_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    ck = _copy(tiny_checkpoint, tmp_path)
    save_checkpoint(ck, build_backbone(arch_config("resnet-tiny")), arch_config("resnet-tiny"), TINY_INPUT_SIZE)
    cfg = json.loads((ck / CONFIG_NAME).read_text())
    cfg["architecture"] = arch_config("convnet-w16")
    _write_pinned(ck, cfg)  # a pinned config that is wrong (a buggy writer)
    with pytest.raises(EncoderUnavailableError, match="cannot load weights"):
        load_encoder(str(ck), device="cpu")


@pytest.mark.parametrize("preset", sorted(ARCH_PRESETS))
def test_every_preset_builds_and_reports_its_embedding_size(preset: str) -> None:
    m = build_backbone(arch_config(preset)).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, m.out_dim)


def test_embed_returns_unit_norm_float32_without_grad(tiny_checkpoint: Path) -> None:
    enc = load_encoder(str(tiny_checkpoint), device="cpu")
    x = _batch().requires_grad_()
    with torch.enable_grad():
        e = enc.embed(x)
    assert e.dtype == torch.float32
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    assert not e.requires_grad and e.grad_fn is None
    assert all(not p.requires_grad for p in enc.module.parameters())
    assert not enc.module.training
    assert enc.autocast_dtype is None  # no autocast on the CPU
    d = enc.describe()
    assert d["backend"] == "local" and d["input_size"] == TINY_INPUT_SIZE and d["device"] == "cpu"
    json.dumps(d)


# --------------------------------------------------------------------------------------------
# TorchScript
# --------------------------------------------------------------------------------------------


class _TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.* deprecation notices
def test_torchscript_with_sidecar_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _TinyNet().eval()
    traced = torch.jit.trace(net, torch.randn(1, 3, 32, 32))
    path = tmp_path / "enc.pt"
    torch.jit.save(traced, str(path))
    (tmp_path / "enc.pt.json").write_text(json.dumps({"input_size": 32, "mean": [0.1, 0.2, 0.3], "std": [0.9, 0.8, 0.7]}))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(net(x), dim=-1)
    for spec in (str(path), f"torchscript:{path}"):
        enc = load_encoder(spec, device="cpu")
        assert enc.backend == "torchscript"
        assert enc.input_size == 32
        assert enc.mean == (0.1, 0.2, 0.3) and enc.std == (0.9, 0.8, 0.7)
        assert enc.identity.startswith("torchscript:sha256:")
        assert enc.info["sidecar"] == str(tmp_path / "enc.pt.json")
        assert torch.allclose(enc.embed(x), expected, atol=1e-6)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_without_sidecar_assumes_imagenet_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "enc.ts"
    torch.jit.save(torch.jit.script(_TinyNet().eval()), str(path))
    enc = load_encoder(str(path), device="cpu")
    assert enc.input_size == 224
    assert enc.mean == (0.485, 0.456, 0.406)
    assert "no sidecar" in enc.info["note"]


def test_pickled_state_dict_is_refused_without_unpickling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "weights.pt"
    torch.save(_TinyNet().state_dict(), str(path))
    (tmp_path / "weights.pt.json").write_text(json.dumps({"input_size": 32}))

    def forbidden(*a, **k):  # pragma: no cover - reaching it is the failure
        raise AssertionError("the file was deserialised")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(torch.jit, "load", forbidden)
    with pytest.raises(EncoderUnavailableError, match="not TorchScript") as ei:
        load_encoder(str(path), device="cpu")
    assert "never unpickles" in str(ei.value)


def test_non_zip_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(b"\x80\x02junk that is not a zip archive")
    with pytest.raises(EncoderUnavailableError, match="not a TorchScript archive"):
        load_encoder(str(path), device="cpu")
    with pytest.raises(EncoderUnavailableError, match="does not exist"):
        load_encoder(f"torchscript:{tmp_path / 'absent.pt'}", device="cpu")


# --------------------------------------------------------------------------------------------
# open_clip
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_vit_b32():
    return load_encoder("open_clip:ViT-B-32@random", device="cpu")


def test_open_clip_random_builds_real_architecture(random_vit_b32) -> None:
    enc = random_vit_b32
    assert enc.backend == "open_clip"
    assert enc.input_size == 224
    assert enc.mean == pytest.approx(OPENAI_MEAN) and enc.std == pytest.approx(OPENAI_STD)
    assert enc.info["embedding_dim"] == 512
    assert "NOT a pretrained model" in enc.source
    e = enc.embed(torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)))
    assert e.shape == (2, 512) and e.dtype == torch.float32
    assert torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)
    # Only the image tower is kept (the text tower is never used).
    assert not hasattr(enc.module, "token_embedding")


def test_open_clip_random_is_deterministic(random_vit_b32) -> None:
    """@random names one fixed set of weights (seeded), so its identity is stable."""
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clip = open_clip.create_model("ViT-B-32", pretrained=None)
    from auditmi.encoders.base import sha256_state_dict

    assert random_vit_b32.identity == f"open_clip:ViT-B-32@random:sha256:{sha256_state_dict(clip.visual)}"
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(clip.eval().encode_image(x), dim=-1)
    assert torch.allclose(random_vit_b32.embed(x), ref, atol=1e-5)


@pytest.mark.slow
def test_open_clip_local_weights_file(random_vit_b32, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """open_clip:MODEL@/path loads a local safetensors file (here: the @random weights)."""
    import open_clip
    from safetensors.torch import save_file

    from auditmi.encoders.base import sha256_file

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clip = open_clip.create_model("ViT-B-32", pretrained=None)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    monkeypatch.setenv("HOME", str(tmp_path))
    enc = load_encoder("open_clip:ViT-B-32@~/w.safetensors", device="cpu")
    assert enc.identity == f"open_clip:ViT-B-32@sha256:{sha256_file(path)}"
    assert enc.source == str(path.resolve())
    x = torch.randn(2, 3, 224, 224)
    assert torch.allclose(enc.embed(x), random_vit_b32.embed(x), atol=1e-5)


def test_open_clip_unknown_tag_lists_available_tags() -> None:
    with pytest.raises(EncoderUnavailableError) as ei:
        load_encoder("open_clip:ViT-B-32@no_such_tag", device="cpu")
    msg = str(ei.value)
    assert "no_such_tag" in msg and "openai" in msg and "laion2b_s34b_b79k" in msg and "@random" in msg


def test_open_clip_unknown_model_is_refused() -> None:
    with pytest.raises(EncoderUnavailableError, match="no model 'ViT-Q-99'"):
        load_encoder("open_clip:ViT-Q-99@random", device="cpu")


def test_open_clip_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(EncoderUnavailableError, match="does not exist"):
        load_encoder(f"open_clip:ViT-B-32@{tmp_path / 'nope.safetensors'}", device="cpu")


@pytest.fixture
def empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, so no test ever depends on (or fills) the user's cache."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return cache


def _assert_offline_help(msg: str) -> None:
    assert "HF_HOME" in msg and "HF_HUB_OFFLINE=1" in msg
    # The path form must name the QuickGELU variant for OpenAI weights (see load_open_clip).
    assert "open_clip:ViT-B-32-quickgelu@/path/to/" in msg


def test_clip_alias_offline_env_fails_fast_with_instructions(
    empty_hub_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(oc_backend, "_probe", lambda url, timeout=0: pytest.fail("probed the network while HF_HUB_OFFLINE=1"))
    t0 = time.perf_counter()
    with pytest.raises(EncoderUnavailableError) as ei:
        load_encoder("clip-vit-b32", device="cpu")
    elapsed = time.perf_counter() - t0
    assert elapsed < 15, f"offline failure took {elapsed:.1f}s"
    assert ei.value.exit_code == 4
    assert "HF_HUB_OFFLINE is set" in str(ei.value)
    _assert_offline_help(str(ei.value))


def test_clip_alias_unreachable_network_fails_fast(empty_hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without HF_HUB_OFFLINE, a failed connectivity probe switches to cache-only loading."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    probed: list[str] = []

    def unreachable(url: str, timeout: float = 0) -> str:
        probed.append(url)
        return "cannot connect to huggingface.co:443 (test)"

    monkeypatch.setattr(oc_backend, "_probe", unreachable)
    from huggingface_hub import constants

    offline_before = constants.HF_HUB_OFFLINE
    t0 = time.perf_counter()
    with pytest.raises(EncoderUnavailableError) as ei:
        load_encoder("clip-vit-b32", device="cpu")
    assert time.perf_counter() - t0 < 15
    assert probed and "huggingface" in probed[0]
    assert "offline (cannot connect to huggingface.co:443 (test))" in str(ei.value)
    _assert_offline_help(str(ei.value))
    assert offline_before == constants.HF_HUB_OFFLINE  # offline mode was only forced for the call


def test_probe_reports_closed_and_open_ports() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        assert oc_backend._probe(f"http://127.0.0.1:{port}", timeout=2) is None
    finally:
        server.close()
    t0 = time.perf_counter()
    reason = oc_backend._probe(f"http://127.0.0.1:{port}", timeout=2)
    assert reason is not None and "127.0.0.1" in reason
    assert time.perf_counter() - t0 < 3


@pytest.mark.parametrize(
    "spec,quick",
    [("clip-vit-b32", True), ("open_clip:ViT-B-32@laion2b_s34b_b79k", False), ("open_clip:ViT-B-32-quickgelu@openai", True)],
)
def test_pretrained_tags_get_their_training_activation(spec: str, quick: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """open_clip 3 only warns when OpenAI (QuickGELU) weights go into a GELU model: auditmi must
    ask for QuickGELU itself, or `clip-vit-b32` would embed with a different network."""
    import open_clip

    seen: dict = {}

    def fake_create_model(model, pretrained=None, **kwargs):
        seen.update(kwargs, model=model, pretrained=pretrained)
        raise RuntimeError("stop before downloading")

    monkeypatch.setattr(oc_backend, "_probe", lambda url, timeout=0: None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(open_clip, "create_model", fake_create_model)
    with pytest.raises(EncoderUnavailableError, match="stop before downloading"):
        load_encoder(spec, device="cpu")
    assert seen["force_quick_gelu"] is quick
    assert seen["weights_only"] is True


# --------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="invalid --device"):
        resolve_device("tpu-ish")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
@pytest.mark.parametrize("dev", ["cuda", "cuda:0"])
def test_cuda_without_gpu_is_an_input_error(dev: str) -> None:
    with pytest.raises(InputError, match="no CUDA GPU"):
        resolve_device(dev)
    with pytest.raises(InputError):
        load_encoder("open_clip:ViT-B-32@random", device=dev)


@pytest.mark.gpu
@pytest.mark.slow
def test_local_encoder_on_gpu_matches_cpu(tiny_checkpoint: Path) -> None:
    x = _batch()
    cpu = load_encoder(str(tiny_checkpoint), device="cpu", amp=False).embed(x)
    gpu = load_encoder(str(tiny_checkpoint), device="cuda", amp=False).embed(x)
    assert gpu.device.type == "cpu" or gpu.is_cuda
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)
    amp = load_encoder(str(tiny_checkpoint), device="cuda", amp=True)
    assert amp.autocast_dtype in (torch.bfloat16, torch.float16)
    assert torch.allclose(amp.embed(x).cpu(), cpu, atol=5e-2)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_encoder_on_gpu(tmp_path: Path) -> None:
    net = _TinyNet().eval()
    path = tmp_path / "enc.pt"
    torch.jit.save(torch.jit.trace(net, torch.randn(1, 3, 32, 32)), str(path))
    x = torch.randn(2, 3, 32, 32)
    cpu = load_encoder(str(path), device="cpu").embed(x)
    gpu = load_encoder(str(path), device="cuda", amp=False).embed(x)
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)


def test_open_clip_root_log_messages_are_kept_off_the_terminal(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from auditmi.encoders.openclip import _swallow_root_log

    with caplog.at_level(logging.INFO):
        with _swallow_root_log() as seen:
            logging.warning("No pretrained weights loaded for model 'ViT-B-32'. Model initialized randomly.")
            logging.error("Failed to download")
        assert seen == ["No pretrained weights loaded for model 'ViT-B-32'. Model initialized randomly.", "Failed to download"]
        assert not caplog.records
        logging.warning("after")  # the filter is gone once the encoder is loaded
    assert [r.getMessage() for r in caplog.records] == ["after"]
