"""Evidence-grade reports: typed results -> a JSON document with a schema, and a self-contained HTML page.

One module per concern:

* :mod:`~auditmi.report.build`: the only module that knows the JSON layout (results -> dicts);
* :mod:`~auditmi.report.schema`: the packaged JSON Schema and validation with ``jsonschema``;
* :mod:`~auditmi.report.jsondoc`: strict JSON, written through the one atomic writer;
* :mod:`~auditmi.report.charts`: geometry of the hand-drawn SVG charts;
* :mod:`~auditmi.report.sections`, :mod:`~auditmi.report.format`, :mod:`~auditmi.report.thumbnails`:
  what the HTML page shows; :mod:`~auditmi.report.html` renders it from the Jinja2 templates in
  ``templates/`` (autoescaped; the CSS file is inlined).
"""

from __future__ import annotations

from auditmi.report.build import calibrate_summary, cap_image_list, evaluate_report, scan_report
from auditmi.report.html import render_html, write_html
from auditmi.report.jsondoc import to_json, write_json
from auditmi.report.schema import REPORT_KIND, SCHEMA_VERSION, VERDICT_LABELS, InvalidReportError, schema, validate_report
from auditmi.report.thumbnails import thumbnail_data_uri

__all__ = [
    "REPORT_KIND",
    "SCHEMA_VERSION",
    "VERDICT_LABELS",
    "InvalidReportError",
    "calibrate_summary",
    "cap_image_list",
    "evaluate_report",
    "render_html",
    "scan_report",
    "schema",
    "thumbnail_data_uri",
    "to_json",
    "validate_report",
    "write_html",
    "write_json",
]
