"""Console helpers shared by the commands: stderr for progress/logs, stdout for results."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from auditmi.terminal import SafeConsole

# Safe consoles: file names cannot inject escape codes or markup, and a non-UTF-8 terminal gets
# escapes instead of a crash (see auditmi/terminal.py).
out = SafeConsole(highlight=False, soft_wrap=False)
err = SafeConsole(stderr=True, highlight=False)

STAGE_LABELS = {
    "suspect": "embedding suspect images",
    "reference": "embedding reference images",
    "members": "embedding members",
    "non-members": "embedding non-members",
    "train": "pre-training shadow encoder (steps)",
}


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator:
    """A progress callback ``(stage, done, total)`` drawing rich bars on stderr (no-op if disabled)."""
    if not enabled:
        yield None
        return
    prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=err, transient=False)
    tasks: dict[str, TaskID] = {}

    def cb(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = prog.add_task(STAGE_LABELS.get(stage, stage), total=total)
        prog.update(tasks[stage], completed=done, total=total)

    with prog:
        yield cb


def fmt(x: float | None, spec: str = ".3f") -> str:
    """Format a number, or show a dash for a missing or non-finite value (the JSON reports write null)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    try:
        return format(x, spec)
    except (TypeError, ValueError):
        return str(x)
