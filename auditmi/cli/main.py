"""``auditmi`` command: the Typer app and the single place that maps errors to exit codes."""

from __future__ import annotations

import functools
import os
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.text import Text

from auditmi import __version__
from auditmi.cli.options import AuditmiGroup
from auditmi.cli.ui import err
from auditmi.errors import EXIT_INTERNAL, AuditmiError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="auditmi",
    help=(
        "Audit pre-trained image encoders for membership of your images (EncoderMI and beyond).\n\n"
        "Exit codes: 0 success; 1 internal error; 2 bad usage or input; 3 incompatible or tampered calibration; "
        "4 encoder unavailable; 5 verdict matched --fail-on."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=AuditmiGroup,
)


def command_line() -> str:
    """The command as typed, for reports."""
    return "auditmi " + " ".join(shlex.quote(a) for a in sys.argv[1:])


class Terminated(BaseException):
    """SIGTERM arrived (``kill``, a CI timeout, a container stopping). A BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` in the library swallows it."""


_MAIN_PID = os.getpid()


def _on_sigterm(signum: int, frame: Any) -> None:
    if os.getpid() != _MAIN_PID:  # a forked worker inherited the handler: die as it would have
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated()


def _stopped_message(what: str, command: str, kwargs: dict[str, Any]) -> str:
    """What survives the stop, true for each command and cache mode (read-write, read-only, --no-cache)."""
    if command == "pretrain":
        return f"{what}; re-run the same command to resume from the last checkpoint in {kwargs.get('out_dir')}."
    if command == "calibrate":  # its feature pass has no cache; the shadow pre-training checkpoints
        if kwargs.get("shadow_encoder"):
            return f"{what}; nothing was saved, so re-running starts over."
        return (f"{what}; shadow pre-training resumes from its last checkpoint in {kwargs.get('out_dir')} when the same command is "
                "re-run; the rest starts over.")
    if command not in ("scan", "evaluate"):
        return f"{what}."
    if kwargs.get("no_cache"):
        return f"{what}; nothing was cached (--no-cache), so re-running starts over."
    from auditmi.cache import read_only_note

    if read_only_note(kwargs.get("cache_dir")):
        return (f"{what}; the feature cache is read-only, so nothing new was cached: re-running recomputes every image it "
                "did not already hold (pass --cache with a writable folder to keep the work).")
    return f"{what}; completed work is cached, re-run the same command to resume."


def handle_errors(fn: F) -> F:
    """Turn library errors into a one-paragraph message on stderr and their exit code; Ctrl-C
    and SIGTERM end with one line and exit codes 130 and 143."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _MAIN_PID
        previous = None
        if threading.current_thread() is threading.main_thread():
            _MAIN_PID = os.getpid()
            previous = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            return fn(*args, **kwargs)
        except Terminated:
            err.print(_stopped_message("terminated (SIGTERM)", fn.__name__, kwargs), soft_wrap=True)
            raise typer.Exit(128 + signal.SIGTERM) from None
        except AuditmiError as e:
            err.print(Text.assemble(("error:", "bold red"), f" {e}"), highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print(_stopped_message("interrupted", fn.__name__, kwargs), soft_wrap=True)
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception:
            err.print(traceback.format_exc(), markup=False, highlight=False)
            err.print(Text.assemble(("internal error", "bold red"), f" in auditmi {__version__}: this is a bug; please report it with the traceback above."))
            raise typer.Exit(EXIT_INTERNAL) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"auditmi {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """auditmi: was this image encoder trained on my images?"""


def _register() -> None:
    from auditmi.cli import calibrate, encoders, evaluate, pretrain, scan  # noqa: F401  (commands register themselves)


def run() -> None:
    """Console-script entry point."""
    _register()
    app()

