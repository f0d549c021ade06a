"""Report documents as strict JSON, written through the project's one atomic writer (auditmi._io)."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from auditmi import _io
from auditmi.errors import InputError
from auditmi.jsonvalue import NotJsonError, json_value
from auditmi.report.schema import InvalidReportError, location


def normalise(value: Any, where: tuple[Any, ...] = ()) -> Any:
    """Turn a report into plain JSON values, keeping key order (see :func:`auditmi.jsonvalue.json_value`)."""
    try:
        return json_value(value, where)
    except NotJsonError as e:
        raise InvalidReportError(
            f"scan report cannot be written as JSON at {location(e.where)}: a "
            f"{e.type_name} is not a JSON value (use numbers, strings, lists, dicts)."
        ) from None


def to_json(report: Mapping[str, Any]) -> str:
    """Serialise a report as strict, human-readable JSON.

    NaN and infinities become ``null`` (they are not JSON and many parsers reject them), numpy
    values become plain numbers, and keys keep the order in which the report was built. Non-ASCII
    file names are written as they are; file names that are not valid Unicode (undecodable bytes
    kept by Python as lone surrogates) fall back to ``\\uXXXX`` escapes so the output is always
    valid UTF-8.

    Args:
        report: The report dict.

    Returns:
        The JSON text, indented by 2 spaces, without a trailing newline.

    Raises:
        InvalidReportError: A value is not representable in JSON (e.g. an arbitrary object).
    """
    doc = normalise(report)
    text = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(doc, indent=2, ensure_ascii=True, allow_nan=False)
    return text


def write_text(text: str, dest: str | Path, what: str) -> None:
    """Write a finished report's text to ``dest`` atomically (``auditmi._io``), as UTF-8.

    A reader never sees a half-written report, and an existing report is only replaced once the
    new one is complete. Problems a user can fix (a missing folder, a folder as destination, no
    permission, a full disk) raise :class:`InputError` naming the destination.
    """
    path = Path(dest).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"cannot write the {what} to {path}: folder {folder} does not exist; create it or choose another destination.")
    if path.is_dir():
        raise InputError(f"cannot write the {what} to {path}: it is a folder; give a file name.")
    # Same permissions as a normally created file (a temporary file would be owner-only), or the
    # existing file's permissions when replacing one.
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.chmod(tmp, mode)

    try:
        _io.atomic_write(path, write)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError(
            f"cannot write the {what} to {path}: {reason.lower()}; check the folder's permissions and free space, "
            "or choose another destination."
        ) from exc


def write_json(report: Mapping[str, Any], dest: str | Path) -> None:
    """Write a report as JSON to a file, or to standard output.

    Args:
        report: The report dict.
        dest: A file path (written atomically), or ``"-"`` for standard output, which then
            receives exactly one JSON document followed by a newline (so
            ``auditmi scan ... --json - | jq`` works).

    Raises:
        InvalidReportError: A value is not representable in JSON.
        InputError: The file cannot be written.
    """
    text = to_json(report) + "\n"
    if str(dest) == "-":
        try:
            text.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
        except (UnicodeEncodeError, LookupError):  # e.g. PYTHONIOENCODING=ascii: the same JSON, \u-escaped
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=True) + "\n"
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_text(text, dest, "JSON report")
