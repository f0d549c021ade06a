"""Helpers shared by the end-to-end tests (test_cli.py, test_cache.py, test_calibration.py).

Not a conftest on purpose: other test files own tests/conftest.py. Fixtures defined here are
imported by name into the test modules that use them.

Everything runs through the real entry point (``python -m auditmi``) in a subprocess, with
``OMP_NUM_THREADS=1`` and a private feature cache, so no test touches the user's cache folder.
The calibration bundle is built once per test session (``auditmi calibrate`` on 48 tiny images
is the most expensive step) and shared read-only; tests that modify a bundle copy it first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

#: The exact calibrate command line used by the shared bundle (tiny, CPU, seconds).
CALIBRATE_ARGS = ["--arch", "resnet-tiny", "--epochs", "2", "--batch-size", "16", "--views", "4",
                  "--classifier-epochs", "5", "--seed", "0", "--device", "cpu", "--quiet"]
N_SHADOW = 48
VIEWS = 4


def cli_env(cache_dir: Path | None = None) -> dict[str, str]:
    """Environment of a CLI subprocess: one thread, a private cache, no colour codes."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"  # rich wraps long error messages at the terminal width otherwise
    env.pop("FORCE_COLOR", None)
    if cache_dir is not None:
        env["AUDITMI_CACHE_DIR"] = str(cache_dir)
    return env


def run_cli(*args: Any, cache_dir: Path | None = None, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m auditmi ARGS`` in a subprocess; stdout and stderr captured separately."""
    cmd = [sys.executable, "-m", "auditmi", *[str(a) for a in args]]
    return subprocess.run(cmd, capture_output=True, text=True, env=cli_env(cache_dir), cwd=cwd, timeout=timeout)


def popen_cli(*args: Any, cache_dir: Path | None = None, stdout: Any = subprocess.PIPE, stderr: Any = subprocess.PIPE) -> subprocess.Popen:
    """Start ``python -m auditmi ARGS`` without waiting (for concurrent runs and kill tests)."""
    cmd = [sys.executable, "-m", "auditmi", *[str(a) for a in args]]
    return subprocess.Popen(cmd, stdout=stdout, stderr=stderr, text=True, env=cli_env(cache_dir))


def assert_user_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    """A user error: the expected exit code, a message on stderr, no traceback, nothing on stdout."""
    detail = f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == code, detail
    assert "Traceback" not in proc.stderr, detail
    assert "internal error" not in proc.stderr, detail
    assert "error" in proc.stderr.lower(), detail
    low = " ".join(proc.stderr.lower().split())  # undo any line wrapping
    for n in needles:
        assert n.lower() in low, f"{n!r} not in the message\n{detail}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_noise_images(folder: Path, n: int, seed: int, prefix: str = "img", size: int = 32) -> list[Path]:
    """``n`` distinct random-noise PNGs (tiny, so encoding is instantaneous on a CPU)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"{prefix}{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def make_broken_files(folder: Path) -> dict[str, Path]:
    """The three kinds of broken file a real photo folder contains."""
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    good = folder / "_tmp_full.png"
    Image.fromarray(np.random.default_rng(99).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    good.unlink()
    truncated = folder / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    text = folder / "notes.jpg"
    text.write_text("this is not a JPEG, just a text file with the wrong extension\n")
    return {"empty": empty, "truncated": truncated, "text": text}


def scores_by_sha(report: dict[str, Any]) -> dict[str, float]:
    return {r["sha256"]: r["score"] for r in report["images"]}


@dataclass
class Calibrated:
    """The shared bundle built by ``auditmi calibrate`` and what it was built from."""

    root: Path
    shadow_dir: Path  # N_SHADOW good images and two unreadable files (names starting with "zz-")
    bundle: Path
    encoder: Path  # the shadow encoder's final/ checkpoint: a real, local encoder to scan with
    summary: dict[str, Any]
    proc: subprocess.CompletedProcess
    seconds: float


_BUILT: dict[str, Calibrated] = {}


def build_calibrated(tmp_path_factory: pytest.TempPathFactory) -> Calibrated:
    """Run ``auditmi calibrate`` once per session (memoised) and return the bundle."""
    key = str(tmp_path_factory.getbasetemp())
    if key in _BUILT:
        return _BUILT[key]
    root = tmp_path_factory.mktemp("calibrated")
    shadow = root / "shadow"
    make_noise_images(shadow, N_SHADOW, seed=0, prefix="shadow")
    # Real photo folders contain unreadable files: calibrate must skip them, not count them.
    (shadow / "zz-empty.png").write_bytes(b"")
    (shadow / "zz-truncated.png").write_bytes((shadow / "shadow0000.png").read_bytes()[:120])
    bundle = root / "bundle"
    t0 = time.perf_counter()
    proc = run_cli("calibrate", "--shadow-data", shadow, "--out", bundle, *CALIBRATE_ARGS, "--json", "-", cache_dir=root / "cache")
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, f"calibrate failed (rc={proc.returncode}):\n{proc.stderr}"
    summary = json.loads(proc.stdout)
    finals = sorted((bundle / "shadow-encoder").glob("*/final"))
    assert len(finals) == 1, finals
    built = Calibrated(root, shadow, bundle, finals[0], summary, proc, seconds)
    _BUILT[key] = built
    return built


def copy_bundle(cal: Calibrated, dest: Path) -> Path:
    """A private copy of the bundle's two files (without the shadow encoder), for tampering."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("calibration.json", "arrays.safetensors"):
        shutil.copy2(cal.bundle / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Calibrated:
    """The shared calibration bundle (built once per session, see :func:`build_calibrated`)."""
    return build_calibrated(tmp_path_factory)


def invoke_in_process(*args: Any, cache_dir: Path | None = None) -> subprocess.CompletedProcess:
    """Run the Typer app in this process (same error mapping, no interpreter start-up).

    Used for the many user-error cases, where a fresh interpreter per case would cost most of
    the suite's time; a representative case of each exit code also runs through
    :func:`run_cli` (a real process) in test_cli.py.
    """
    from typer.testing import CliRunner

    from auditmi.cli.main import _register, app

    _register()
    env = {"AUDITMI_CACHE_DIR": str(cache_dir)} if cache_dir is not None else None
    res = CliRunner().invoke(app, [str(a) for a in args], env=env)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return subprocess.CompletedProcess(["auditmi", *map(str, args)], res.exit_code, res.stdout, res.stderr)


def example_subset(tmp: Path, n_suspects: int, n_reference: int) -> tuple[Path, Path]:
    """``tmp/suspect`` and ``tmp/reference`` holding the first images of the bundled example's folders."""
    example = Path(__file__).resolve().parents[1] / "examples" / "fashion"
    out = []
    for name, n in (("suspect", n_suspects), ("reference", n_reference)):
        d = tmp / name
        d.mkdir()
        for p in sorted((example / name).glob("*.png"))[:n]:
            shutil.copy(p, d / p.name)
        out.append(d)
    return out[0], out[1]
