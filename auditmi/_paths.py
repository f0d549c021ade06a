"""Cheap checks on user-given artifact paths, importable without torch (the CLI runs them first
so that a typo fails in a fraction of a second instead of after the heavy imports)."""

from __future__ import annotations

from pathlib import Path

from auditmi.errors import CalibrationError

#: The JSON file of a calibration bundle.
META_NAME = "calibration.json"


def calibration_meta_path(path: str | Path) -> Path:
    """``calibration.json`` of a bundle given as its folder or as the file itself."""
    p = Path(path).expanduser()
    mp = p / META_NAME if p.is_dir() else p
    if not mp.is_file():
        raise CalibrationError(
            f"{p} is not a calibration bundle ({META_NAME} not found). Create one with `auditmi calibrate --shadow-data DIR --out {p}`."
        )
    return mp
