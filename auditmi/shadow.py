"""Contrastive pre-training of shadow (and experimental target) encoders.

SimCLR (Chen et al. 2020): two views of each image with the method's augmentation
(:mod:`auditmi.views`), a backbone plus a 2-layer projection head, and the NT-Xent loss. The
paper pre-trains its targets and shadows with MoCo/SimCLR-style recipes (method.md, "Reference
experimental setup"); SimCLR is used here because it needs no momentum encoder or queue, which
keeps small CPU runs simple. Views are rendered as batched tensor ops, which is what makes
training feasible on a CPU (per-image PIL augmentation dominates otherwise).

Training is seeded and resumable: every ``checkpoint_every`` epochs the backbone is written in
the auditmi local-checkpoint format (``last/``) together with the projection head, optimizer
state and RNG state (``train_state.safetensors`` + ``train_state.json``), all four files in one
pinned bundle committed atomically (:mod:`auditmi.bundle`), so a kill at any moment leaves either
the previous consistent checkpoint or the new one. A run whose
``final/`` checkpoint exists with the same configuration is reused instead of retrained.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from auditmi import __version__
from auditmi._io import write_text
from auditmi.bundle import load_arrays
from auditmi.encoders.local import (
    DEFAULT_MEAN,
    DEFAULT_STD,
    is_checkpoint_dir,
    save_checkpoint,
)
from auditmi.errors import EncoderUnavailableError, InputError
from auditmi.models import ProjectionHead, arch_config, build_backbone
from auditmi.views import ViewConfig, pad_batch, render_views, sample_params

ProgressFn = Callable[[int, int, dict[str, float]], None]


#: Optimizers of SimCLR pre-training (``--optimizer``).
OPTIMIZERS = ("sgd", "adam")


@dataclass
class TrainConfig:
    """Hyper-parameters of one contrastive pre-training run (recorded in the checkpoint)."""

    arch: str | dict[str, Any] = "resnet18-w16"
    image_size: int = 32
    epochs: int = 100
    batch_size: int = 256
    optimizer: str = "sgd"  # "sgd" (SimCLR/MoCo CIFAR recipe) or "adam"
    lr: float = 0.06  # for SGD: scaled by batch_size/256, as in the MoCo CIFAR recipe
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature: float = 0.5
    proj_dim: int = 128
    seed: int = 0
    checkpoint_every: int = 10
    snapshot_epochs: list[int] = field(default_factory=list)
    amp: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-able configuration (with the resolved architecture)."""
        d = asdict(self)
        d["arch_config"] = arch_config(self.arch)
        return d

    def digest(self) -> str:
        """Hash of everything that changes the trained weights (not checkpointing cadence)."""
        d = self.to_dict()
        for k in ("checkpoint_every", "snapshot_epochs", "amp"):
            d.pop(k, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent loss of SimCLR: each view's positive is the other view of the same image."""
    z = nn.functional.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return nn.functional.cross_entropy(sim, target)


class ImageBank:
    """Training images held in memory as uint8 tensors (stacked when they share a size)."""

    def __init__(self, images: Sequence[torch.Tensor] | torch.Tensor) -> None:
        if isinstance(images, torch.Tensor):
            self.stacked: torch.Tensor | None = images
            self.items: list[torch.Tensor] = []
        else:
            shapes = {tuple(t.shape) for t in images}
            self.stacked = torch.stack(list(images)) if len(shapes) == 1 else None
            self.items = [] if self.stacked is not None else list(images)
        n = len(self)
        if n < 2:
            raise InputError(f"contrastive pre-training needs at least 2 images (got {n}).")

    def digest(self) -> str:
        """Content hash of the training images (a run is only reused or resumed on the same data)."""
        h = hashlib.sha256()
        for t in [self.stacked] if self.stacked is not None else self.items:
            h.update(str(tuple(t.shape)).encode())
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def __len__(self) -> int:
        return int(self.stacked.shape[0]) if self.stacked is not None else len(self.items)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A (B, 3, H, W) uint8 batch and its (B, 2) true sizes."""
        if self.stacked is not None:
            b = self.stacked[idx]
            sizes = torch.tensor([[b.shape[2], b.shape[3]]]).expand(b.shape[0], 2)
            return b, sizes
        return pad_batch([self.items[int(i)] for i in idx])


def load_training_images(paths: Sequence[Path], image_size: int, view_cfg: ViewConfig | None = None) -> tuple[list[torch.Tensor], list[str], list[Any]]:
    """Read training images as uint8 (3, H, W) tensors, downscaled so views never upsample a copy.

    Returns (tensors, their sha256s, skipped files with reasons).
    """
    from auditmi.images import load_many
    from auditmi.views import working_side

    loaded, skipped = load_many(list(paths), max_side=working_side(image_size, view_cfg or ViewConfig()))
    tensors = [torch.from_numpy(li.pixels).permute(2, 0, 1).contiguous() for li in loaded]
    return tensors, [li.sha256 for li in loaded], skipped


STATE_JSON, STATE_TENSORS = "train_state.json", "train_state.safetensors"


def _state_files(head: nn.Module, opt: torch.optim.Optimizer, sched: Any, epoch: int, cfg: TrainConfig, gen: torch.Generator, history: list, data_digest: str) -> dict[str, Callable[[str], None]]:
    """Writers of the training-state files, committed with the ``last/`` checkpoint as one bundle."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {f"head.{k}": v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    sd = opt.state_dict()
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    tensors["rng.generator"] = gen.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "epoch": epoch,
        "config_digest": cfg.digest(),
        "data_digest": data_digest,
        "param_groups": sd["param_groups"],
        "opt_scalars": scalars,
        "scheduler": sched.state_dict(),
        "history": history,
        "auditmi_version": __version__,
    }
    text = json.dumps(meta)
    return {STATE_TENSORS: lambda tmp: save_file(tensors, tmp), STATE_JSON: lambda tmp: Path(tmp).write_text(text)}


def _load_state(path: Path, backbone: nn.Module, head: nn.Module, opt: torch.optim.Optimizer, sched: Any, cfg: TrainConfig, gen: torch.Generator, data_digest: str) -> tuple[int, list]:
    """Restore a run from ``path/last``; returns (epochs done, history) or (0, []) if nothing to resume.

    ``last/`` holds the backbone and the training state as one pinned bundle committed atomically,
    so the weights, optimizer, scheduler and RNG states always belong to the same epoch.
    """
    from auditmi.encoders.local import load_backbone

    last = path / "last"
    if (path / STATE_JSON).is_file() and not (last / STATE_JSON).is_file():
        raise InputError(
            f"{path} holds a training run saved by an older auditmi as separate files, which cannot be checked to "
            "belong together; delete it (or use another output folder) to start over."
        )
    if not is_checkpoint_dir(last):
        return 0, []
    try:
        saved, lcfg = load_backbone(last)  # verifies the pin of every file, training state included
        if STATE_JSON not in lcfg["files"] or STATE_TENSORS not in lcfg["files"]:
            raise EncoderUnavailableError(f"{last} holds no training state")
        meta = json.loads((last / STATE_JSON).read_text())
        tensors = load_arrays(last / STATE_TENSORS, EncoderUnavailableError, "", framework="torch")
    except EncoderUnavailableError as e:
        raise InputError(f"cannot resume the training run in {path}: {e} Delete {last} to start over.") from e
    if meta.get("config_digest") != cfg.digest():
        raise InputError(
            f"{path} holds a training run with a different configuration; use another output folder "
            "or delete it to start over."
        )
    if meta.get("data_digest", data_digest) != data_digest:
        raise InputError(
            f"{path} holds a training run on different images; use another output folder or delete it to start over."
        )
    backbone.load_state_dict(saved.state_dict())
    head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for k, v in meta["opt_scalars"].items():
        pid, name = k.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    sched.load_state_dict(meta["scheduler"])
    gen.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    return int(meta["epoch"]), list(meta.get("history", []))


def train_encoder(
    images: Sequence[torch.Tensor] | torch.Tensor,
    out_dir: str | Path,
    cfg: TrainConfig,
    device: torch.device | str = "cpu",
    view_cfg: ViewConfig | None = None,
    progress: ProgressFn | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Pre-train an encoder contrastively on ``images`` and return its ``final/`` checkpoint folder.

    Args:
        images: uint8 (3, H, W) tensors (or a stacked (N, 3, H, W) tensor).
        out_dir: run folder; holds ``last/``, ``final/``, ``epoch-XXXX/`` snapshots and train state.
        cfg: hyper-parameters.
        device: where to train (mixed precision bf16 autocast on CUDA when ``cfg.amp``).
        view_cfg: augmentation (defaults to the method's; only two views are drawn per step).
        progress: called after every step with (step, total_steps, {"loss", "epoch", "images_per_s"}).
        extra_meta: JSON-able facts stored in the checkpoint (e.g. the member list's hashes).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = out / "final"
    bank = ImageBank(images)
    data_digest = bank.digest()
    if is_checkpoint_dir(final):
        tmeta = json.loads((final / "encoder.json").read_text()).get("training", {})
        if tmeta.get("config_digest") == cfg.digest() and tmeta.get("data_digest", data_digest) == data_digest:
            return final
        raise InputError(
            f"{out} already holds a finished encoder trained with a different configuration or on different images; use another output folder "
            "or delete it to start over."
        )
    dev = torch.device(device)
    vcfg = view_cfg or ViewConfig()
    n = len(bank)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // bs)  # drop_last, as SimCLR does: every batch has bs negatives
    total = steps_per_epoch * cfg.epochs

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    acfg = arch_config(cfg.arch)
    backbone = build_backbone(acfg).to(dev)
    head = ProjectionHead(int(backbone.out_dim), out_dim=cfg.proj_dim).to(dev)  # type: ignore[arg-type]  # out_dim is an int attribute
    if dev.type == "cuda":
        backbone.to(memory_format=torch.channels_last)
    params = list(backbone.parameters()) + list(head.parameters())
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=cfg.lr * bs / 256, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise InputError(f"unknown optimizer {cfg.optimizer!r}; use {' or '.join(OPTIMIZERS)}.")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    start_epoch, history = _load_state(out, backbone, head, opt, sched, cfg, gen, data_digest)

    use_amp = cfg.amp and dev.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    src = bank.stacked.to(dev) if (bank.stacked is not None and dev.type == "cuda") else bank.stacked
    bank_dev = ImageBank(src) if src is not None else bank

    def ckpt(dirname: str, epoch: int, loss: float, extra_files: dict[str, Callable[[str], None]] | None = None) -> None:
        save_checkpoint(
            out / dirname,
            backbone,
            acfg,
            cfg.image_size,
            DEFAULT_MEAN,
            DEFAULT_STD,
            extra={"training": {"recipe": "simclr", "config": cfg.to_dict(), "config_digest": cfg.digest(), "data_digest": data_digest, "epochs_done": epoch, "last_loss": loss, "n_images": n, "views": vcfg.to_dict(), **(extra_meta or {})}},
            extra_files=extra_files,
        )

    backbone.train()
    head.train()
    step = start_epoch * steps_per_epoch
    loss_v = float("nan")
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        losses = []
        for s in range(steps_per_epoch):
            idx = perm[s * bs : (s + 1) * bs]
            batch, sizes = bank_dev.batch(idx.to(src.device) if src is not None else idx)
            p = sample_params(sizes[:, 0].cpu(), sizes[:, 1].cpu(), vcfg, 2, gen)
            # Views are interleaved per image (v0, v1, v0, v1, ...): split them into the two halves.
            p.source = torch.arange(len(idx)).repeat_interleave(2)
            x = render_views(batch, p, cfg.image_size, DEFAULT_MEAN, DEFAULT_STD)
            if dev.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            ctx = torch.autocast("cuda", dtype=amp_dtype) if use_amp else contextlib.nullcontext()
            with ctx:
                z = head(backbone(x))
            z = z.float().view(len(idx), 2, -1)
            loss = nt_xent(z[:, 0], z[:, 1], cfg.temperature)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            loss_v = float(loss.detach())
            losses.append(loss_v)
            if progress is not None:
                el = time.perf_counter() - t0
                progress(step, total, {"loss": loss_v, "epoch": epoch + 1, "images_per_s": (s + 1) * len(idx) / max(el, 1e-9)})
        dt = time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": dt, "images_per_s": steps_per_epoch * bs / dt})
        done = epoch + 1
        if done in cfg.snapshot_epochs:
            backbone.eval()
            ckpt(f"epoch-{done:04d}", done, history[-1]["loss"])
            backbone.train()
        if done % cfg.checkpoint_every == 0 or done == cfg.epochs:
            backbone.eval()
            ckpt("last", done, history[-1]["loss"], _state_files(head, opt, sched, done, cfg, gen, history, data_digest))
            backbone.train()
    backbone.eval()
    ckpt("final", cfg.epochs, history[-1]["loss"] if history else loss_v)
    write_text(out / "history.json", json.dumps(history, indent=1))
    return final
