"""Evidence-grade scan reports: a JSON document with a schema, and a self-contained HTML page.

A scan report is a plain ``dict`` built by the scan code (its layout is defined by
``auditmi/schemas/scan-report.schema.json``, JSON Schema draft 2020-12). This module

* validates it against the packaged schema (:func:`validate_report`);
* serialises it to strict JSON (:func:`to_json`, :func:`write_json`): NaN and infinities become
  ``null`` because they are not JSON, numpy scalars become Python numbers, key order is kept;
* renders it as ONE self-contained HTML file (:func:`render_html`, :func:`write_html`) that a
  data owner can archive or send to a third party: inline CSS, inline SVG charts drawn here,
  thumbnails as ``data:`` URIs, no JavaScript and no network access at all (a
  Content-Security-Policy forbids it), so the page shows the same thing forever and leaks
  nothing when opened.

Why the page is laid out the way it is (docs/landscape.md, "What users ask for"): the one clear
answer first (the verdict and its p-value), then the numbers behind it with their definitions,
then the evidence (score distributions against known non-members, the calibration ROC on a
log-FPR axis because low-FPR behaviour is what matters, Carlini et al. 2022), then the
individual images, and last everything a third party needs to reproduce the verdict (hashes,
versions, seeds, configuration).

Every string that comes from the user (file names, paths, reasons, the command line, encoder
specs) is HTML-escaped: a file called ``<script>.png`` must not run anything.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import stat
import sys
import tempfile
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from importlib import resources
from pathlib import Path, PurePath
from typing import Any, NoReturn

import numpy as np

from auditmi import __version__
from auditmi.errors import AuditmiError, InputError

__all__ = [
    "SCHEMA_VERSION",
    "REPORT_KIND",
    "VERDICT_LABELS",
    "InvalidReportError",
    "schema",
    "validate_report",
    "to_json",
    "write_json",
    "thumbnail_data_uri",
    "render_html",
    "write_html",
]

#: Version of the report layout; bumped when the schema changes incompatibly.
SCHEMA_VERSION = "1.0"
#: Value of the report's ``kind`` field.
REPORT_KIND = "auditmi.scan-report"

_SCHEMA_FILE = "scan-report.schema.json"

VERDICT_LABELS = ("likely-used", "no-evidence", "inconclusive")

# Longest schema-error message quoted in an InvalidReportError.
_MAX_MESSAGE = 300


class InvalidReportError(InputError, ValueError):
    """A scan report that does not match the schema, or cannot be written as JSON.

    It is a ``ValueError`` (the natural type for "this value is malformed") and an
    :class:`auditmi.errors.InputError` (exit code 2 when a user passes a broken report file).
    The message starts with the location of the problem, e.g. ``images[3].sha256``.
    """


# --------------------------------------------------------------------------------------------
# Schema and validation
# --------------------------------------------------------------------------------------------


def schema() -> dict[str, Any]:
    """Return the packaged JSON Schema (draft 2020-12) of scan reports.

    Returns:
        A fresh copy of the schema as a dict (callers may modify it).
    """
    text = (
        resources.files("auditmi")
        .joinpath("schemas")
        .joinpath(_SCHEMA_FILE)
        .read_text(encoding="utf-8")
    )
    return json.loads(text)


def _location(path: Sequence[Any]) -> str:
    """Render a JSON path like ``images[3].sha256`` (``<report>`` for the root)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<report>"


def validate_report(report: Mapping[str, Any]) -> None:
    """Check a scan report against the packaged schema.

    The report is validated as it will be written (after :func:`to_json`'s normalisation:
    numpy numbers become Python numbers, NaN and infinities become ``null``), so a NaN where a
    number is required is reported here rather than silently written as ``null``.

    With the ``jsonschema`` package installed (``pip install auditmi[dev]``) the full draft
    2020-12 schema is checked; without it, a minimal built-in check of the required top-level
    keys, their kinds, the verdict label and the per-image fields is done instead.

    Args:
        report: The report dict.

    Raises:
        InvalidReportError: (a ``ValueError``) naming the location of the first problem found,
            e.g. ``"scan report is invalid at verdict.label: 'maybe' is not one of [...]"``.
    """
    doc = _normalise(report, ())
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - exercised via monkeypatch in the tests
        jsonschema = None  # type: ignore[assignment]
    if jsonschema is not None:
        validator = jsonschema.Draft202012Validator(schema())
        errors = list(validator.iter_errors(doc))
        if errors:
            error = jsonschema.exceptions.best_match(errors)
            message = error.message
            if len(message) > _MAX_MESSAGE:  # e.g. a oneOf failure quoting a whole sub-object
                message = message[: _MAX_MESSAGE - 3] + "..."
            more = f" ({len(errors) - 1} more problem(s) not shown)" if len(errors) > 1 else ""
            raise InvalidReportError(
                f"scan report is invalid at {_location(error.absolute_path)}: {message}{more}"
            )
    else:
        _minimal_check(doc)
    _semantic_check(doc)


def _fail(where: str, what: str) -> NoReturn:
    raise InvalidReportError(f"scan report is invalid at {where}: {what}")


_TOP_LEVEL_KINDS: dict[str, tuple[type, ...]] = {
    "schema_version": (str,),
    "kind": (str,),
    "auditmi_version": (str,),
    "created": (str,),
    "command": (str,),
    "verdict": (dict,),
    "aggregate": (dict,),
    "images": (list,),
    "reference": (dict, type(None)),
    "skipped": (list,),
    "duplicates": (list,),
    "encoder": (dict,),
    "calibration": (dict,),
    "config": (dict,),
    "environment": (dict,),
    "timing": (dict,),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _minimal_check(doc: Any) -> None:
    """Fallback validation when ``jsonschema`` is not installed: the essentials only."""
    if not isinstance(doc, dict):
        _fail("<report>", f"expected an object, got {type(doc).__name__}")
    for key, kinds in _TOP_LEVEL_KINDS.items():
        if key not in doc:
            _fail("<report>", f"{key!r} is a required property")
        if not isinstance(doc[key], kinds):
            names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            _fail(key, f"expected {names}, got {type(doc[key]).__name__}")
    if doc["schema_version"] != SCHEMA_VERSION:
        _fail("schema_version", f"{doc['schema_version']!r} is not {SCHEMA_VERSION!r}")
    if doc["kind"] != REPORT_KIND:
        _fail("kind", f"{doc['kind']!r} is not {REPORT_KIND!r}")
    verdict = doc["verdict"]
    for key in ("label", "reason", "test", "p_value", "alpha"):
        if key not in verdict:
            _fail("verdict", f"{key!r} is a required property")
    if verdict["label"] not in VERDICT_LABELS:
        _fail("verdict.label", f"{verdict['label']!r} is not one of {list(VERDICT_LABELS)}")
    for i, item in enumerate(doc["images"]):
        where = f"images[{i}]"
        if not isinstance(item, dict):
            _fail(where, "expected an object")
        for key in (
            "path",
            "sha256",
            "score",
            "member_probability",
            "decision",
            "p_value",
            "bh_flag",
        ):
            if key not in item:
                _fail(where, f"{key!r} is a required property")
        digest = item["sha256"]
        if not (
            isinstance(digest, str)
            and len(digest) == 64
            and all(c in "0123456789abcdef" for c in digest)
        ):
            _fail(f"{where}.sha256", f"{digest!r} is not a lower-case hex SHA-256 digest")
        if not _is_number(item["score"]):
            _fail(f"{where}.score", f"{item['score']!r} is not a number")
        prob = item["member_probability"]
        if not _is_number(prob) or not 0.0 <= prob <= 1.0:
            _fail(f"{where}.member_probability", f"{prob!r} is not a number in [0, 1]")
        if item["decision"] not in ("member", "non-member"):
            _fail(
                f"{where}.decision", f"{item['decision']!r} is not one of ['member', 'non-member']"
            )


def _semantic_check(doc: dict[str, Any]) -> None:
    """Constraints JSON Schema cannot express."""
    roc = (
        doc.get("calibration", {}).get("roc") if isinstance(doc.get("calibration"), dict) else None
    )
    if isinstance(roc, dict):
        fpr, tpr = roc.get("fpr"), roc.get("tpr")
        if isinstance(fpr, list) and isinstance(tpr, list) and len(fpr) != len(tpr):
            _fail(
                "calibration.roc",
                f"fpr and tpr must have the same length, got {len(fpr)} and {len(tpr)}",
            )


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def _normalise(value: Any, where: tuple[Any, ...]) -> Any:
    """Turn a report into plain JSON values, keeping key order.

    numpy scalars/arrays -> Python numbers/lists, NaN/inf -> None, tuples -> lists,
    paths -> str, dates -> ISO-8601, objects with ``to_dict()`` (auditmi.stats results) -> dict.
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, Mapping):
        return {str(k): _normalise(v, (*where, str(k))) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [_normalise(v, (*where, i)) for i, v in enumerate(value.tolist())]
    if isinstance(value, (list, tuple)):
        return [_normalise(v, (*where, i)) for i, v in enumerate(value)]
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return _normalise(to_dict(), where)
    raise InvalidReportError(
        f"scan report cannot be written as JSON at {_location(where)}: a "
        f"{type(value).__name__} is not a JSON value (use numbers, strings, lists, dicts)."
    )


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
    doc = _normalise(report, ())
    text = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(doc, indent=2, ensure_ascii=True, allow_nan=False)
    return text


def _atomic_write_text(text: str, dest: str | Path, what: str) -> None:
    """Write ``text`` to ``dest`` via a temporary file in the same folder and ``os.replace``.

    A reader never sees a half-written report, and an existing report is only replaced once
    the new one is complete (a crash or full disk leaves the old one intact).
    """
    path = Path(dest).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(
            f"cannot write the {what} to {path}: folder {folder} does not exist; create it or "
            "choose another destination."
        )
    if path.is_dir():
        raise InputError(f"cannot write the {what} to {path}: it is a folder; give a file name.")
    # Same permissions as a normally created file (mkstemp would leave it owner-only), or the
    # existing file's permissions when replacing one.
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    tmp_name: str | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError(
            f"cannot write the {what} to {path}: {reason.lower()}; check the folder's "
            "permissions and free space, or choose another destination."
        ) from exc
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def write_json(report: Mapping[str, Any], dest: str | Path) -> None:
    """Write a report as JSON to a file, or to standard output.

    Args:
        report: The report dict.
        dest: A file path (written atomically: temporary file + ``os.replace``), or ``"-"`` for
            standard output, which then receives exactly one JSON document followed by a newline
            (so ``auditmi scan ... --json - | jq`` works).

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
    _atomic_write_text(text, dest, "JSON report")


# --------------------------------------------------------------------------------------------
# Thumbnails
# --------------------------------------------------------------------------------------------


def thumbnail_data_uri(path: str | Path, size: int = 96) -> str | None:
    """A small PNG thumbnail of an image file, as a ``data:`` URI for embedding in HTML.

    The image goes through :func:`auditmi.images.load_image` (same decoding, EXIF orientation and
    decompression-bomb protection as the scan) and is shrunk to fit a ``size`` x ``size`` box,
    keeping its aspect ratio.

    Args:
        path: The image file.
        size: Longest side of the thumbnail in pixels.

    Returns:
        ``"data:image/png;base64,..."``, or None when the file cannot be read or decoded (it may
        have been moved since the scan).

    Raises:
        InputError: ``size`` is not a positive whole number.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InputError(f"thumbnail size must be a positive whole number of pixels, got {size!r}.")
    from PIL import Image

    from auditmi.images import load_image

    try:
        loaded = load_image(Path(path), max_side=int(size))
        im = Image.fromarray(loaded.pixels)
        # max_side bounds the *shorter* side; a panorama also needs its longer side bounded.
        im.thumbnail((int(size), int(size)), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
    except (AuditmiError, OSError, ValueError, MemoryError):
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# --------------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    """HTML-escape anything (quotes included, so the result is safe in attributes too)."""
    return html.escape("" if value is None else str(value), quote=True)


_DASH = "\u2014"


def _finite(value: Any) -> float | None:
    if _is_number(value) and math.isfinite(float(value)):
        return float(value)
    return None


def _num(value: Any, digits: int = 4) -> str:
    f = _finite(value)
    if f is None:
        return _DASH
    if f == 0:
        return "0"
    if abs(f) < 1e-3 or abs(f) >= 1e6:
        return f"{f:.{max(digits - 2, 1)}e}"
    return f"{f:.{digits}g}"


def _pval(value: Any) -> str:
    f = _finite(value)
    if f is None:
        return _DASH
    if f < 1e-4:
        return f"{f:.1e}"
    return f"{f:.4g}"


def _pct(value: Any, digits: int = 1) -> str:
    f = _finite(value)
    return _DASH if f is None else f"{100.0 * f:.{digits}f}%"


def _int(value: Any) -> str:
    return f"{int(value):,}" if _is_number(value) else _DASH


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _basename(path: str) -> str:
    name = str(path).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return name or str(path)


def _json_block(value: Any) -> str:
    try:
        text = json.dumps(_normalise(value, ()), indent=2, ensure_ascii=False, allow_nan=False)
    except (InvalidReportError, TypeError, ValueError):
        text = repr(value)
    return f"<pre>{_e(text)}</pre>"


# --------------------------------------------------------------------------------------------
# SVG charts (drawn here: no plotting library, no script, no network)
# --------------------------------------------------------------------------------------------

_SUSPECT_COLOUR = "#c2410c"
_REFERENCE_COLOUR = "#1d4ed8"
_THRESHOLD_COLOUR = "#111827"
_GRID_COLOUR = "#eef0f3"
_CHANCE_COLOUR = "#9ca3af"
# Font set on the <svg> itself so a chart copied out of the page still renders the same.
_SVG_FONT = 'font-family="system-ui, Helvetica, Arial, sans-serif" font-size="12" fill="#111827"'


def _svg_open(width: int, height: int, title_id: str, title: str) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-labelledby="{title_id}" {_SVG_FONT}>'
        f'<title id="{title_id}">{_e(title)}</title>'
    )


def _svg_line(
    x1: float, y1: float, x2: float, y2: float, colour: str, width: float = 1.0, dash: str = ""
) -> str:
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
        f'stroke-width="{width:g}"{dash_attr}/>'
    )


def _svg_text(x: float, y: float, text: str, kind: str = "tick", anchor: str = "start") -> str:
    """A text element; ``text`` is escaped here. ``kind``: tick (11 px), legend or axis (12 px)."""
    size = 11 if kind == "tick" else 12
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" class="{kind}" '
        f'font-size="{size}">{_e(text)}</text>'
    )


def _svg_polyline(
    points: list[tuple[float, float]], colour: str, width: float, dash: str = ""
) -> str:
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
    return (
        f'<polyline fill="none" stroke="{colour}" stroke-width="{width:g}"{dash_attr} '
        f'points="{coords}"/>'
    )


def _svg_frame(left: float, top: float, pw: float, ph: float) -> str:
    return (
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#ffffff" stroke="#d1d5db"/>'
    )


def _svg_axis_titles(
    left: float, top: float, pw: float, ph: float, height: float, x_title: str, y_title: str
) -> str:
    cy = top + ph / 2
    return _svg_text(left + pw / 2, height - 10, x_title, "axis", "middle") + (
        f'<text x="14" y="{cy:.1f}" text-anchor="middle" class="axis" font-size="12" '
        f'transform="rotate(-90 14 {cy:.1f})">{_e(y_title)}</text>'
    )


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1-2-2.5-5 steps)."""
    span = hi - lo
    if not math.isfinite(span) or span <= 0:
        return [lo]
    raw = span / max(n, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    ticks = []
    t = math.ceil(lo / step - 1e-9) * step
    while t <= hi + step * 1e-9:
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    return ticks


def _tick_label(t: float) -> str:
    return f"{t:.6g}"


def _finite_list(values: Any) -> list[float]:
    if not isinstance(values, Sequence) or isinstance(values, str):
        return []
    return [f for f in (_finite(v) for v in values) if f is not None]


def _histogram_svg(
    suspect: list[float], reference: list[float] | None, threshold: float | None
) -> str:
    """Overlaid histograms (fraction of each set per bin) with the decision threshold."""
    # One legend row per entry above the plot: never overflows, whatever the label lengths.
    n_legend = (2 if reference else 1) + (1 if threshold is not None else 0)
    width = 720
    left, right, top, bottom = 60, 20, 14 + 18 * n_legend, 50
    height = top + 240 + bottom
    pw, ph = width - left - right, height - top - bottom
    all_values = suspect + (reference or [])
    lo, hi = min(all_values), max(all_values)
    if threshold is not None:
        lo, hi = min(lo, threshold), max(hi, threshold)
    if hi - lo <= 0:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.02
    lo, hi = lo - pad, hi + pad
    n_bins = int(min(40, max(10, round(math.sqrt(len(all_values)) * 2))))
    edges = np.linspace(lo, hi, n_bins + 1)

    # Each series as a fraction of its own size, so sets of different sizes compare.
    series: list[tuple[str, str, np.ndarray]] = []
    if reference:
        counts, _ = np.histogram(reference, bins=edges)
        label = f"reference (known non-members) (n = {len(reference):,})"
        series.append((label, _REFERENCE_COLOUR, counts / len(reference)))
    counts, _ = np.histogram(suspect, bins=edges)
    series.append(
        (f"suspect images (n = {len(suspect):,})", _SUSPECT_COLOUR, counts / len(suspect))
    )
    ymax = max(float(frac.max()) for _, _, frac in series) or 1.0
    yticks = _nice_ticks(0.0, ymax * 1.05, 4)
    ytop = max(ymax * 1.05, yticks[-1])

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * pw

    def y(v: float) -> float:
        return top + ph - v / ytop * ph

    title = "Histogram of membership scores: suspect images" + (
        " versus reference non-members" if reference else ""
    )
    parts = [_svg_open(width, height, "hist-title", title), _svg_frame(left, top, pw, ph)]
    for t in yticks:
        parts.append(_svg_line(left, y(t), left + pw, y(t), _GRID_COLOUR))
        parts.append(_svg_text(left - 6, y(t) + 4, _tick_label(t), anchor="end"))
    for t in _nice_ticks(lo, hi, 6):
        parts.append(_svg_line(x(t), top + ph, x(t), top + ph + 4, "#6b7280"))
        parts.append(_svg_text(x(t), top + ph + 17, _tick_label(t), anchor="middle"))
    for _label, colour, frac in series:
        # Step outline plus a translucent fill, so two overlapping series both stay visible.
        pts = [f"{x(edges[0]):.1f},{y(0):.1f}"]
        for i, f in enumerate(frac):
            pts.append(f"{x(edges[i]):.1f},{y(float(f)):.1f}")
            pts.append(f"{x(edges[i + 1]):.1f},{y(float(f)):.1f}")
        pts.append(f"{x(edges[-1]):.1f},{y(0):.1f}")
        parts.append(
            f'<polygon points="{" ".join(pts)}" fill="{colour}" fill-opacity="0.25" '
            f'stroke="{colour}" stroke-width="1.5"/>'
        )
    if threshold is not None:
        tx = x(threshold)
        parts.append(_svg_line(tx, top, tx, top + ph, _THRESHOLD_COLOUR, 1.5, "6 4"))
        parts.append(_svg_text(tx + 4, top + 12, f"threshold {_num(threshold)}"))
    parts.append(
        _svg_axis_titles(
            left,
            top,
            pw,
            ph,
            height,
            "membership score (higher = more member-like)",
            "fraction of images",
        )
    )
    # Legend above the plot, one entry per row.
    ly = 10
    for label, colour, _frac in reversed(series):
        parts.append(
            f'<rect x="{left}" y="{ly}" width="14" height="12" fill="{colour}" '
            f'fill-opacity="0.25" stroke="{colour}"/>'
        )
        parts.append(_svg_text(left + 22, ly + 11, label, "legend"))
        ly += 18
    if threshold is not None:
        parts.append(_svg_line(left, ly + 6, left + 14, ly + 6, _THRESHOLD_COLOUR, 1.5, "4 3"))
        parts.append(_svg_text(left + 22, ly + 11, "decision threshold", "legend"))
    parts.append("</svg>")
    return "".join(parts)


_ROC_MIN_FPR = 1e-3


def _roc_svg(fpr: list[float], tpr: list[float], expected_fpr: float | None) -> str:
    """ROC curve with a log-scale FPR axis (1e-3 .. 1) and the chance diagonal."""
    width, height = 480, 400
    left, right, top, bottom = 60, 20, 20, 50
    pw, ph = width - left - right, height - top - bottom
    lmin = math.log10(_ROC_MIN_FPR)

    def x(v: float) -> float:
        v = min(1.0, max(_ROC_MIN_FPR, v))  # FPR 0 cannot be shown on a log axis: pin to the edge
        return left + (math.log10(v) - lmin) / (0.0 - lmin) * pw

    def y(v: float) -> float:
        return top + ph - min(1.0, max(0.0, v)) * ph

    parts = [
        _svg_open(
            width, height, "roc-title", "Calibration ROC curve, log-scale false-positive rate"
        ),
        _svg_frame(left, top, pw, ph),
    ]
    for k in range(-3, 1):
        v = 10.0**k
        parts.append(_svg_line(x(v), top, x(v), top + ph, _GRID_COLOUR))
        parts.append(_svg_text(x(v), top + ph + 17, f"{v:g}", anchor="middle"))
        if k < 0:
            for m in range(2, 10):  # minor log ticks
                parts.append(_svg_line(x(m * v), top + ph, x(m * v), top + ph + 3, _CHANCE_COLOUR))
    for t in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        parts.append(_svg_line(left, y(t), left + pw, y(t), _GRID_COLOUR))
        parts.append(_svg_text(left - 6, y(t) + 4, f"{t:g}", anchor="end"))
    # Chance: TPR = FPR, a curve on a log-x axis; sampled densely in log space.
    chance = [10.0 ** (lmin + i * (0.0 - lmin) / 60) for i in range(61)]
    parts.append(_svg_polyline([(x(v), y(v)) for v in chance], _CHANCE_COLOUR, 1.2, "4 4"))
    show_expected = expected_fpr is not None and expected_fpr > 0
    if show_expected:
        ex = x(float(expected_fpr))  # type: ignore[arg-type]
        parts.append(_svg_line(ex, top, ex, top + ph, _THRESHOLD_COLOUR, 1.0, "6 4"))
    parts.append(
        _svg_polyline([(x(f), y(t)) for f, t in zip(fpr, tpr, strict=True)], _SUSPECT_COLOUR, 2.0)
    )
    lx, ly = left + 10, top + 16
    legend = [
        (_SUSPECT_COLOUR, 2.0, "", "attack (held-out calibration data)"),
        (_CHANCE_COLOUR, 1.0, "4 4", "chance (TPR = FPR)"),
    ]
    if show_expected:
        legend.append((_THRESHOLD_COLOUR, 1.0, "6 4", "expected FPR of the decision threshold"))
    for colour, stroke_width, dash, text in legend:
        parts.append(_svg_line(lx, ly - 4, lx + 18, ly - 4, colour, stroke_width, dash))
        parts.append(_svg_text(lx + 24, ly, text, "legend"))
        ly += 18
    parts.append(
        _svg_axis_titles(
            left, top, pw, ph, height, "false-positive rate (log scale)", "true-positive rate"
        )
    )
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

_VERDICT_STYLE = {
    "likely-used": ("Likely used", "#b42318", "#fef3f2"),
    "no-evidence": ("No evidence of use", "#067647", "#ecfdf3"),
    "inconclusive": ("Inconclusive", "#b54708", "#fffaeb"),
}

_TEST_NAMES = {
    "rank-test": "Rank test (suspect vs reference scores)",
    "binomial-test": "Binomial test (flag count vs expected false positives)",
}

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  color: #111827; background: #f9fafb; margin: 0; line-height: 1.45; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 1.35rem; margin: 0 0 4px; }
h2 { font-size: 1.15rem; margin: 32px 0 10px; border-bottom: 1px solid #e5e7eb;
  padding-bottom: 4px; }
h3 { font-size: 1rem; margin: 18px 0 6px; }
.meta { color: #4b5563; font-size: .9rem; margin: 0; word-break: break-all; }
.verdict { border: 2px solid; border-radius: 10px; padding: 18px 22px; margin: 18px 0 8px; }
.verdict .label { font-size: 2.1rem; font-weight: 700; letter-spacing: .01em; }
.verdict .code { font-size: .85rem; color: #4b5563;
  font-family: ui-monospace, Menlo, Consolas, monospace; }
.verdict .reason { font-size: 1.05rem; margin: 6px 0; }
.verdict .test { margin: 0; font-size: .95rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 10px; }
.card { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 10px 12px; }
.card .k { color: #4b5563; font-size: .8rem; text-transform: uppercase; letter-spacing: .03em; }
.card .v { font-size: 1.3rem; font-weight: 600; }
.card .n { color: #4b5563; font-size: .82rem; }
.chart { max-width: 100%; height: auto; background: #fff; border: 1px solid #e5e7eb;
  border-radius: 8px; }
.chart .tick { font-size: 11px; fill: #374151; }
.chart .axis { font-size: 12px; fill: #111827; }
.chart .legend { font-size: 12px; fill: #111827; }
.caption { color: #4b5563; font-size: .88rem; max-width: 760px; }
table { border-collapse: collapse; background: #fff; width: 100%; font-size: .9rem; }
th, td { border: 1px solid #e5e7eb; padding: 5px 8px; text-align: left; vertical-align: middle; }
th { background: #f3f4f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.path { width: 45%; min-width: 160px; overflow-wrap: anywhere; }
td.thumb { width: 100px; text-align: center; }
td.thumb img { display: block; margin: 0 auto; max-width: 96px; max-height: 96px; }
.none { color: #6b7280; font-style: italic; }
.flag-yes { color: #b42318; font-weight: 600; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0;
  background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 10px 14px; }
dl.kv dt { color: #4b5563; }
dl.kv dd { margin: 0; font-family: ui-monospace, Menlo, Consolas, monospace;
  word-break: break-all; }
pre { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 10px 12px;
  overflow-x: auto; font-size: .82rem; white-space: pre-wrap; word-break: break-all; }
details > summary { cursor: pointer; font-weight: 600; margin: 8px 0; }
footer { margin-top: 40px; color: #6b7280; font-size: .82rem; }
@media print { body { background: #fff; } .chart, .card, pre, dl.kv { border-color: #999; } }
"""


def _card(key: str, value: str, note: str = "") -> str:
    """One key-number card. ``value`` and ``note`` must already be escaped."""
    note_html = f'<div class="n">{note}</div>' if note else ""
    return (
        f'<div class="card"><div class="k">{_e(key)}</div><div class="v">{value}</div>'
        f"{note_html}</div>"
    )


def _verdict_html(report: Mapping[str, Any]) -> str:
    verdict = _get(report, "verdict") or {}
    label = str(verdict.get("label", ""))
    title, colour, background = _VERDICT_STYLE.get(
        label, (label or "unknown", "#374151", "#f3f4f6")
    )
    test = verdict.get("test")
    alpha = verdict.get("alpha")
    if test in (None, "none"):
        test_line = f"No statistical test was run (significance level \u03b1 = {_e(_num(alpha))})."
    else:
        p = verdict.get("p_value")
        test_line = (
            f"{_e(_TEST_NAMES.get(str(test), test))}: p = <strong>{_e(_pval(p))}</strong> "
            f"(significance level \u03b1 = {_e(_num(alpha))}"
            + (
                ", significant"
                if _finite(p) is not None and _finite(alpha) is not None and p <= alpha
                else ""
            )
            + ")."
        )
    return (
        f'<section class="verdict verdict-{_e(label)}" '
        f'style="border-color:{colour};background:{background}" '
        f'id="verdict" data-label="{_e(label)}">'
        f'<div class="label" style="color:{colour}">{_e(title)}</div>'
        f'<div class="code">verdict: {_e(label)}</div>'
        f'<p class="reason">{_e(verdict.get("reason", ""))}</p>'
        f'<p class="test">{test_line}</p>'
        "</section>"
    )


def _key_numbers_html(report: Mapping[str, Any]) -> str:
    agg = _get(report, "aggregate") or {}
    cards: list[str] = []
    cards.append(
        _card(
            "Images scored",
            _e(_int(agg.get("n_scored"))),
            _e(
                f"of {_int(agg.get('n_images'))} found; {_int(agg.get('n_skipped'))} skipped, "
                f"{_int(agg.get('n_duplicates'))} duplicate(s)"
            ),
        )
    )
    cards.append(
        _card(
            "Flagged as members",
            _e(f"{_int(agg.get('n_flagged'))} ({_pct(agg.get('fraction_flagged'))})"),
            _e(
                f"score \u2265 {_num(agg.get('decision_threshold'))} "
                f"(threshold: {agg.get('threshold_kind') or _DASH})"
            ),
        )
    )
    cards.append(
        _card(
            "Expected false-positive rate",
            _e(_pct(agg.get("expected_fpr"), 2)),
            _e("share of non-member images flagged at this threshold (from calibration)"),
        )
    )
    uf = agg.get("used_fraction")
    if isinstance(uf, Mapping):
        est = uf.get("estimate")
        value = _pct(est) if _finite(est) is not None else _DASH
        interval = (
            f"interval {_pct(uf.get('ci_low'))} \u2013 {_pct(uf.get('ci_high'))}"
            if _finite(uf.get("ci_low")) is not None
            else ""
        )
        note = "; ".join(s for s in (interval, str(uf.get("note") or "")) if s)
        cards.append(_card("Estimated fraction used", _e(value), _e(note)))
    else:
        cards.append(_card("Estimated fraction used", _DASH, _e("not estimated")))
    rt = agg.get("rank_test")
    if isinstance(rt, Mapping):
        ci = rt.get("auc_ci") if isinstance(rt.get("auc_ci"), Sequence) else None
        ci_text = (
            f", 95% CI {_num(ci[0], 3)} \u2013 {_num(ci[1], 3)}" if ci and len(ci) == 2 else ""
        )
        cards.append(
            _card(
                "Rank test vs reference",
                _e(f"p = {_pval(rt.get('p_value'))}"),
                _e(
                    f"AUC {_num(rt.get('auc'), 3)}{ci_text}; "
                    f"{_int(rt.get('n_suspects'))} suspects vs "
                    f"{_int(rt.get('n_reference'))} reference images ({rt.get('method') or _DASH})"
                ),
            )
        )
    else:
        cards.append(_card("Rank test vs reference", _DASH, _e("no reference images were given")))
    bt = agg.get("binomial_test")
    if isinstance(bt, Mapping):
        cards.append(
            _card(
                "Binomial test",
                _e(f"p = {_pval(bt.get('p_value'))}"),
                _e(
                    f"{_int(bt.get('n_flagged'))} of {_int(bt.get('n_total'))} flagged, "
                    f"{_pct(bt.get('expected_fpr'), 2)} expected by chance; {bt.get('note') or ''}"
                ),
            )
        )
    if agg.get("n_bh_flagged") is not None:
        cards.append(
            _card(
                "Images flagged at FDR",
                _e(_int(agg.get("n_bh_flagged"))),
                _e(f"Benjamini-Hochberg, false-discovery rate {_pct(agg.get('fdr'))}"),
            )
        )
    pw = agg.get("power")
    if isinstance(pw, Mapping):
        needed = pw.get("n_suspects_needed")
        value = f"\u2248 {_int(needed)} images" if _is_number(needed) else _DASH
        detail = (
            f"to detect AUC {_num(pw.get('auc'), 3)} with power {_pct(pw.get('power'), 0)} "
            f"at \u03b1 = {_num(pw.get('alpha'))}"
        )
        note = "; ".join(s for s in (detail, str(pw.get("note") or "")) if s)
        cards.append(_card("Images needed (power)", _e(value), _e(note)))
    sc = agg.get("shift_check")
    if isinstance(sc, Mapping):
        dist = sc.get("distinguishable")
        value = {True: "Shift detected", False: "No shift detected"}.get(dist, _DASH)
        detail = f"AUC {_num(sc.get('auc'), 3)}, p = {_pval(sc.get('p_value'))}"
        note = "; ".join(s for s in (detail, str(sc.get("reason") or "")) if s)
        cards.append(_card("Suspect vs reference content shift", _e(value), _e(note)))
    else:
        cards.append(_card("Suspect vs reference content shift", _DASH, _e("not checked")))
    cards.append(_card("Mean score", _e(_num(agg.get("mean_score"))), ""))
    return (
        '<section id="numbers"><h2>Key numbers</h2><div class="cards">'
        + "".join(cards)
        + "</div></section>"
    )


def _histogram_html(report: Mapping[str, Any]) -> str:
    images = _get(report, "images") or []
    suspect = _finite_list([img.get("score") for img in images if isinstance(img, Mapping)])
    ref = _get(report, "reference")
    reference = _finite_list(ref.get("scores")) if isinstance(ref, Mapping) else []
    threshold = _finite(_get(report, "aggregate", "decision_threshold"))
    out = ['<section id="scores"><h2>Score distributions</h2>']
    if not suspect:
        out.append('<p class="none">No image was scored, so there is no distribution to show.</p>')
    else:
        out.append(_histogram_svg(suspect, reference or None, threshold))
        if reference:
            caption = (
                "Each series is normalised to its own size. If the encoder was trained on the "
                "suspect images, their scores sit to the right of the reference (known non-member) "
                "scores; overlapping distributions mean no detectable membership signal."
            )
        else:
            caption = (
                "No reference (known non-member) images were given, so only the suspect scores are "
                "shown; images right of the dashed threshold are flagged as members."
            )
        out.append(f'<p class="caption">{_e(caption)}</p>')
    out.append("</section>")
    return "".join(out)


def _roc_html(report: Mapping[str, Any]) -> str:
    calib = _get(report, "calibration") or {}
    roc = calib.get("roc") if isinstance(calib, Mapping) else None
    out = ['<section id="roc"><h2>Calibration ROC</h2>']
    fpr = tpr = None
    if isinstance(roc, Mapping):
        f, t = roc.get("fpr"), roc.get("tpr")
        if isinstance(f, Sequence) and isinstance(t, Sequence) and len(f) == len(t) and len(f) >= 2:
            pairs = [(_finite(a), _finite(b)) for a, b in zip(f, t, strict=True)]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
            if len(pairs) >= 2:
                fpr = [a for a, _ in pairs]
                tpr = [b for _, b in pairs]
    if fpr is None or tpr is None:
        out.append('<p class="none">No ROC curve is available for this calibration.</p>')
    else:
        expected = _finite(_get(report, "aggregate", "expected_fpr"))
        out.append(_roc_svg(fpr, tpr, expected))
        out.append(
            '<p class="caption">'
            + _e(
                "How well the attack separates members from non-members on held-out calibration "
                "data. The false-positive axis is logarithmic (0.001 to 1) because an audit's "
                "evidence rests on the low-FPR region; a curve on the dashed chance line means no "
                "signal. An FPR of 0 is drawn at the left edge."
            )
            + "</p>"
        )
    out.append("</section>")
    return "".join(out)


def _images_html(report: Mapping[str, Any], top_k: int, thumbnails: bool) -> str:
    images = [img for img in (_get(report, "images") or []) if isinstance(img, Mapping)]

    def order(img: Mapping[str, Any]) -> tuple[float, str]:
        score = _finite(img.get("score"))  # highest first; missing scores last; ties by path
        return (-score if score is not None else math.inf, str(img.get("path", "")))

    ranked = sorted(images, key=order)[:top_k]
    caption = f"The {len(ranked):,} highest-scoring of {len(images):,} scored images."
    out = [
        '<section id="images"><h2>Most member-like images</h2>',
        f'<p class="caption">{caption}</p>',
    ]
    if not ranked:
        out.append('<p class="none">No images to show.</p></section>')
        return "".join(out)
    out.append(
        "<table><thead><tr><th>Rank</th><th>Image</th><th>File</th><th>Score</th>"
        "<th>Member probability</th><th>p-value</th><th>BH flag</th><th>Decision</th></tr>"
        "</thead><tbody>"
    )
    for rank, img in enumerate(ranked, start=1):
        path = str(img.get("path", ""))
        uri = thumbnail_data_uri(path) if thumbnails else None
        thumb = (
            f'<img src="{_e(uri)}" alt="{_e(_basename(path))}" loading="lazy">'
            if uri
            else '<span class="none">n/a</span>'
        )
        bh = img.get("bh_flag")
        bh_html = (
            '<span class="flag-yes">yes</span>' if bh is True else ("no" if bh is False else _DASH)
        )
        digest = str(img.get("sha256", ""))
        out.append(
            f'<tr><td class="num">{rank}</td><td class="thumb">{thumb}</td>'
            f'<td class="path" title="{_e(path)}">{_e(_basename(path))}'
            f'<div class="meta">{_e(path)}</div>'
            f'<div class="meta">sha256 {_e(digest[:16])}\u2026</div></td>'
            f'<td class="num">{_e(_num(img.get("score")))}</td>'
            f'<td class="num">{_e(_pct(img.get("member_probability")))}</td>'
            f'<td class="num">{_e(_pval(img.get("p_value")))}</td>'
            f"<td>{bh_html}</td><td>{_e(img.get('decision', ''))}</td></tr>"
        )
    out.append("</tbody></table></section>")
    return "".join(out)


def _skipped_html(report: Mapping[str, Any]) -> str:
    skipped = [s for s in (_get(report, "skipped") or []) if isinstance(s, Mapping)]
    out = [f'<section id="skipped"><h2>Skipped files ({len(skipped):,})</h2>']
    if not skipped:
        out.append('<p class="none">No file was skipped.</p>')
    else:
        out.append("<table><thead><tr><th>File</th><th>Set</th><th>Reason</th></tr></thead><tbody>")
        for item in skipped:
            out.append(
                f'<tr><td class="path">{_e(item.get("path", ""))}</td>'
                f"<td>{_e(item.get('set', ''))}</td>"
                f"<td>{_e(item.get('reason', ''))}</td></tr>"
            )
        out.append("</tbody></table>")
    ignored = [i for i in (_get(report, "ignored") or []) if isinstance(i, Mapping)]
    if ignored:
        out.append('<p class="ignored">Left out while searching folders (never opened): '
                   + "; ".join(f"{_e(i.get('set', ''))}: {_int(i.get('count'))} {_e(i.get('reason', ''))}" for i in ignored) + ".</p>")
    out.append("</section>")
    return "".join(out)


def _duplicates_html(report: Mapping[str, Any]) -> str:
    groups = [
        g
        for g in (_get(report, "duplicates") or [])
        if isinstance(g, Sequence) and not isinstance(g, str)
    ]
    plural = "" if len(groups) == 1 else "s"
    out = [f'<section id="duplicates"><h2>Duplicate files ({len(groups):,} group{plural})</h2>']
    if not groups:
        out.append('<p class="none">No two files had identical content.</p>')
    else:
        out.append(
            '<p class="caption">Files with identical bytes (same SHA-256): the same image under '
            "several names.</p><ol>"
        )
        for group in groups:
            out.append("<li>" + "<br>".join(_e(p) for p in group) + "</li>")
        out.append("</ol>")
    out.append("</section>")
    return "".join(out)


def _dl(rows: list[tuple[str, Any]]) -> str:
    items = "".join(
        f"<dt>{_e(k)}</dt><dd>{_e(_DASH if v is None or v == '' else v)}</dd>" for k, v in rows
    )
    return f'<dl class="kv">{items}</dl>'


def _provenance_html(report: Mapping[str, Any]) -> str:
    calib = _get(report, "calibration") or {}
    enc = _get(report, "encoder") or {}
    config = _get(report, "config") or {}
    env = _get(report, "environment") or {}
    ref = _get(report, "reference")
    identity = enc.get("identity") if isinstance(enc, Mapping) else None
    if isinstance(identity, (Mapping, list)):
        identity = json.dumps(_normalise(identity, ()), ensure_ascii=False, allow_nan=False)
    attack = str(_get(calib, "attack") or "")
    if _get(calib, "attack_name"):
        attack = f"{attack} ({_get(calib, 'attack_name')})".strip()
    rows: list[tuple[str, Any]] = [
        (
            "report schema",
            f"{_get(report, 'kind') or ''} {_get(report, 'schema_version') or ''}".strip(),
        ),
        ("auditmi version (scan)", _get(report, "auditmi_version")),
        ("created", _get(report, "created")),
        ("command", _get(report, "command")),
        ("encoder", _get(enc, "spec")),
        ("encoder backend", _get(enc, "backend")),
        ("encoder identity", identity),
        ("calibration bundle", _get(calib, "path")),
        ("calibration bundle sha256", _get(calib, "bundle_sha256")),
        ("attack", attack),
        ("seed", _get(config, "seed")),
        ("device", _get(config, "device")),
        ("python", _get(env, "python")),
        ("torch", _get(env, "torch")),
        ("platform", _get(env, "platform")),
    ]
    if isinstance(ref, Mapping):
        roots = ref.get("paths_root") or []
        rows.append(("reference folders", "; ".join(str(r) for r in roots)))
        rows.append(
            (
                "reference images",
                f"{_int(ref.get('n_images'))} used, {_int(ref.get('n_skipped'))} skipped",
            )
        )
    out = [
        '<section id="provenance"><h2>Reproducibility: versions, hashes and configuration</h2>',
        _dl(rows),
    ]
    blocks = [
        ("Held-out calibration metrics", _get(calib, "held_out_metrics")),
        ("Configuration", config),
        ("Encoder", enc),
        (
            "Calibration",
            {k: v for k, v in calib.items() if k != "roc"} if isinstance(calib, Mapping) else calib,
        ),
        ("Environment", env),
        ("Timing", _get(report, "timing")),
    ]
    for title, value in blocks:
        # <details open>: collapsible without JavaScript, expanded by default so it also prints.
        out.append(f"<details open><summary>{_e(title)}</summary>{_json_block(value)}</details>")
    out.append("</section>")
    return "".join(out)


def render_html(report: Mapping[str, Any], top_k: int = 20, thumbnails: bool = True) -> str:
    """Render a scan report as one self-contained HTML page.

    The page needs nothing but itself: CSS is inline, charts are inline SVG generated here,
    thumbnails are ``data:`` URIs, there is no JavaScript, and a Content-Security-Policy
    forbids any network request. Sections, in order: the verdict (coloured by label, with its
    reason and test), key numbers, the suspect-vs-reference score histogram with the decision
    threshold, the calibration ROC on a log-FPR axis, the ``top_k`` most member-like images,
    skipped files, duplicates, and versions/hashes/configuration for reproduction.

    Args:
        report: The report dict (see :func:`validate_report`; rendering tolerates missing
            optional parts such as ``reference`` or the ROC).
        top_k: How many of the highest-scoring images to list (0 for none).
        thumbnails: Embed a thumbnail of each listed image, read from its ``path`` (files that
            cannot be read any more are shown as "n/a").

    Returns:
        The HTML text.

    Raises:
        InputError: ``top_k`` is not a non-negative whole number.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise InputError(f"top_k must be a whole number >= 0, got {top_k!r}.")
    label = str(_get(report, "verdict", "label") or "")
    title = _VERDICT_STYLE.get(label, (label or "report",))[0]
    head = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        # Self-contained evidence: the page may not fetch anything, run anything, or send forms.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:; form-action 'none'; base-uri 'none'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>auditmi scan report: {_e(title)}</title>"
        f"<style>{_CSS}</style></head><body><main>"
    )
    header = (
        "<header><h1>auditmi membership audit</h1>"
        f'<p class="meta">Was this image encoder trained on these images? '
        f"Encoder: {_e(_get(report, 'encoder', 'spec') or _DASH)}; "
        f"scanned {_e(_get(report, 'created') or _DASH)} "
        f"with auditmi {_e(_get(report, 'auditmi_version') or _DASH)}.</p>"
        "</header>"
    )
    body = [
        head,
        header,
        _verdict_html(report),
        _key_numbers_html(report),
        _histogram_html(report),
        _roc_html(report),
        _images_html(report, int(top_k), thumbnails),
        _skipped_html(report),
        _duplicates_html(report),
        _provenance_html(report),
        f"<footer>Rendered by auditmi {_e(__version__)}. This page is self-contained: "
        "it loads nothing from the network and runs no scripts. The JSON report is the "
        "authoritative record.</footer>",
        "</main></body></html>\n",
    ]
    return "".join(body)


def write_html(report: Mapping[str, Any], dest: str | Path, **kw: Any) -> None:
    """Render a report (see :func:`render_html`) and write it atomically to ``dest``.

    Args:
        report: The report dict.
        dest: The HTML file to write (temporary file + ``os.replace``).
        **kw: Passed to :func:`render_html` (``top_k``, ``thumbnails``).

    Raises:
        InputError: The file cannot be written, or bad ``top_k``.
    """
    # A file name that is not UTF-8, or holds control characters (escape codes that `cat` would
    # run) or bidirectional overrides, is shown with visible \xNN / \uNNNN escapes.
    from auditmi.terminal import printable

    _atomic_write_text(printable(render_html(report, **kw), keep_newlines=True), dest, "HTML report")
