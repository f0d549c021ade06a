"""``auditmi pretrain``: contrastive pre-training of an encoder on a folder (targets for experiments)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from auditmi.cli.main import app, handle_errors
from auditmi.cli.ui import err, out, progress_bar


@app.command()
@handle_errors
def pretrain(
    data: Annotated[list[Path], typer.Argument(help="Image files or folders to pre-train on (these become the encoder's members).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Run folder (resumable); the encoder is written to OUT/final.")],
    arch: Annotated[str, typer.Option("--arch")] = "resnet18-w16",
    epochs: Annotated[int, typer.Option("--epochs")] = 100,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 256,
    image_size: Annotated[int, typer.Option("--image-size")] = 32,
    optimizer: Annotated[str, typer.Option("--optimizer")] = "sgd",
    lr: Annotated[float, typer.Option("--lr")] = 0.06,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.5,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Pre-train an encoder with SimCLR; interrupted runs resume from the last checkpoint."""
    import torch

    from auditmi.audit import _discover
    from auditmi.encoders import resolve_device
    from auditmi.images import load_many
    from auditmi.shadow import TrainConfig, train_encoder
    from auditmi.views import ViewConfig, working_side

    paths = _discover(data, "training")
    loaded, skipped = load_many(paths, max_side=working_side(image_size, ViewConfig()))
    for s in skipped:
        err.print(f"skipped {s.path}: {s.reason}")
    cfg = TrainConfig(arch=arch, image_size=image_size, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                      temperature=temperature, seed=seed, checkpoint_every=max(1, min(10, epochs)))
    tensors = [torch.from_numpy(li.pixels).permute(2, 0, 1).contiguous() for li in loaded]
    with progress_bar(not quiet) as cb:
        final = train_encoder(tensors, out_dir, cfg, device=resolve_device(device), progress=(lambda s, t, d: cb("train", s, t)) if cb else None,
                              extra_meta={"member_sha256": sorted(li.sha256 for li in loaded)})
    out.print(str(final))
