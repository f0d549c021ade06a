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
    from auditmi._paths import check_batch_size, check_device, check_positive, precheck

    check_positive("--epochs", epochs)  # before importing torch: typos fail at once
    check_batch_size(batch_size)
    check_positive("--image-size", image_size)
    check_device(device)
    precheck(data)
    from auditmi.cli.options import check_training_options

    check_training_options(arch, optimizer)
    from auditmi.encoders import resolve_device
    from auditmi.jobs.common import discover_images
    from auditmi.shadow import TrainConfig, load_training_images, train_encoder

    tensors, shas, skipped = load_training_images(discover_images(data, "training"), image_size)
    for s in skipped:
        err.print(f"skipped {s.path}: {s.reason}")
    cfg = TrainConfig(arch=arch, image_size=image_size, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                      temperature=temperature, seed=seed, checkpoint_every=max(1, min(10, epochs)))
    with progress_bar(not quiet) as cb:
        final = train_encoder(tensors, out_dir, cfg, device=resolve_device(device), progress=(lambda s, t, d: cb("train", s, t)) if cb else None,
                              extra_meta={"member_sha256": sorted(shas)})
    out.print(str(final))
