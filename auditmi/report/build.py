"""The one place that knows the JSON layout of auditmi's documents: typed results -> dicts.

* :func:`scan_report`: a :class:`~auditmi.jobs.scan.ScanResult` -> the scan report
  (auditmi/schemas/scan-report.schema.json);
* :func:`evaluate_report`: an :class:`~auditmi.jobs.evaluate.EvaluateResult` -> the evaluate report;
* :func:`calibrate_summary`: a :class:`~auditmi.jobs.calibrate.CalibrateResult` -> the summary that
  ``auditmi calibrate --json`` writes.

Values are left as Python/numpy values; :mod:`auditmi.report.jsondoc` makes them strict JSON.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from auditmi import __version__
from auditmi import stats as S
from auditmi.report.schema import REPORT_KIND, SCHEMA_VERSION

if TYPE_CHECKING:
    from auditmi.jobs.calibrate import CalibrateResult
    from auditmi.jobs.evaluate import EvaluateResult
    from auditmi.jobs.scan import ScanResult

EVALUATE_KIND = "auditmi.evaluate-report"

#: Default most images listed in a scan report (``scan --max-report-images``; ``--parquet`` has all).
DEFAULT_MAX_REPORT_IMAGES = 10_000


def _iso(t: Any) -> str:
    return t.isoformat(timespec="seconds")


def scan_report(result: ScanResult, command: str = "", max_images: int | None = DEFAULT_MAX_REPORT_IMAGES,
                parquet: str | Path | None = None) -> dict[str, Any]:
    """The scan report document of ``result`` (``command``: the command line, for provenance).

    At most ``max_images`` images are listed (None: all), see :func:`cap_image_list`;
    ``parquet``: the Parquet file holding every image's row, if one was written.
    """
    v, st, thr, cal, cfg = result.verdict, result.statistics, result.threshold, result.calibration, result.config
    n = len(result.images)
    n_tested = result.n_distinct if result.n_distinct is not None else n - result.n_duplicates  # duplicates count once
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": REPORT_KIND,
        "auditmi_version": __version__,
        "created": _iso(result.timing.finished),
        "command": command,
        "verdict": {"label": v.label.value, "reason": v.reason, "test": v.test.value,
                    "p_value": None if v.p_value is None else float(v.p_value), "alpha": v.alpha},
        "aggregate": {
            "n_images": result.n_images, "n_scored": n, "n_skipped": sum(s.set == "suspect" and not s.folder for s in result.skipped),
            "n_duplicates": result.n_duplicates,
            "n_distinct": n_tested,
            "n_flagged": st.n_flagged, "fraction_flagged": st.n_flagged / n_tested, "mean_score": result.mean_score,
            "decision_threshold": float(thr.value) if np.isfinite(thr.value) else float(np.finfo(np.float64).max),
            "threshold_kind": thr.kind,
            "expected_fpr": thr.expected_fpr, "calibrated_tpr": thr.calibrated_tpr,
            "used_fraction": st.used_fraction.to_dict(),
            "rank_test": st.rank_test.to_dict() if st.rank_test else None,
            "binomial_test": st.binomial_test.to_dict() if st.binomial_test else None,
            "power": st.power.to_dict() if st.power else None,
            "shift_check": st.shift_check.to_dict() if st.shift_check else None,
            "n_bh_flagged": st.n_bh_flagged,
            "fdr": st.fdr,
        },
        "images": [{"path": str(r.path), "sha256": r.sha256, "score": r.score, "member_probability": r.member_probability,
                    "decision": "member" if r.member else "non-member", "p_value": r.p_value, "bh_flag": r.bh_flag}
                   for r in result.images],
        "reference": None if result.reference is None else {
            "paths_root": list(result.reference.roots), "n_images": result.reference.n_images,
            "n_skipped": result.reference.n_skipped, "n_distinct": result.reference.n_distinct,
            "scores": list(result.reference.scores)},
        "skipped": [{"path": str(s.path), "reason": s.reason, "set": s.set} for s in result.skipped],
        "ignored": [{"set": i.set, "reason": i.reason, "count": i.count} for i in result.ignored],
        "duplicates": [[str(p) for p in g] for g in result.duplicates],
        "overlap": None if result.overlap is None else {
            "n_excluded": len(result.overlap.paths), "n_same_file": result.overlap.n_same_file,
            "n_same_content": result.overlap.n_same_content, "paths": [str(p) for p in result.overlap.paths],
            "reason": result.overlap.reason},
        "encoder": result.encoder,
        "calibration": {"path": str(cal.path), "bundle_sha256": cal.bundle_sha256, "attack": cal.attack, "attack_name": cal.attack_name,
                        "default_attack": cal.default_attack, "held_out_metrics": cal.held_out_metrics, "roc": cal.roc,
                        "thresholds": {k: (t if np.isfinite(t) else None) for k, t in cal.thresholds.items()},
                        "finest_fpr": cal.finest_fpr,
                        "shadow": cal.shadow},
        "config": {"views": cfg.views.to_dict(), "features": cfg.features, "seed": cfg.seed, "batch_size": cfg.batch_size,
                   "device": cfg.device, "fpr": cfg.fpr, "fdr": cfg.fdr, "alpha": cfg.alpha,
                   "cache": str(cfg.cache) if cfg.cache else None, "engine": cfg.engine},
        "environment": result.environment,
        "timing": {"started": _iso(result.timing.started), "seconds": (result.timing.finished - result.timing.started).total_seconds(),
                   "suspect": result.timing.suspect, "reference": result.timing.reference, "from_cache": result.timing.from_cache},
    }
    if result.score is not None:
        report["score"] = S.jsonable(asdict(result.score))
    if result.truth is not None:
        report["truth"] = result.truth
    return cap_image_list(report, len(result.images) if max_images is None else max_images, parquet)


def cap_image_list(report: dict[str, Any], cap: int, parquet: str | Path | None = None) -> dict[str, Any]:
    """Keep at most ``cap`` images in ``report["images"]`` (the highest scores; ties by path) and
    record what is listed in ``report["images_listed"]``. The aggregate (every image) is untouched."""
    from auditmi.validate import int_in

    cap = int_in("--max-report-images", cap, 0, 10**9)
    rows = report["images"]
    n_rows = len(rows)
    complete = n_rows <= cap
    if not complete:
        rows = sorted(rows, key=lambda r: (-r["score"], r["path"]))[:cap]
    report["images"] = rows
    report["images_listed"] = {"n_scored": n_rows, "n_listed": len(rows), "complete": complete,
                               "cap": cap, "order": "input" if complete else "score-descending",
                               "parquet": None if parquet is None else str(parquet)}
    return report


def evaluate_report(result: EvaluateResult, command: str = "") -> dict[str, Any]:
    """The ``auditmi evaluate`` report document of ``result``."""
    metrics: dict[str, Any] = {}
    for c in result.classifiers:
        m = c.metrics.to_dict()
        m["threshold_kind"] = "accuracy (from shadow calibration)"
        m["at_calibrated_fpr"] = {
            f"{a.target_fpr:g}": {"threshold": a.threshold if np.isfinite(a.threshold) else None, "tpr": a.tpr, "achieved_fpr": a.achieved_fpr}
            for a in c.at_calibrated_fpr}
        m["roc"] = c.roc
        metrics[c.kind] = m
    return {
        "kind": EVALUATE_KIND, "schema_version": SCHEMA_VERSION, "auditmi_version": __version__,
        "created": _iso(result.created), "command": command,
        "encoder": result.encoder,
        "calibration": {"path": str(result.calibration_path), "bundle_sha256": result.calibration_sha256,
                        "default_attack": result.default_attack, "finest_fpr": result.finest_fpr},
        "counts": {"members": result.n_members, "non_members": result.n_non_members, "skipped": len(result.skipped),
                   "duplicates": result.n_duplicates},
        "skipped": [{"path": str(s.path), "reason": s.reason} for s in result.skipped],
        "metrics": metrics, "config": {"views": result.views.to_dict(), "seed": result.seed}, "environment": result.environment,
    }


def calibrate_summary(result: CalibrateResult) -> dict[str, Any]:
    """The summary ``auditmi calibrate --json`` writes: bundle, default classifier, held-out metrics, thresholds."""
    cal = result.calibration
    return {"bundle": str(result.bundle), "default_attack": cal.default_attack,
            "heldout_metrics": {k: a.metrics for k, a in cal.attacks.items()},
            "thresholds": {k: a.thresholds for k, a in cal.attacks.items()},
            "fpr_thresholds": cal.meta.get("fpr_thresholds"),
            "duplicates_dropped": cal.meta.get("duplicates_dropped") or {}}
