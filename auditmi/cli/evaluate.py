"""``auditmi evaluate``: metrics on images whose membership the user knows (model builders)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from auditmi.cli.main import app, command_line, handle_errors
from auditmi.cli.ui import fmt, out, progress_bar


@app.command()
@handle_errors
def evaluate(
    encoder: Annotated[str, typer.Option("--encoder", "-e", help="Encoder spec (see `auditmi encoders`).")],
    calibration: Annotated[Path, typer.Option("--calibration", "-c", help="Calibration bundle folder.")],
    members: Annotated[list[Path], typer.Option("--members", help="Images the encoder was trained on.")],
    non_members: Annotated[list[Path], typer.Option("--non-members", help="Images it was not trained on.")],
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device")] = "auto",
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache")] = False,
    json_out: Annotated[Optional[str], typer.Option("--json", help="Write the JSON report to FILE or '-' (stdout, nothing else).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    engine: Annotated[str, typer.Option("--engine", help="local or ray (see `auditmi scan --help`).")] = "local",
    workers: Annotated[Optional[int], typer.Option("--workers", help="Worker processes (local) or embedding actors (ray); default: chosen for the machine.")] = None,
) -> None:
    """Accuracy, precision, recall, ROC AUC and TPR at 1% / 0.1% FPR of every classifier on known members/non-members."""
    from auditmi._paths import precheck
    from auditmi.engines import check_engine

    check_engine(engine)
    precheck([*members, *non_members], calibration)  # before importing torch: typos fail at once
    from auditmi.audit import run_evaluate
    from auditmi.report import write_json

    with progress_bar(not quiet) as cb:
        rep = run_evaluate(encoder, calibration, members, non_members, seed=seed, device=device, batch_size=batch_size,
                           cache_dir=cache_dir, use_cache=not no_cache, progress=cb, command=command_line(),
                           workers=workers, engine=engine)
    if json_out:
        write_json(rep, json_out)
        if json_out == "-":
            return
    c = rep["counts"]
    t = Table(title=f"membership inference on {c['members']} members and {c['non_members']} non-members (positive class: member)")
    for col in ("classifier", "accuracy", "precision", "recall", "ROC AUC", "TPR@1%FPR", "TPR@0.1%FPR", "TPR / FPR at calibrated 1% FPR"):
        t.add_column(col)
    for k, m in rep["metrics"].items():
        cf = m["at_calibrated_fpr"]["0.01"]
        t.add_row(k, fmt(m["accuracy"]), fmt(m["precision"]), fmt(m["recall"]), fmt(m["roc_auc"]),
                  fmt(m["tpr_at_1pct_fpr"]), fmt(m["tpr_at_0_1pct_fpr"]), f"{fmt(cf['tpr'])} / {fmt(cf['achieved_fpr'])}")
    out.print(t)
