"""Exceptions raised by the library; the CLI maps each to a message and an exit code.

Exit codes (documented in README.md):
    0  success
    1  unexpected internal error (a bug: please report it)
    2  bad usage or bad input (arguments, image folders, files)
    3  incompatible, tampered or unreadable calibration bundle
    4  encoder unavailable (unknown name, weights cannot be fetched or loaded)
    5  the verdict matched ``--fail-on`` (for CI pipelines)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_CALIBRATION = 3
EXIT_ENCODER = 4
EXIT_VERDICT = 5


class AuditmiError(Exception):
    """Base class of every error auditmi raises on purpose.

    The message says what was wrong, why, and what to do about it.
    """

    exit_code: int = EXIT_USAGE


class InputError(AuditmiError):
    """Bad user input: a missing folder, no usable image, an invalid option value."""

    exit_code = EXIT_USAGE


class CalibrationError(AuditmiError):
    """A calibration bundle that is missing, tampered with, or incompatible with this scan."""

    exit_code = EXIT_CALIBRATION


class EncoderUnavailableError(AuditmiError):
    """An encoder that cannot be resolved, downloaded or loaded."""

    exit_code = EXIT_ENCODER
