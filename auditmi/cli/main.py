"""``auditmi`` command: the Typer app and the single place that maps errors to exit codes."""

from __future__ import annotations

import functools
import shlex
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from auditmi import __version__
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
)


def command_line() -> str:
    """The command as typed, for reports."""
    return "auditmi " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def handle_errors(fn: F) -> F:
    """Turn library errors into a one-paragraph message on stderr and their exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AuditmiError as e:
            err.print(f"[bold red]error:[/] {e}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted; completed work is cached, re-run the same command to resume.")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception:
            err.print(traceback.format_exc(), markup=False, highlight=False)
            err.print(f"[bold red]internal error[/] in auditmi {__version__}: this is a bug; please report it with the traceback above.")
            raise typer.Exit(EXIT_INTERNAL) from None

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

