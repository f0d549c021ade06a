"""``auditmi encoders``: the encoders auditmi knows by name."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from auditmi.cli.main import app, handle_errors
from auditmi.cli.ui import out


@app.command()
@handle_errors
def encoders(
    all_models: Annotated[bool, typer.Option("--all", help="Also list every open_clip architecture and pretrained tag.")] = False,
) -> None:
    """List encoder aliases with their input size and weights source."""
    from auditmi.encoders import list_encoders

    t = Table(title="encoders")
    for c in ("name", "spec", "input size", "source"):
        t.add_column(c)
    for e in list_encoders():
        t.add_row(e.name, e.spec, str(e.input_size or "-"), e.source)
    t.add_row("open_clip:MODEL@TAG", "any open_clip model and tag", "model config", "open_clip download")
    t.add_row("open_clip:MODEL@/path", "local open_clip weights file", "model config", "file")
    t.add_row("DIR", "auditmi checkpoint folder (encoder.json + model.safetensors)", "encoder.json", "file")
    t.add_row("FILE.pt", "TorchScript export (+ optional FILE.pt.json sidecar)", "sidecar or 224", "file")
    out.print(t)
    if all_models:
        import open_clip

        for model, tag in open_clip.list_pretrained():
            out.print(f"open_clip:{model}@{tag}")
