"""The jobs behind the CLI, under the name they had before :mod:`auditmi.jobs` split them up.

Kept so ``from auditmi.audit import run_scan, ScanOptions`` (benchmarks, examples, user scripts)
keeps working; new code imports from :mod:`auditmi.jobs.scan`, ``.calibrate`` or ``.evaluate``.
"""

from __future__ import annotations

from auditmi.jobs.calibrate import CalibrateOptions, CalibrateResult, run_calibrate
from auditmi.jobs.common import Progress, discover_images, environment
from auditmi.jobs.evaluate import EvaluateResult, run_evaluate
from auditmi.jobs.scan import ScanOptions, ScanResult, run_scan
from auditmi.verdict import Label

__all__ = ["CalibrateOptions", "CalibrateResult", "EvaluateResult", "Label", "Progress", "ScanOptions", "ScanResult",
           "discover_images", "environment", "run_calibrate", "run_evaluate", "run_scan"]
