"""``auditmi encoders``: the encoders auditmi knows by name, and (``--all``) every backend."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from auditmi.cli.main import app, handle_errors
from auditmi.cli.ui import out


@app.command()
@handle_errors
def encoders(
    all_models: Annotated[bool, typer.Option("--all", help="Also list every backend with an example spec, and every open_clip architecture and pretrained tag.")] = False,
) -> None:
    """List encoder aliases with their input size and weights source."""
    from auditmi.encoders import BACKEND_EXAMPLES, list_encoders

    t = Table(title="encoders")
    for c in ("name", "spec", "input size", "source"):
        t.add_column(c)
    for e in list_encoders():
        t.add_row(e.name, e.spec, str(e.input_size or "-"), e.source)
    t.add_row("open_clip:MODEL@TAG", "any open_clip model and tag", "model config", "open_clip download")
    t.add_row("open_clip:MODEL@/path", "local open_clip weights file", "model config", "file")
    t.add_row("DIR", "auditmi checkpoint folder (encoder.json + model.safetensors)", "encoder.json", "file")
    t.add_row("FILE.pt2", "torch.export program (+ optional FILE.pt2.json sidecar)", "sidecar or 224", "file")
    t.add_row("FILE.pt", "TorchScript export (+ optional FILE.pt.json sidecar)", "sidecar or 224", "file")
    out.print(t)
    if all_models:
        b = Table(title="backends (auditmi encoders --all)")
        for c in ("backend", "example spec", "what", "install"):
            b.add_column(c)
        for name, (example, what, extra) in BACKEND_EXAMPLES.items():
            b.add_row(Text(name), Text(example), Text(what), Text(extra))
        out.print(b)
        import open_clip

        out.print("open_clip models and pretrained tags:")
        for model, tag in open_clip.list_pretrained():
            out.print(f"open_clip:{model}@{tag}", markup=False)


def _score_uses_neighbours(shadows_meta: dict) -> bool:
    """Whether a bundle's EncoderMI-R score uses the neighbourhood signal (False when unreadable)."""
    from auditmi.difficulty import ScoreSpec, uses_neighbours

    try:
        return uses_neighbours(ScoreSpec.from_dict(shadows_meta["score"]))
    except (KeyError, TypeError, ValueError):
        return False


def http_preflight(spec: str, image_sets: Sequence[Sequence[Path]], calibration: Path | None = None, views: int | None = None,
                   batch_size: int | None = None, one_pass: bool = False) -> None:
    """Before a job with an HTTP encoder (scan, evaluate, calibrate --shadow-encoder): print the requests
    and views it will send for ``image_sets`` (stderr), and refuse to start when that is over the
    config's query budget. ``views`` defaults to the calibration's. ``one_pass``: the job embeds
    all the sets in one pass (a scan), instead of one pass per set (evaluate, calibrate)."""
    import json

    from auditmi._paths import calibration_meta_path
    from auditmi.cli.ui import err
    from auditmi.encoders import parse_spec
    from auditmi.encoders.http import load_config, over_budget_error, plan
    from auditmi.images import discover

    if not spec.startswith(("http:", "https:")):
        return  # not an HTTP encoder (parse_spec would also judge other specs; loading does that, with its message)
    backend, name, kind = parse_spec(spec)
    if backend != "http":
        return
    cfg = load_config(name, kind == "url")
    try:
        meta = json.loads(calibration_meta_path(str(calibration)).read_text()) if calibration is not None else {}
        n_views = int(views or meta["views"]["n_views"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # the job reports an unreadable calibration itself; the encoder still enforces the budget
    counts = [len(discover(list(paths)).images) for paths in image_sets if paths]
    if not counts:
        return
    # A scan with a big enough reference and a bundle carrying shadows scores with EncoderMI-R: its
    # one pass sends each image's views and the whole image (features and signals from the same
    # views; the shadows are local).
    signals = False
    if one_pass and len(image_sets) > 1 and isinstance(meta.get("shadows"), dict) and meta["shadows"].get("encoders"):
        from auditmi.calibrated_scan import MIN_REFERENCE

        signals = len(counts) > 1 and counts[1] >= MIN_REFERENCE
    per_image = n_views + 1 if signals else n_views
    plans = [plan(cfg, sum(counts), per_image, batch_size)] if one_pass else [plan(cfg, n, n_views, batch_size) for n in counts]
    # A score that uses the neighbourhood signal (auditmi.neighbours) then embeds each whole image once more.
    nn = signals and _score_uses_neighbours(meta["shadows"])
    if nn:
        plans.append(plan(cfg, sum(counts), 1, batch_size))
    total = dataclasses.replace(plans[0], n_images=sum(counts), views=sum(p.views for p in plans), requests=sum(p.requests for p in plans))
    what = (f"({n_views} views + the whole image for EncoderMI-R's signals{', + 1 whole image for its neighbourhood signal' if nn else ''})"
            if signals else None)
    if total.over_budget:
        raise over_budget_error(total, cfg.source if cfg.source != "url" else "the http:URL defaults", what)
    err.print(total.describe(what), markup=False, highlight=False)
