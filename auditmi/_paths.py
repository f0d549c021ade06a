"""Cheap checks of user input (paths, bundles, rates), importable without torch: the CLI runs them
first so that a typo fails in a fraction of a second instead of after the heavy imports, and the
library runs the same functions, so the messages cannot drift apart."""

from __future__ import annotations

from pathlib import Path

from auditmi.errors import CalibrationError, InputError

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


def precheck(paths: list[Path] | tuple[Path, ...] = (), calibration: str | Path | None = None) -> None:
    """Fail at once on a missing calibration bundle or image path (the same errors, with the same
    messages, as the full run would raise after importing torch)."""
    from auditmi.images import check_exists

    if calibration is not None:
        calibration_meta_path(calibration)
    for p in paths:
        check_exists(p)


def check_rates(fpr: float | None, fdr: float, alpha: float) -> None:
    """``--fpr``, ``--fdr`` and ``--alpha`` must lie strictly between 0 and 1."""
    for name, v in (("--fdr", fdr), ("--alpha", alpha)):
        if not 0 < v < 1:
            raise InputError(f"{name} must be between 0 and 1 (got {v}).")
    if fpr is not None and not 0 < fpr < 1:
        raise InputError(f"--fpr must be between 0 and 1 (got {fpr}).")
