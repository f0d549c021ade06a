"""The one file writer (auditmi._io): atomic for regular/new files, streams for special files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from auditmi._io import atomic_write, check_destination, write_bytes, write_text
from auditmi.errors import InputError


def test_new_and_regular_files_are_replaced_atomically(tmp_path: Path) -> None:
    p = tmp_path / "out.json"
    write_text(p, "one")
    assert p.read_text() == "one"
    os.chmod(p, 0o640)
    ino = p.stat().st_ino
    write_text(p, "two")
    assert p.read_text() == "two"
    assert p.stat().st_ino != ino  # a new file renamed over the old one
    assert stat.S_IMODE(p.stat().st_mode) == 0o640  # the file's mode is kept
    assert [q.name for q in tmp_path.iterdir()] == ["out.json"]  # no temporary left


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    p = tmp_path / "out.json"
    p.write_text("old")

    def boom(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["out.json"]


def test_symlink_is_followed_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    write_text(link, "new")
    assert link.is_symlink()
    assert target.read_text() == "new"
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "created.json")
    write_text(dangling, "made")
    assert dangling.is_symlink() and (tmp_path / "created.json").read_text() == "made"


def test_character_device_is_written_as_a_stream() -> None:
    before = os.stat("/dev/null")
    write_text("/dev/null", "x" * 100)
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino and after.st_mode == before.st_mode
    check_destination("/dev/null")


def test_fifo_is_written_as_a_stream(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write_bytes(fifo, b"through the pipe")
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert got == [b"through the pipe"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_process_substitution_path_is_written_as_a_stream(tmp_path: Path) -> None:
    """``--json >(cat)``: the shell passes /dev/fd/N, which must be written, not renamed over."""
    code = (
        "import sys; from auditmi._io import write_text, check_destination; "
        "check_destination(sys.argv[1]); write_text(sys.argv[1], 'via-fd')"
    )
    out = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -c "{code}" >(cat > "{tmp_path}/got") ; wait; sleep 0.2'],
        capture_output=True, text=True, timeout=60, env={**os.environ},
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "got").read_text() == "via-fd"


def test_dash_is_standard_output(capsys: pytest.CaptureFixture[str]) -> None:
    write_text("-", "to stdout")
    assert capsys.readouterr().out == "to stdout"


@pytest.mark.parametrize("case", ["dir", "empty", "missing-folder", "file-as-folder"])
def test_bad_destinations_are_input_errors(tmp_path: Path, case: str) -> None:
    (tmp_path / "afile").write_text("")
    dest = {
        "dir": str(tmp_path),
        "empty": "",
        "missing-folder": str(tmp_path / "nope" / "out.json"),
        "file-as-folder": str(tmp_path / "afile" / "out.json"),
    }[case]
    with pytest.raises(InputError):
        check_destination(dest)
    with pytest.raises(InputError):
        write_text(dest, "x")
    assert sorted(q.name for q in tmp_path.iterdir()) == ["afile"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_folder_is_refused_before_work(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputError, match="not writable"):
            check_destination(ro / "report.html")
    finally:
        ro.chmod(0o700)


def test_check_destination_creates_nothing(tmp_path: Path) -> None:
    check_destination(tmp_path / "new.json")
    assert list(tmp_path.iterdir()) == []
