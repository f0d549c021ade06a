"""Cheap checks of user input (paths, bundles, rates), importable without torch: the CLI runs them
first so that a typo fails in a fraction of a second instead of after the heavy imports, and the
library runs the same functions, so the messages cannot drift apart."""

from __future__ import annotations

import os
import re
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
    from auditmi.discovery import check_exists
    from auditmi.images import max_file_bytes

    max_file_bytes()  # a bad $AUDITMI_MAX_FILE_MB fails here, not once per image
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


#: Classifier kinds a calibration can hold (EncoderMI-T, -V, -S).
ATTACK_KINDS = ("T", "V", "S")
_DEVICE = re.compile(r"(auto|cpu|mps|xpu|cuda(:\d+)?)")


def check_views(n_views: int | None) -> None:
    """``--views``: at least 2 (features compare pairs of views of an image)."""
    if n_views is None:
        return
    from auditmi.validate import is_int

    if not is_int(n_views):
        raise InputError(f"the number of views must be an integer (got {n_views!r}).")
    if n_views < 2:
        raise InputError(f"--views must be at least 2 (got {n_views}): membership features compare pairs of views of the same image.")


def check_batch_size(batch_size: int | None) -> None:
    """``--batch-size``: positive when given."""
    if batch_size is not None and batch_size < 1:
        raise InputError(f"--batch-size must be positive (got {batch_size}).")


def check_workers(workers: int | None) -> None:
    """``--workers``: 0 or more when given (the upper cap is applied, and reported, later)."""
    if workers is not None and workers < 0:
        raise InputError(f"--workers must be 0 or more (got {workers}).")


def check_device(device: str) -> None:
    """``--device``: auto, cpu, cuda or cuda:N (mps and xpu where torch supports them)."""
    if not _DEVICE.fullmatch(str(device).strip()):
        raise InputError(f"invalid --device {device!r}. Use auto, cpu or cuda (cuda:N for a given GPU).")


def check_attack(attack: str | None) -> None:
    """``--attack``: T, V or S (whether the bundle holds it is checked when it is loaded)."""
    if attack is not None and attack.strip().upper() not in ATTACK_KINDS:
        raise InputError(f"--attack must be one of {', '.join(ATTACK_KINDS)} (got {attack!r}).")


def parse_attacks(attacks: str) -> tuple[str, ...]:
    """``calibrate --attacks``: letters among T, V, S (``TVS``, ``T,V``), each once, in order."""
    kinds = tuple(dict.fromkeys(c for c in attacks.upper() if c not in ", "))
    bad = [k for k in kinds if k not in ATTACK_KINDS]
    if bad or not kinds:
        raise InputError(f"--attacks must be letters among {', '.join(ATTACK_KINDS)}, e.g. TVS or T (got {attacks!r}).")
    return kinds


def check_fraction(name: str, value: float) -> None:
    """A fraction strictly between 0 and 1 (e.g. ``--member-fraction``)."""
    if not 0 < value < 1:
        raise InputError(f"{name} must be between 0 and 1 (got {value}).")


def check_positive(name: str, value: int) -> None:
    """A count that must be 1 or more (e.g. ``--epochs``)."""
    if value < 1:
        raise InputError(f"{name} must be at least 1 (got {value}).")


#: Rough memory one worker process needs besides what it shares with its parent (decoded
#: images in flight, rendered views, activations of a small encoder); the pipeline raises it for
#: large inputs.
WORKER_MEMORY = 256 * 2**20


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's CPU set)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def available_memory() -> int | None:
    """Memory available to new processes, in bytes (``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def cap_workers(requested: int, per_worker_bytes: int = WORKER_MEMORY) -> tuple[int, str | None]:
    """At most one worker per usable core, and no more than half the available memory holds.

    Returns:
        ``(workers, note)``: the note says why ``requested`` was lowered (None if it was not).
    """
    cores = usable_cores()
    cap = cores
    mem = available_memory()
    if mem is not None:
        cap = min(cap, max(1, int(mem // 2 // max(1, per_worker_bytes))))
    if requested <= cap:
        return requested, None
    why = f"{cores} usable cores" + (f", {mem / 2**30:.1f} GiB memory available" if mem is not None else "")
    return cap, f"--workers {requested} lowered to {cap} ({why}; about {per_worker_bytes / 2**20:.0f} MiB per worker)."
