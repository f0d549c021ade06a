"""Geometry of the report's two SVG charts, computed here; their markup is in templates/chart.svg.j2.

The charts are drawn by hand (no plotting library, no script, no network): a chart is a list of
primitive shapes in SVG user units, so the page is small and deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SUSPECT_COLOUR = "#c2410c"
REFERENCE_COLOUR = "#1d4ed8"
THRESHOLD_COLOUR = "#111827"
GRID_COLOUR = "#eef0f3"
CHANCE_COLOUR = "#9ca3af"
TICK_COLOUR = "#6b7280"
ROC_MIN_FPR = 1e-3


@dataclass(frozen=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float
    colour: str
    width: float = 1.0
    dash: str = ""
    shape: str = "line"


@dataclass(frozen=True)
class Text:
    """A label; ``kind``: tick (11 px), legend or axis (12 px). ``rotate``: degrees about (x, y)."""

    x: float
    y: float
    text: str
    kind: str = "tick"
    anchor: str = "start"
    rotate: float | None = None
    shape: str = "text"

    @property
    def size(self) -> int:
        return 11 if self.kind == "tick" else 12


@dataclass(frozen=True)
class Polyline:
    points: list[tuple[float, float]]
    colour: str
    width: float
    dash: str = ""
    filled: bool = False  # a closed polygon with a translucent fill
    shape: str = "polyline"


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    fill: str
    stroke: str
    fill_opacity: float | None = None
    shape: str = "rect"


Shape = Line | Text | Polyline | Rect


@dataclass
class Chart:
    """An SVG chart: its size, accessible title and shapes (drawn in order)."""

    width: int
    height: int
    title_id: str
    title: str
    shapes: list[Shape] = field(default_factory=list)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
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


def _frame_and_titles(chart: Chart, left: float, top: float, pw: float, ph: float, x_title: str, y_title: str) -> list[Shape]:
    cy = top + ph / 2
    return [Text(left + pw / 2, chart.height - 10, x_title, "axis", "middle"), Text(14, cy, y_title, "axis", "middle", rotate=-90)]


def histogram(suspect: list[float], reference: list[float] | None, threshold: float | None, threshold_label: str) -> Chart:
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
        series.append((f"reference (known non-members) (n = {len(reference):,})", REFERENCE_COLOUR, counts / len(reference)))
    counts, _ = np.histogram(suspect, bins=edges)
    series.append((f"suspect images (n = {len(suspect):,})", SUSPECT_COLOUR, counts / len(suspect)))
    ymax = max(float(frac.max()) for _, _, frac in series) or 1.0
    yticks = nice_ticks(0.0, ymax * 1.05, 4)
    ytop = max(ymax * 1.05, yticks[-1])

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * pw

    def y(v: float) -> float:
        return top + ph - v / ytop * ph

    title = "Histogram of membership scores: suspect images" + (" versus reference non-members" if reference else "")
    chart = Chart(width, height, "hist-title", title)
    s = chart.shapes
    s.append(Rect(left, top, pw, ph, "#ffffff", "#d1d5db"))
    for t in yticks:
        s += [Line(left, y(t), left + pw, y(t), GRID_COLOUR), Text(left - 6, y(t) + 4, f"{t:.6g}", anchor="end")]
    for t in nice_ticks(lo, hi, 6):
        s += [Line(x(t), top + ph, x(t), top + ph + 4, TICK_COLOUR), Text(x(t), top + ph + 17, f"{t:.6g}", anchor="middle")]
    for _label, colour, frac in series:
        # Step outline plus a translucent fill, so two overlapping series both stay visible.
        pts = [(x(edges[0]), y(0))]
        for i, f in enumerate(frac):
            pts += [(x(edges[i]), y(float(f))), (x(edges[i + 1]), y(float(f)))]
        pts.append((x(edges[-1]), y(0)))
        s.append(Polyline(pts, colour, 1.5, filled=True))
    if threshold is not None:
        tx = x(threshold)
        s += [Line(tx, top, tx, top + ph, THRESHOLD_COLOUR, 1.5, "6 4"), Text(tx + 4, top + 12, f"threshold {threshold_label}")]
    s += _frame_and_titles(chart, left, top, pw, ph, "membership score (higher = more member-like)", "fraction of images")
    ly = 10  # legend above the plot, one entry per row
    for label, colour, _frac in reversed(series):
        s += [Rect(left, ly, 14, 12, colour, colour, 0.25), Text(left + 22, ly + 11, label, "legend")]
        ly += 18
    if threshold is not None:
        s += [Line(left, ly + 6, left + 14, ly + 6, THRESHOLD_COLOUR, 1.5, "4 3"), Text(left + 22, ly + 11, "decision threshold", "legend")]
    return chart


def roc(fpr: list[float], tpr: list[float], expected_fpr: float | None) -> Chart:
    """ROC curve with a log-scale FPR axis (1e-3 .. 1) and the chance diagonal."""
    width, height = 480, 400
    left, right, top, bottom = 60, 20, 20, 50
    pw, ph = width - left - right, height - top - bottom
    lmin = math.log10(ROC_MIN_FPR)

    def x(v: float) -> float:
        v = min(1.0, max(ROC_MIN_FPR, v))  # FPR 0 cannot be shown on a log axis: pin to the edge
        return left + (math.log10(v) - lmin) / (0.0 - lmin) * pw

    def y(v: float) -> float:
        return top + ph - min(1.0, max(0.0, v)) * ph

    chart = Chart(width, height, "roc-title", "Calibration ROC curve, log-scale false-positive rate")
    s = chart.shapes
    s.append(Rect(left, top, pw, ph, "#ffffff", "#d1d5db"))
    for k in range(-3, 1):
        v = 10.0**k
        s += [Line(x(v), top, x(v), top + ph, GRID_COLOUR), Text(x(v), top + ph + 17, f"{v:g}", anchor="middle")]
        if k < 0:
            s += [Line(x(m * v), top + ph, x(m * v), top + ph + 3, CHANCE_COLOUR) for m in range(2, 10)]  # minor log ticks
    for t in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        s += [Line(left, y(t), left + pw, y(t), GRID_COLOUR), Text(left - 6, y(t) + 4, f"{t:g}", anchor="end")]
    # Chance: TPR = FPR, a curve on a log-x axis; sampled densely in log space.
    chance = [10.0 ** (lmin + i * (0.0 - lmin) / 60) for i in range(61)]
    s.append(Polyline([(x(v), y(v)) for v in chance], CHANCE_COLOUR, 1.2, "4 4"))
    show_expected = expected_fpr is not None and expected_fpr > 0
    if show_expected:
        ex = x(float(expected_fpr))  # type: ignore[arg-type]
        s.append(Line(ex, top, ex, top + ph, THRESHOLD_COLOUR, 1.0, "6 4"))
    s.append(Polyline([(x(f), y(t)) for f, t in zip(fpr, tpr, strict=True)], SUSPECT_COLOUR, 2.0))
    lx, ly = left + 10, top + 16
    legend = [(SUSPECT_COLOUR, 2.0, "", "attack (held-out calibration data)"), (CHANCE_COLOUR, 1.0, "4 4", "chance (TPR = FPR)")]
    if show_expected:
        legend.append((THRESHOLD_COLOUR, 1.0, "6 4", "expected FPR of the decision threshold"))
    for colour, stroke_width, dash, text in legend:
        s += [Line(lx, ly - 4, lx + 18, ly - 4, colour, stroke_width, dash), Text(lx + 24, ly, text, "legend")]
        ly += 18
    s += _frame_and_titles(chart, left, top, pw, ph, "false-positive rate (log scale)", "true-positive rate")
    return chart
