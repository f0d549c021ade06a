"""The one file writer: atomic where that is safe, a plain stream where it is not.

Rules (issue 14, "output paths are replaced blindly"):

* a regular file, or a path that does not exist yet, is written atomically: the content goes to a
  temporary file beside the target, is flushed to disk, and is renamed over the target, so a reader
  (or a resumed run) never sees half a file and a failed write leaves the old file untouched;
* a symbolic link is followed: the file it points to is written, the link itself stays;
* a special file (a character device such as ``/dev/null``, a FIFO, ``/dev/fd/N`` from a shell's
  ``>(...)``, a socket) is opened and written as a stream, never replaced;
* ``-`` means standard output;
* a folder, an empty path, a missing or unwritable parent folder is an :class:`InputError` whose
  message says what to do. :func:`check_destination` raises the same errors without writing, so a
  command can check every output destination before it starts any work.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from auditmi.errors import InputError

#: The destination that means "standard output".
STDOUT = "-"

Dest = str | os.PathLike[str]


def _kind(path: str) -> tuple[str, str]:
    """(kind, real path) of ``path``: kind is "stdout", "new", "file" or "special"; raises InputError."""
    if path == STDOUT:
        return "stdout", path
    if path == "":
        raise InputError("an output path is empty; give a file name (or '-' for standard output).")
    try:
        st = os.stat(path)  # follows symlinks; /dev/fd/N of a pipe stats as a FIFO
    except FileNotFoundError:
        st = None
    except NotADirectoryError as e:
        raise InputError(f"cannot write {path}: a part of its folder path is a file, not a folder.") from e
    except OSError as e:
        raise InputError(f"cannot write {path} ({e.strerror or e}); choose another path.") from e
    if st is None:
        real = os.path.realpath(path)  # a dangling symlink names the file to create
        return "new", real
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path} is a folder; give a file name inside it (e.g. {os.path.join(path, 'report.json')}).")
    if stat.S_ISREG(st.st_mode):
        return "file", os.path.realpath(path)
    return "special", path


def check_destination(path: Dest) -> None:
    """Raise :class:`InputError` now if ``path`` cannot be written later (see the module rules).

    Nothing is created or modified.
    """
    p = os.fspath(path)
    kind, real = _kind(p)
    if kind == "stdout":
        return
    if kind == "special":
        if not os.access(p, os.W_OK):
            raise InputError(f"cannot write {p}: permission denied; choose another path.")
        return
    parent = os.path.dirname(real) or "."
    if not os.path.isdir(parent):
        raise InputError(f"cannot write {p}: the folder {parent} does not exist; create it first or choose another path.")
    if not os.access(parent, os.W_OK | os.X_OK):
        if kind == "file" and os.access(real, os.W_OK):
            return  # written in place (not atomically): see _write_in_place
        raise InputError(f"cannot write {p}: the folder {parent} is not writable; choose another path.")
    if kind == "file" and not os.access(real, os.W_OK):
        raise InputError(f"cannot write {p}: the file is read-only; choose another path or make it writable.")


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_path(path: str | Path) -> None:
    """Best-effort fsync of a file or a folder (a folder: so that a rename in it is durable)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Dest, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file, then commit it to ``path`` (module rules).

    For a regular or new file the temporary file is renamed over the (symlink-resolved) target; for
    a special file its bytes are streamed into it. Returns the path written.
    """
    p = os.fspath(path)
    kind, real = _kind(p)
    if kind in ("stdout", "special"):
        with tempfile.TemporaryDirectory(prefix="auditmi-") as d:
            tmp = os.path.join(d, "out")
            write(tmp)
            with open(tmp, "rb") as f:
                data = f.read()
        _stream(p, data)
        return Path(p)
    parent = os.path.dirname(real) or "."
    check_destination(p)
    if not os.access(parent, os.W_OK | os.X_OK):  # writable file in a read-only folder
        with tempfile.TemporaryDirectory(prefix="auditmi-") as d:
            tmp = os.path.join(d, "out")
            write(tmp)
            with open(tmp, "rb") as f:
                data = f.read()
        _write_in_place(real, data)
        return Path(p)
    mode = stat.S_IMODE(os.stat(real).st_mode) if kind == "file" else _new_file_mode()
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(real)}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, real)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write {p} ({e.strerror or e}); free some space or choose another path.") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(parent)
    return Path(p)


def _stream(path: str, data: bytes) -> None:
    if path == STDOUT:
        out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
        if out is None:  # a replaced text stream (tests, notebooks)
            sys.stdout.write(data.decode("utf-8"))
            sys.stdout.flush()
            return
        sys.stdout.flush()
        out.write(data)
        out.flush()
        return
    try:
        with open(path, "wb") as f:  # O_TRUNC is a no-op on devices and pipes
            f.write(data)
    except OSError as e:
        raise InputError(f"cannot write {path} ({e.strerror or e}); choose another path.") from e


def _write_in_place(real: str, data: bytes) -> None:
    try:
        with open(real, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise InputError(f"cannot write {real} ({e.strerror or e}); choose another path.") from e


def write_bytes(path: Dest, data: bytes) -> Path:
    """Write ``data`` to ``path`` following the module rules."""

    def fill(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, fill)


def write_text(path: Dest, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` (encoded as ``encoding``, UTF-8 by default) to ``path`` following the module rules."""
    return write_bytes(path, text.encode(encoding))

