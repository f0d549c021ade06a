"""Tests for auditmi.shadow: the NT-Xent loss and resumable contrastive pre-training."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from auditmi.encoders import load_encoder
from auditmi.encoders.local import load_backbone
from auditmi.errors import InputError
from auditmi.shadow import ImageBank, TrainConfig, nt_xent, train_encoder

from conftest import make_image

N_IMAGES = 32


def _cfg(**kw) -> TrainConfig:
    base = dict(arch="resnet-tiny", image_size=16, epochs=2, batch_size=16, seed=0, checkpoint_every=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def train_images() -> torch.Tensor:
    return torch.stack([make_image(20, 20, seed=100 + i) for i in range(N_IMAGES)])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, train_images: torch.Tensor) -> tuple[Path, Path, TrainConfig]:
    run = tmp_path_factory.mktemp("shadow") / "run"
    cfg = _cfg()
    final = train_encoder(train_images, run, cfg, device="cpu", extra_meta={"member_sha256": ["x"]})
    return run, final, cfg


def _weights(path: Path) -> dict[str, torch.Tensor]:
    model, _ = load_backbone(path)
    return model.state_dict()


# --------------------------------------------------------------------------------------------
# NT-Xent
# --------------------------------------------------------------------------------------------


def test_nt_xent_lower_for_aligned_pairs_than_random_ones() -> None:
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(32, 16, generator=g)
    aligned = nt_xent(z1, z1 + 0.05 * torch.randn(32, 16, generator=g), 0.5)
    random = nt_xent(z1, torch.randn(32, 16, generator=g), 0.5)
    assert aligned < random
    # With random pairs the positive is no better than any of the 2n - 2 negatives: ~log(2n - 1).
    assert abs(random.item() - torch.log(torch.tensor(63.0)).item()) < 0.5
    assert torch.isfinite(aligned) and aligned.ndim == 0


def test_nt_xent_is_symmetric_and_scale_invariant() -> None:
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    assert torch.allclose(nt_xent(z1, z2, 0.2), nt_xent(z2, z1, 0.2), atol=1e-6)
    assert torch.allclose(nt_xent(z1, z2, 0.2), nt_xent(3 * z1, 0.5 * z2, 0.2), atol=1e-5)


def test_nt_xent_gradients_pull_positives_together() -> None:
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(8, 4, generator=g, requires_grad=True)
    z2 = torch.randn(8, 4, generator=g)
    nt_xent(z1, z2, 0.5).backward()
    moved = (z1 - 0.1 * z1.grad).detach()
    cos = torch.nn.functional.cosine_similarity
    assert cos(moved, z2).mean() > cos(z1.detach(), z2).mean()


# --------------------------------------------------------------------------------------------
# Training runs
# --------------------------------------------------------------------------------------------


def test_training_writes_a_loadable_final_checkpoint(trained_run) -> None:
    run, final, cfg = trained_run
    assert final == run / "final"
    enc = load_encoder(str(final), device="cpu")
    assert enc.input_size == 16 and enc.backend == "local"
    e = enc.embed(torch.randn(4, 3, 16, 16))
    assert e.shape == (4, 32) and torch.allclose(e.norm(dim=1), torch.ones(4), atol=1e-5)
    meta = json.loads((final / "encoder.json").read_text())["training"]
    assert meta["config_digest"] == cfg.digest()
    assert meta["epochs_done"] == 2 and meta["n_images"] == N_IMAGES
    assert meta["member_sha256"] == ["x"]
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(h["loss"] > 0 for h in history)


def test_training_changes_the_weights(trained_run) -> None:
    run, final, _ = trained_run
    from auditmi.models import arch_config, build_backbone

    torch.manual_seed(0)
    init = build_backbone(arch_config("resnet-tiny")).state_dict()
    trained = _weights(final)
    assert any(not torch.equal(init[k], trained[k]) for k in init if init[k].is_floating_point())


def test_same_config_is_reused_without_retraining(trained_run, train_images: torch.Tensor) -> None:
    run, final, cfg = trained_run
    w = final / "model.safetensors"
    before = w.stat().st_mtime_ns
    calls: list[int] = []
    t0 = time.perf_counter()
    again = train_encoder(train_images, run, cfg, device="cpu", progress=lambda s, t, d: calls.append(s))
    assert time.perf_counter() - t0 < 0.5
    assert again == final and not calls
    assert w.stat().st_mtime_ns == before
    # Checkpointing cadence is not part of the configuration: still reused.
    assert train_encoder(train_images, run, _cfg(checkpoint_every=5, snapshot_epochs=[1]), device="cpu") == final


def test_run_folder_with_a_different_config_is_refused(trained_run, train_images: torch.Tensor) -> None:
    run, _, _ = trained_run
    with pytest.raises(InputError, match="different configuration"):
        train_encoder(train_images, run, _cfg(lr=0.01), device="cpu")


def test_interrupted_run_resumes_to_identical_weights(tmp_path: Path, train_images: torch.Tensor) -> None:
    cfg = _cfg(epochs=4, checkpoint_every=2)
    steps_per_epoch = N_IMAGES // 16
    straight = train_encoder(train_images, tmp_path / "straight", cfg, device="cpu")

    class Interrupted(Exception):
        pass

    def crash_in_epoch_4(step: int, total: int, info: dict) -> None:
        assert total == 4 * steps_per_epoch
        if step == 3 * steps_per_epoch + 1:
            raise Interrupted

    run = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        train_encoder(train_images, run, cfg, device="cpu", progress=crash_in_epoch_4)
    assert not (run / "final").exists()
    assert json.loads((run / "last" / "train_state.json").read_text())["epoch"] == 2

    steps: list[int] = []
    final = train_encoder(train_images, run, cfg, device="cpu", progress=lambda s, t, d: steps.append(s))
    # Resumed after epoch 2: only epochs 3 and 4 ran again.
    assert steps == list(range(2 * steps_per_epoch + 1, 4 * steps_per_epoch + 1))
    a, b = _weights(straight), _weights(final)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5, rtol=0), k
    hist = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]


def test_snapshot_epochs_are_written(tmp_path: Path, train_images: torch.Tensor) -> None:
    cfg = _cfg(epochs=3, checkpoint_every=3, snapshot_epochs=[1, 2])
    train_encoder(train_images[:16], tmp_path / "run", cfg, device="cpu")
    for e in (1, 2):
        snap = tmp_path / "run" / f"epoch-{e:04d}"
        meta = json.loads((snap / "encoder.json").read_text())
        assert meta["training"]["epochs_done"] == e
        load_encoder(str(snap), device="cpu")
    assert not (tmp_path / "run" / "epoch-0003").exists()
    assert not torch.equal(
        next(iter(_weights(tmp_path / "run" / "epoch-0001").values())),
        next(iter(_weights(tmp_path / "run" / "final").values())),
    )


def test_mixed_size_images_and_adam_train(tmp_path: Path) -> None:
    imgs = [make_image(14 + i % 5, 18 + i % 3, seed=i) for i in range(12)]
    cfg = _cfg(epochs=1, batch_size=6, optimizer="adam", lr=1e-3)
    final = train_encoder(imgs, tmp_path / "run", cfg, device="cpu")
    assert load_encoder(str(final), device="cpu").embed(torch.randn(2, 3, 16, 16)).shape == (2, 32)


def test_bad_inputs_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="at least 2 images"):
        ImageBank([make_image(8, 8)])
    with pytest.raises(InputError, match="unknown optimizer"):
        train_encoder([make_image(8, 8), make_image(8, 8, seed=1)], tmp_path / "r", _cfg(optimizer="lamb"), device="cpu")


def test_config_digest_ignores_checkpoint_cadence_only() -> None:
    base = _cfg()
    assert base.digest() == _cfg(checkpoint_every=7, snapshot_epochs=[3], amp=False).digest()
    assert base.digest() != _cfg(epochs=3).digest()
    assert base.digest() != _cfg(arch="convnet-w16").digest()
    assert base.to_dict()["arch_config"]["arch"] == "cifar_resnet"


def test_run_folder_with_other_images_is_refused(trained_run, train_images: torch.Tensor) -> None:
    run, _, _ = trained_run
    other = train_images.flip(-1).contiguous()
    with pytest.raises(InputError, match="different images"):
        train_encoder(other, run, _cfg(), device="cpu")


def test_kill_between_checkpoint_files_resumes_to_identical_weights(tmp_path: Path, train_images: torch.Tensor, monkeypatch) -> None:
    """A kill after some files of a checkpoint were written leaves the previous checkpoint whole (issue 14 item 9)."""
    import auditmi.shadow as shadow_mod

    cfg = _cfg(epochs=4, checkpoint_every=2)
    straight = train_encoder(train_images, tmp_path / "straight", cfg, device="cpu")

    class Killed(BaseException):
        pass

    real = shadow_mod._state_files

    def dies_after_the_tensors(*args, **kw):
        files = real(*args, **kw)
        if args[3] == 4:  # the epoch-4 checkpoint: weights and state tensors written, then killed
            def killed(tmp: str) -> None:
                raise Killed
            files[shadow_mod.STATE_JSON] = killed
        return files

    monkeypatch.setattr(shadow_mod, "_state_files", dies_after_the_tensors)
    run = tmp_path / "run"
    with pytest.raises(Killed):
        train_encoder(train_images, run, cfg, device="cpu")
    monkeypatch.setattr(shadow_mod, "_state_files", real)
    # The epoch-2 checkpoint is intact and consistent; no half-written one is visible.
    assert json.loads((run / "last" / "train_state.json").read_text())["epoch"] == 2
    assert json.loads((run / "last" / "encoder.json").read_text())["training"]["epochs_done"] == 2
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []
    final = train_encoder(train_images, run, cfg, device="cpu")
    a, b = _weights(straight), _weights(final)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_old_separate_file_train_state_is_refused_with_the_fix(tmp_path: Path, train_images: torch.Tensor) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_state.json").write_text("{}")
    with pytest.raises(InputError, match="older auditmi"):
        train_encoder(train_images, run, _cfg(), device="cpu")

