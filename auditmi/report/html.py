"""The scan report as ONE self-contained HTML page, rendered from Jinja2 templates.

The page needs nothing but itself: the CSS (templates/report.css) is inlined, the charts are
inline SVG (geometry in :mod:`auditmi.report.charts`), thumbnails are ``data:`` URIs, there is no
JavaScript, and a Content-Security-Policy forbids any network request, so it shows the same
thing forever and leaks nothing when opened. Autoescaping is on for every template: a file
called ``<script>.png`` is shown as text, never run.

Layout: the one clear answer first (the verdict and its p-value), then the numbers behind it,
then the evidence (score distributions against known non-members; the calibration ROC on a
log-FPR axis because low-FPR behaviour is what matters, Carlini et al. 2022), then the images,
and last everything a third party needs to reproduce the verdict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from auditmi import __version__
from auditmi.errors import InputError
from auditmi.report import charts
from auditmi.report.format import DASH, count, finite, finite_list, get, json_text, num, pval
from auditmi.report.jsondoc import write_text
from auditmi.report.sections import image_rows, key_number_cards, provenance, roc_chart

VERDICT_STYLE = {
    "likely-used": ("Likely used", "#b42318", "#fef3f2"),
    "no-evidence": ("No evidence of use", "#067647", "#ecfdf3"),
    "inconclusive": ("Inconclusive", "#b54708", "#fffaeb"),
}
TEST_NAMES = {
    "rank-test": "Rank test (suspect vs reference scores)",
    "binomial-test": "Binomial test (flag count vs expected false positives)",
}


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("auditmi.report", "templates"),
        autoescape=True,  # every template, whatever its extension
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["c"] = lambda v: f"{float(v):.1f}"  # SVG coordinates
    env.filters["g"] = lambda v: f"{float(v):g}"
    return env


def _significant(p: Any, alpha: Any) -> bool:
    fp, fa = finite(p), finite(alpha)
    return fp is not None and fa is not None and fp <= fa


def render_html(report: Mapping[str, Any], top_k: int = 20, thumbnails: bool = True) -> str:
    """Render a scan report as one self-contained HTML page.

    Sections, in order: the verdict (coloured by label, with its reason and test), key numbers,
    the suspect-vs-reference score histogram with the decision threshold, the calibration ROC on
    a log-FPR axis, the ``top_k`` most member-like images, skipped files, duplicates, and
    versions/hashes/configuration for reproduction.

    Args:
        report: The report dict (see :func:`auditmi.report.validate_report`; rendering tolerates
            missing optional parts such as ``reference`` or the ROC).
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
    verdict = get(report, "verdict") or {}
    label = str(verdict.get("label", ""))
    title, colour, background = VERDICT_STYLE.get(label, (label or "unknown", "#374151", "#f3f4f6"))
    test, p, alpha = verdict.get("test"), verdict.get("p_value"), verdict.get("alpha")
    images = [img for img in (get(report, "images") or []) if isinstance(img, Mapping)]
    suspect = finite_list([img.get("score") for img in images])
    ref = get(report, "reference")
    reference = finite_list(ref.get("scores")) if isinstance(ref, Mapping) else []
    threshold = finite(get(report, "aggregate", "decision_threshold"))
    if threshold is not None and threshold >= np.finfo(np.float64).max:
        threshold = None  # the report's stand-in for "flags nothing" (an infinite threshold): no line to draw
    rows, n_images = image_rows(images, int(top_k), thumbnails)
    skipped = [s for s in (get(report, "skipped") or []) if isinstance(s, Mapping)]
    groups = [g for g in (get(report, "duplicates") or []) if isinstance(g, Sequence) and not isinstance(g, str)]
    prov_rows, prov_blocks = provenance(report)
    context = {
        "page_title": VERDICT_STYLE.get(label, (label or "report",))[0],
        "encoder_spec": get(report, "encoder", "spec") or DASH,
        "created": get(report, "created") or DASH,
        "report_version": get(report, "auditmi_version") or DASH,
        "verdict": {"label": label, "title": title, "colour": colour, "background": background, "reason": verdict.get("reason", ""),
                    "ran_test": test not in (None, "none"), "test_name": TEST_NAMES.get(str(test), test), "p": pval(p),
                    "alpha": num(alpha),
                    "significant": _significant(p, alpha)},
        "cards": key_number_cards(get(report, "aggregate") or {}, get(report, "score", "threshold", "note") or None),
        "histogram": charts.histogram(suspect, reference or None, threshold, num(threshold)) if suspect else None,
        "has_reference": bool(reference),
        "roc": roc_chart(report),
        "images": rows,
        "n_images": n_images,
        "skipped": [{"path": str(s.get("path", "")), "set": str(s.get("set", "")), "reason": str(s.get("reason", ""))} for s in skipped],
        "ignored": [{"set": str(i.get("set", "")), "reason": str(i.get("reason", "")), "count": count(i.get("count"))}
                    for i in (get(report, "ignored") or []) if isinstance(i, Mapping)],
        "duplicates": [[str(p) for p in g] for g in groups],
        "provenance": prov_rows,
        "blocks": [(t, json_text(v)) for t, v in prov_blocks],
        "version": __version__,
    }
    return _environment().get_template("report.html.j2").render(context)


def write_html(report: Mapping[str, Any], dest: str | Path, **kw: Any) -> None:
    """Render a report (see :func:`render_html`) and write it atomically to ``dest``.

    Raises:
        InputError: The file cannot be written, or bad ``top_k``.
    """
    # A file name that is not UTF-8, or holds control characters (escape codes that `cat` would
    # run) or bidirectional overrides, is shown with visible \xNN / \uNNNN escapes.
    from auditmi.terminal import printable

    write_text(printable(render_html(report, **kw), keep_newlines=True), dest, "HTML report")
