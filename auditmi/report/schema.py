"""The scan report's JSON Schema (draft 2020-12, packaged in auditmi/schemas) and its validation."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import jsonschema

from auditmi.errors import InputError
from auditmi.verdict import Label

#: Version of the report layout; bumped when the schema changes incompatibly.
SCHEMA_VERSION = "1.0"
#: Value of the scan report's ``kind`` field.
REPORT_KIND = "auditmi.scan-report"
#: The verdict labels, as the schema lists them (they come from :class:`auditmi.verdict.Label`).
VERDICT_LABELS = tuple(label.value for label in Label)

_SCHEMA_FILE = "scan-report.schema.json"
# Longest schema-error message quoted in an InvalidReportError.
_MAX_MESSAGE = 300


class InvalidReportError(InputError, ValueError):
    """A scan report that does not match the schema, or cannot be written as JSON.

    It is a ``ValueError`` (the natural type for "this value is malformed") and an
    :class:`auditmi.errors.InputError` (exit code 2 when a user passes a broken report file).
    The message starts with the location of the problem, e.g. ``images[3].sha256``.
    """


def schema() -> dict[str, Any]:
    """Return the packaged JSON Schema (draft 2020-12) of scan reports.

    Returns:
        A fresh copy of the schema as a dict (callers may modify it).
    """
    text = resources.files("auditmi").joinpath("schemas").joinpath(_SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def location(path: Sequence[Any]) -> str:
    """Render a JSON path like ``images[3].sha256`` (``<report>`` for the root)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<report>"


def validate_report(report: Mapping[str, Any]) -> None:
    """Check a scan report against the packaged schema (with ``jsonschema``).

    The report is validated as it will be written (after :func:`auditmi.report.jsondoc.normalise`:
    numpy numbers become Python numbers, NaN and infinities become ``null``), so a NaN where a
    number is required is reported here rather than silently written as ``null``.

    Args:
        report: The report dict.

    Raises:
        InvalidReportError: (a ``ValueError``) naming the location of the first problem found,
            e.g. ``"scan report is invalid at verdict.label: 'maybe' is not one of [...]"``.
    """
    from auditmi.report.jsondoc import normalise

    doc = normalise(report)
    errors = list(jsonschema.Draft202012Validator(schema()).iter_errors(doc))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        message = error.message
        if len(message) > _MAX_MESSAGE:  # e.g. a oneOf failure quoting a whole sub-object
            message = message[: _MAX_MESSAGE - 3] + "..."
        more = f" ({len(errors) - 1} more problem(s) not shown)" if len(errors) > 1 else ""
        raise InvalidReportError(f"scan report is invalid at {location(error.absolute_path)}: {message}{more}")
    _semantic_check(doc)


def _semantic_check(doc: dict[str, Any]) -> None:
    """Constraints JSON Schema cannot express."""
    calibration = doc.get("calibration")
    roc = calibration.get("roc") if isinstance(calibration, dict) else None
    if isinstance(roc, dict):
        fpr, tpr = roc.get("fpr"), roc.get("tpr")
        if isinstance(fpr, list) and isinstance(tpr, list) and len(fpr) != len(tpr):
            raise InvalidReportError(
                f"scan report is invalid at calibration.roc: fpr and tpr must have the same length, got {len(fpr)} and {len(tpr)}"
            )
