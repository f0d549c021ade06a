"""How the command line reads awkward input: shell-expanded image lists, early option checks,
hostile file names, signals (issue 14). Cheap tests: the heavy jobs are replaced by recorders
where only the parsing is under test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from e2e_support import (  # noqa: F401  (``calibrated`` is a fixture)
    Calibrated,
    calibrated,
    invoke_in_process,
    make_noise_images,
)

# ------------------------------------------------------------------ options that take many paths


def _pngs(folder: Path, n: int, prefix: str = "img") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(prefix) + n)
    out = []
    for i in range(n):
        p = folder / f"{prefix}{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


@pytest.fixture()
def fake_bundle(tmp_path: Path) -> Path:
    """Enough of a bundle for the CLI's pre-checks (the jobs themselves are replaced)."""
    b = tmp_path / "bundle"
    b.mkdir()
    (b / "calibration.json").write_text("{}")
    return b


class _Recorded(Exception):
    pass


@pytest.fixture()
def recorder(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace the three jobs by functions that record their inputs and stop the command."""
    import typer

    import auditmi.jobs.calibrate
    import auditmi.jobs.evaluate
    import auditmi.jobs.scan

    seen: dict[str, Any] = {}

    def scan(images: Any, opts: Any, **_: Any) -> None:
        seen.update(images=[Path(p) for p in images], reference=[Path(p) for p in opts.reference])
        raise typer.Exit(0)

    def calibrate(opts: Any, **_: Any) -> None:
        seen.update(shadow_data=list(opts.shadow_data), members=list(opts.members), non_members=list(opts.non_members))
        raise typer.Exit(0)

    def evaluate(encoder: str, calibration: Any, members: Any, non_members: Any, **_: Any) -> None:
        seen.update(members=list(members), non_members=list(non_members))
        raise typer.Exit(0)

    monkeypatch.setattr(auditmi.jobs.scan, "run_scan", scan)
    monkeypatch.setattr(auditmi.jobs.calibrate, "run_calibrate", calibrate)
    monkeypatch.setattr(auditmi.jobs.evaluate, "run_evaluate", evaluate)
    return seen


def test_shell_expanded_reference_glob_puts_every_file_in_the_reference(tmp_path: Path, fake_bundle: Path, recorder: dict) -> None:
    """`auditmi scan suspect/ --reference reference/*.png`: all 6 files are reference, none a suspect."""
    sus = tmp_path / "suspect"
    _pngs(sus, 3)
    refs = _pngs(tmp_path / "reference", 6, "ref")
    p = invoke_in_process("scan", sus, "--reference", *refs, "-e", "x", "-c", fake_bundle, "--quiet")
    assert p.returncode == 0, p.stderr
    assert recorder["images"] == [sus]
    assert recorder["reference"] == refs


def test_reference_values_stop_at_the_next_option_and_mix_files_and_folders(tmp_path: Path, fake_bundle: Path, recorder: dict) -> None:
    sus = _pngs(tmp_path / "suspect", 2)
    refs = _pngs(tmp_path / "r1", 2, "a")
    p = invoke_in_process("scan", *sus, "-r", tmp_path / "r1", refs[0], "--reference=" + str(refs[1]), tmp_path / "r1",
                          "-e", "x", "-c", fake_bundle, "-q")
    assert p.returncode == 0, p.stderr
    assert recorder["images"] == sus
    assert recorder["reference"] == [tmp_path / "r1", refs[0], refs[1], tmp_path / "r1"]


def test_paths_after_reference_never_become_suspects(tmp_path: Path, fake_bundle: Path, recorder: dict) -> None:
    """With the reference first, nothing is left for the suspects: a clear refusal, not a silent swap."""
    sus = tmp_path / "suspect"
    _pngs(sus, 2)
    refs = _pngs(tmp_path / "reference", 3, "ref")
    p = invoke_in_process("scan", "--reference", *refs, sus, "-e", "x", "-c", fake_bundle)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "no suspect images given" in p.stderr and "--reference" in p.stderr
    assert "Traceback" not in p.stderr and recorder == {}
    # `--` ends the list: what follows is a suspect again.
    p = invoke_in_process("scan", "--reference", *refs, "-e", "x", "-c", fake_bundle, "-q", "--", sus)
    assert p.returncode == 0, p.stderr
    assert recorder["images"] == [sus] and recorder["reference"] == refs


def test_calibrate_and_evaluate_take_many_paths_per_option(tmp_path: Path, fake_bundle: Path, recorder: dict) -> None:
    mem = _pngs(tmp_path / "m", 3, "m")
    non = _pngs(tmp_path / "n", 4, "n")
    p = invoke_in_process("calibrate", "--shadow-encoder", "x", "--members", *mem, "--non-members", *non, "--out", tmp_path / "o", "-q")
    assert p.returncode == 0, p.stderr
    assert recorder["members"] == mem and recorder["non_members"] == non
    p = invoke_in_process("calibrate", "--shadow-data", *mem, *non, "--out", tmp_path / "o", "-q")
    assert p.returncode == 0, p.stderr
    assert recorder["shadow_data"] == [*mem, *non]
    p = invoke_in_process("evaluate", "-e", "x", "-c", fake_bundle, "--members", *mem, "--non-members", *non, "-q")
    assert p.returncode == 0, p.stderr
    assert recorder["members"] == mem and recorder["non_members"] == non


def test_expand_multi_value_options_unit() -> None:
    from auditmi.cli.options import expand_multi_value_options as ex

    r = {"--reference", "-r"}
    assert ex(["s", "--reference", "a", "b", "--json", "-", "c"], r) == ["s", "--reference", "a", "--reference", "b", "--json", "-", "c"]
    assert ex(["--reference=a", "b", "-q"], r) == ["--reference=a", "--reference", "b", "-q"]
    assert ex(["-r", "a", "--", "b"], r) == ["-r", "a", "--", "b"]
    assert ex(["--reference"], r) == ["--reference"]  # Click reports the missing value
    assert ex(["-qr", "a", "b", "-e", "x"], r) == ["-qr", "a", "-r", "b", "-e", "x"]  # bundled short flags
    assert ex(["-rq", "a"], r) == ["-rq", "a"]  # -r takes "q" as its value there (Click's rule); nothing to expand


# ------------------------------------------------------------------ what a scan leaves out, end to end


def test_scan_reports_ignored_files_and_skips_an_unreadable_subfolder(calibrated: Calibrated, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    sus = tmp_path / "suspect"
    make_noise_images(sus, 6, seed=5)
    for name in ("x.heic", "y.avif", "README"):
        (sus / name).write_bytes(b"data")
    make_noise_images(sus / ".thumbnails", 2, seed=6)
    locked = sus / "locked"
    make_noise_images(locked, 2, seed=7)
    real = os.scandir

    def scandir(path: Any = ".") -> Any:  # what chmod 000 does (the tests may run as root)
        if Path(str(path)) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "r.json"
    p = invoke_in_process("scan", sus, "-e", calibrated.encoder, "-c", calibrated.bundle, "--device", "cpu", "--workers", "0",
                          "--json", out, "--html", tmp_path / "r.html", "--quiet", cache_dir=tmp_path / "cache")
    assert p.returncode == 0, p.stderr
    assert "Left out while searching folders (never opened): suspect: 1 extension .avif" in (tmp_path / "r.html").read_text()
    rep = json.loads(out.read_text())
    assert rep["aggregate"]["n_scored"] == 6
    assert {(r["reason"], r["count"]) for r in rep["ignored"]} == {("extension .heic", 1), ("extension .avif", 1), ("no extension", 1), ("hidden", 1)}
    assert {"path": str(locked), "reason": "folder not searched: permission denied", "set": "suspect"} in rep["skipped"]
    text = " ".join(p.stdout.split())
    assert "files left out" in text and "1 extension .heic" in text and "folder not searched" in text
    from auditmi.report import validate_report

    validate_report(rep)


def test_too_many_workers_are_lowered_and_the_user_is_told(tmp_path: Path, fake_bundle: Path, recorder: dict,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import auditmi.jobs.scan
    from auditmi._paths import usable_cores

    seen: dict[str, Any] = {}

    def scan(images: Any, opts: Any, **_: Any) -> None:
        import typer

        seen["workers"] = opts.workers
        raise typer.Exit(0)

    monkeypatch.setattr(auditmi.jobs.scan, "run_scan", scan)
    sus = tmp_path / "s"
    _pngs(sus, 1)
    p = invoke_in_process("scan", sus, "-e", "x", "-c", fake_bundle, "--workers", "999", "-q")
    assert p.returncode == 0, p.stderr
    assert seen["workers"] <= usable_cores()
    assert "--workers 999 lowered to" in " ".join(p.stderr.split())


# ------------------------------------------------------------------ hostile and undecodable file names


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images whose names hold an escape sequence, undecodable bytes and non-ASCII letters."""
    import os
    import shutil

    root = tmp_path_factory.mktemp("hostile")
    src = make_noise_images(root / "src", 4, seed=11)
    folder = root / "suspect"
    folder.mkdir()
    names = [b"clear\x1b[2J\x1b[Hscreen.png", b"bad\xff\xfe.png", "caf\u00e9.png".encode(), b"plain.png"]
    for s, n in zip(src, names, strict=True):
        shutil.copy(s, os.fsdecode(os.fsencode(folder) + b"/" + n))
    return folder


def test_hostile_names_with_html_json_and_terminal(calibrated: Calibrated, hostile_folder: Path, tmp_path: Path) -> None:
    """A non-UTF-8 name with --html, escape codes in a name, non-ASCII names: reports written,
    terminal output escaped, exit 0 (this used to be a traceback)."""
    from e2e_support import run_cli

    p = run_cli("scan", hostile_folder, "-e", calibrated.encoder, "-c", calibrated.bundle, "--device", "cpu", "--views", "4",
                "--html", tmp_path / "r.html", "--json", tmp_path / "r.json", "--quiet", cache_dir=tmp_path / "cache")
    assert p.returncode == 0, p.stderr
    assert "\x1b" not in p.stdout + p.stderr  # NO_COLOR: the only escape codes would be the file name's
    assert "clear\\x1b[2J\\x1b[Hscreen.png" in p.stdout and "bad\\xff\\xfe.png" in p.stdout and "caf\u00e9.png" in p.stdout
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "bad\\xff\\xfe.png" in html and "\x1b" not in html
    rep = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert len(rep["images"]) == 4


def test_ascii_terminal_with_non_ascii_names(calibrated: Calibrated, hostile_folder: Path, tmp_path: Path) -> None:
    """PYTHONIOENCODING=ascii: the table shows escapes, --json - stays valid (\\u-escaped) JSON."""
    from e2e_support import cli_env

    env = {**cli_env(tmp_path / "cache"), "PYTHONIOENCODING": "ascii"}
    base = [sys.executable, "-m", "auditmi", "scan", str(hostile_folder), "-e", str(calibrated.encoder), "-c", str(calibrated.bundle),
            "--device", "cpu", "--quiet"]
    p = subprocess.run(base, capture_output=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    out = p.stdout.decode("ascii")  # nothing but ASCII reached the terminal
    assert "caf\\xe9.png" in out and "bad\\xff\\xfe.png" in out
    p = subprocess.run([*base, "--json", "-"], capture_output=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    rep = json.loads(p.stdout.decode("ascii"))
    assert any(r["path"].endswith("caf\u00e9.png") for r in rep["images"])


def test_error_messages_escape_hostile_paths(fake_bundle: Path, tmp_path: Path) -> None:
    for name in ("gone\x1b[2J\x1b[31m", "x[/]y[bold]"):
        p = invoke_in_process("scan", tmp_path / name, "-e", "x", "-c", fake_bundle)
        assert p.returncode == 2, p.stderr
        assert "\x1b" not in p.stderr and "does not exist" in p.stderr and "Traceback" not in p.stderr
    assert "x[/]y[bold]" in p.stderr  # shown as is, not read as markup


# ------------------------------------------------------------------ interruptions and the cache


@pytest.mark.parametrize("command", ["scan", "evaluate"])
@pytest.mark.parametrize("mode", ["read-write", "read-only", "no-cache"])
@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_stop_messages_tell_the_truth_about_the_cache(how: str, mode: str, command: str, tmp_path: Path, fake_bundle: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os
    import signal
    import tempfile

    import auditmi.jobs.evaluate
    import auditmi.jobs.scan

    def stop(*a: Any, **k: Any) -> None:
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises in this (main) thread
        raise KeyboardInterrupt

    monkeypatch.setattr(auditmi.jobs.scan, "run_scan", stop)
    monkeypatch.setattr(auditmi.jobs.evaluate, "run_evaluate", stop)
    cache = tmp_path / "cache"
    if mode == "read-only":  # every write in the cache fails with EROFS (the tests may run as root)
        real = tempfile.mkstemp

        def read_only(*a: Any, **k: Any) -> Any:
            if str(k.get("dir", a[2] if len(a) > 2 else "")).startswith(str(cache)):
                raise OSError(errno.EROFS, "Read-only file system")
            return real(*a, **k)

        monkeypatch.setattr(tempfile, "mkstemp", read_only)
    sus = tmp_path / "s"
    _pngs(sus, 1)
    images = [sus] if command == "scan" else ["--members", sus, "--non-members", sus]
    before = signal.getsignal(signal.SIGTERM)
    p = invoke_in_process(command, *images, "-e", "x", "-c", fake_bundle, "-q", *(["--no-cache"] if mode == "no-cache" else ["--cache", cache]))
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is restored
    assert p.returncode == (143 if how == "sigterm" else 130), p.stderr
    text = " ".join(p.stderr.split())
    last = " ".join(p.stderr.strip().splitlines()[-1].split())
    assert "Traceback" not in p.stderr, p.stderr
    # One line (soft-wrapped), after the read-only note in that mode.
    assert p.stderr.count("\n") == 1 or (mode == "read-only" and p.stderr.startswith("note: the feature cache")), p.stderr
    assert ("terminated (SIGTERM)" in last) == (how == "sigterm")
    if mode == "no-cache":
        assert "completed work is cached" not in text and "nothing was cached (--no-cache)" in last
    elif mode == "read-only":
        assert "completed work is cached" not in text and "the feature cache is read-only, so nothing new was cached" in last
    else:
        assert "completed work is cached" in last


def test_calibrate_stop_message_says_what_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """calibrate has no feature cache: only the shadow pre-training (checkpoints in --out) resumes."""
    import auditmi.jobs.calibrate

    def stop(*a: Any, **k: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(auditmi.jobs.calibrate, "run_calibrate", stop)
    data = tmp_path / "d"
    _pngs(data, 2)
    p = invoke_in_process("calibrate", "--shadow-data", data, "--out", tmp_path / "o", "-q")
    text = " ".join(p.stderr.split())
    assert p.returncode == 130 and "completed work is cached" not in text
    assert f"shadow pre-training resumes from its last checkpoint in {tmp_path / 'o'}" in text and "the rest starts over" in text
    p = invoke_in_process("calibrate", "--shadow-encoder", "x", "--members", data, "--non-members", data, "--out", tmp_path / "o", "-q")
    assert p.returncode == 130 and "nothing was saved, so re-running starts over" in " ".join(p.stderr.split()), p.stderr


def test_sigterm_mid_scan_exits_143_and_keeps_completed_work(calibrated: Calibrated, tmp_path: Path) -> None:
    import signal
    import time

    from e2e_support import popen_cli, run_cli

    images = tmp_path / "many"
    make_noise_images(images, 80, seed=12, prefix="t")
    cache = tmp_path / "cache"
    base = ["scan", images, "-e", calibrated.encoder, "-c", calibrated.bundle, "--quiet", "--device", "cpu", "--batch-size", "4",
            "--cache", cache]
    log = tmp_path / "log"
    with open(log, "w") as fh:
        proc = popen_cli(*base, stdout=fh, stderr=fh)
        deadline = time.monotonic() + 240
        n = 0
        while time.monotonic() < deadline and proc.poll() is None:
            n = len(list(cache.glob("features/*/shard-*.npz")))
            if n >= 3:
                proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.01)
        proc.wait(timeout=120)
    text = log.read_text()
    assert proc.returncode == 143, f"rc={proc.returncode} after {n} shards\n{text}"
    assert "terminated (SIGTERM); completed work is cached" in text and "Traceback" not in text
    kept = len(list(cache.glob("features/*/shard-*.npz")))
    assert kept >= 3
    again = run_cli(*base, "--json", tmp_path / "r.json")
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "r.json").read_text())["timing"]["from_cache"] >= 3


def test_read_only_cache_is_used_read_only_and_the_user_is_told(calibrated: Calibrated, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache folder that cannot be written (a read-only mount, another user's cache): cached
    features are used, nothing is written, the scan succeeds and says so. Simulated by making every
    write in it fail with EROFS, since the tests may run as root."""
    import errno
    import tempfile

    images = tmp_path / "imgs"
    make_noise_images(images, 5, seed=13)
    cache = tmp_path / "cache"
    base = ["scan", images, "-e", calibrated.encoder, "-c", calibrated.bundle, "--device", "cpu", "--workers", "0", "--cache", cache]
    first = invoke_in_process(*base, "--json", tmp_path / "first.json", "-q")
    assert first.returncode == 0, first.stderr
    shards = sorted(cache.glob("features/*/shard-*.npz"))
    assert shards
    make_noise_images(images, 7, seed=14, prefix="new")  # new images: their features cannot be saved
    real = tempfile.mkstemp

    def read_only(*a: Any, **k: Any) -> Any:
        d = str(k.get("dir", a[2] if len(a) > 2 else ""))
        if d.startswith(str(cache)):
            raise OSError(errno.EROFS, "Read-only file system", d)
        return real(*a, **k)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    p = invoke_in_process(*base, "--json", tmp_path / "second.json", "-q")
    assert p.returncode == 0, p.stderr
    text = " ".join(p.stderr.split())
    assert "is read-only" in text and "features already cached there are used" in text
    assert "free some space" not in text
    rep = json.loads((tmp_path / "second.json").read_text())
    assert rep["timing"]["from_cache"] == 5 and rep["aggregate"]["n_scored"] == 12
    assert sorted(cache.glob("features/*/shard-*.npz")) == shards  # nothing written


def test_evaluate_lists_an_unreadable_subfolder_as_skipped(calibrated: Calibrated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    mem, non = tmp_path / "mem", tmp_path / "non"
    make_noise_images(mem, 3, seed=21)
    make_noise_images(non, 3, seed=22)
    locked = non / "locked"
    make_noise_images(locked, 1, seed=23)
    real = os.scandir

    def scandir(path: Any = ".") -> Any:
        if Path(str(path)) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    p = invoke_in_process("evaluate", "-e", calibrated.encoder, "-c", calibrated.bundle, "--members", mem, "--non-members", non,
                          "--device", "cpu", "--no-cache", "--json", tmp_path / "e.json", "-q")
    assert p.returncode == 0, p.stderr
    rep = json.loads((tmp_path / "e.json").read_text())
    assert {"path": str(locked), "reason": "folder not searched: permission denied"} in rep["skipped"]
    assert rep["counts"]["non_members"] == 3


@pytest.mark.parametrize("command", ["pretrain", "calibrate"])
@pytest.mark.parametrize("option", ["--arch", "--optimizer"])
def test_an_unknown_arch_or_optimizer_is_a_usage_error_before_any_image_is_read(command: str, option: str, tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import auditmi.shadow

    def never(*a: Any, **k: Any) -> None:
        raise AssertionError("images were read before the options were checked")

    monkeypatch.setattr(auditmi.shadow, "load_training_images", never)
    data = tmp_path / "d"
    _pngs(data, 2)
    args = [data, "--out", tmp_path / "o"] if command == "pretrain" else ["--shadow-data", data, "--out", tmp_path / "o"]
    p = invoke_in_process(command, *args, option, "nope", "-q")
    msg = " ".join(p.stderr.split())
    assert p.returncode == 2 and f"{option} 'nope' is not" in msg and "Traceback" not in p.stderr, p.stderr
    assert ("resnet18-w16" in msg) if option == "--arch" else ("sgd or adam" in msg)
