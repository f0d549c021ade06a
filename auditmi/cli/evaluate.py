"""``auditmi evaluate``: metrics on images whose membership the user knows (model builders)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from auditmi.cli.main import app, command_line, handle_errors
from auditmi.cli.ui import err, fmt, out, progress_bar

if TYPE_CHECKING:
    from auditmi.jobs.evaluate import AtCalibratedFpr, ClassifierEvaluation, EvaluateResult

# Short column heads keep the table within 80 columns; the legend under it spells them out.
_COLUMNS = ("classifier", "acc", "prec", "recall", "AUC", "TPR@1%", "TPR@.1%", "cal.TPR", "cal.FPR")
_LEGEND = ("acc, prec, recall: accuracy, precision and recall at the shadow calibration's accuracy threshold. "
           "AUC: ROC AUC. TPR@1%, TPR@.1%: true-positive rate at 1% and 0.1% false-positive rate on these images. "
           "cal.TPR, cal.FPR: the rates on these images at the threshold calibrated for {rate} FPR on the shadow data{why}.")


def _legend(result: EvaluateResult) -> str:
    """The legend, naming the calibrated FPR the cal. columns use (1%, or the finest the calibration supports)."""
    if result.finest_fpr <= 0.01 * (1 + 1e-9):
        return _LEGEND.format(rate="1%", why="")
    return _LEGEND.format(rate=f"{result.finest_fpr:.3g}",
                          why=f" (the finest this calibration supports: 1/{round(1 / result.finest_fpr)} held-out shadow non-members)")


def _calibrated_row(c: ClassifierEvaluation) -> AtCalibratedFpr:
    """The classifier at the calibrated 1% FPR threshold, else at the finest rate the calibration supports."""
    return next((a for a in c.at_calibrated_fpr if a.target_fpr == 0.01), c.at_calibrated_fpr[0])


def print_evaluation(result: EvaluateResult, console: Console = out) -> None:
    """The metrics table (fits 80 columns; long text wraps at word boundaries)."""
    t = Table(title=f"{result.n_members} members vs {result.n_non_members} non-members (positive class: member)",
              box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 0, 0, 1), caption=_legend(result), caption_justify="left")
    for col in _COLUMNS:
        t.add_column(col, justify="left" if col == "classifier" else "right")
    for c in result.classifiers:
        m = c.metrics
        cf = _calibrated_row(c)
        t.add_row(c.kind, fmt(m.accuracy), fmt(m.precision), fmt(m.recall), fmt(m.roc_auc), fmt(m.tpr_at_1pct_fpr),
                  fmt(m.tpr_at_0_1pct_fpr), fmt(cf.tpr), fmt(cf.achieved_fpr))
    console.print(t)


@app.command()
@handle_errors
def evaluate(
    encoder: Annotated[str, typer.Option("--encoder", "-e", help="Encoder spec (see `auditmi encoders`).")],
    calibration: Annotated[Path, typer.Option("--calibration", "-c", help="Calibration bundle folder.")],
    members: Annotated[list[Path], typer.Option("--members", help="Images the encoder was trained on (files and folders, every path up to the next option).")],
    non_members: Annotated[list[Path], typer.Option("--non-members", help="Images it was not trained on (files and folders, every path up to the next option).")],
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device")] = "auto",
    batch_size: Annotated[int | None, typer.Option("--batch-size", "-b")] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache")] = False,
    json_out: Annotated[str | None, typer.Option("--json", help="Write the JSON report to FILE or '-' (stdout, nothing else).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    engine: Annotated[str, typer.Option("--engine", help="local or ray (see `auditmi scan --help`).")] = "local",
    workers: Annotated[int | None, typer.Option("--workers", help="Worker processes (local) or embedding actors (ray); default: chosen for the machine.")] = None,
) -> None:
    """Accuracy, precision, recall, ROC AUC and TPR at 1% / 0.1% FPR of every classifier on known members/non-members."""
    from auditmi._io import check_destination
    from auditmi._paths import check_batch_size, check_device, precheck
    from auditmi.engines import check_engine

    check_batch_size(batch_size)  # before importing torch: typos fail at once
    check_engine(engine)
    check_device(device)
    if json_out is not None:
        check_destination(json_out)
    precheck([*members, *non_members], calibration)
    from auditmi.cli.encoders import http_preflight

    http_preflight(encoder, [members, non_members], calibration, batch_size=batch_size)  # HTTP: the query plan, the budget
    if not no_cache:
        from auditmi.cache import read_only_note

        if ro := read_only_note(cache_dir):
            err.print(Text.assemble(("note: ", "yellow"), ro))
    from auditmi.cli.options import encoder_assumptions
    from auditmi.jobs.evaluate import run_evaluate

    for warning in encoder_assumptions(encoder):
        err.print(Text.assemble(("warning: ", "yellow"), warning))
    from auditmi.report import evaluate_report, write_json

    with progress_bar(not quiet) as cb:
        result = run_evaluate(encoder, calibration, members, non_members, seed=seed, device=device, batch_size=batch_size,
                              cache_dir=cache_dir, use_cache=not no_cache, progress=cb, workers=workers, engine=engine)
    if json_out:
        write_json(evaluate_report(result, command=command_line()), json_out)
        if json_out == "-":
            return
    if result.n_duplicates:
        err.print(f"{result.n_duplicates} duplicate image(s) (same content as another) counted once")
    print_evaluation(result)
