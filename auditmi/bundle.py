"""The one versioned-bundle format: a folder of JSON metadata + data files, pinned and committed whole.

Calibration bundles (``calibration.json`` + ``arrays.safetensors``), encoder checkpoints
(``encoder.json`` + ``model.safetensors``) and pre-training checkpoints (the encoder plus its
``train_state.*`` files) are all written and read here:

* **Pinned as a whole.** The metadata records ``format``, ``schema_version``, the
  ``auditmi_version`` that wrote it, the sha256 of every data file (``files``), and
  ``bundle_sha256``: the sha256 of the metadata itself (canonical JSON, every field but this one).
  Editing any field, or any file, without re-pinning is refused with the reason. This detects
  corruption and edits; it does not authenticate the publisher (anyone can re-pin): compare the
  bundle's sha256 shown in reports with the one its publisher gives (docs/threat-model.md).
* **Committed as a whole.** A bundle is written into a new hidden folder beside its destination
  and swapped in with one atomic rename (``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere two
  renames, with recovery of an interrupted swap on the next write or read), so a kill at any moment
  leaves either the complete old bundle or the complete new one.
* **Never executes code.** JSON and safetensors only.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from auditmi import __version__
from auditmi._io import fsync_path, write_text
from auditmi.errors import AuditmiError, InputError

#: The metadata field holding the pin of the metadata (and, through ``files``, of every file).
PIN_KEY = "bundle_sha256"
#: The metadata field mapping each data file's name to its sha256.
FILES_KEY = "files"

ErrorType = type[AuditmiError]
Writer = Callable[[str], None]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def metadata_digest(meta: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``meta`` without its pin (sorted keys, no spaces, ASCII)."""
    body = {k: v for k, v in meta.items() if k != PIN_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def pin(meta: dict[str, Any], files: Mapping[str, str]) -> dict[str, Any]:
    """``meta`` with the files' hashes and the metadata pin added (JSON round-tripped first)."""
    body = json.loads(json.dumps({k: v for k, v in meta.items() if k != PIN_KEY}, allow_nan=True))
    body[FILES_KEY] = dict(sorted(files.items()))
    body[PIN_KEY] = metadata_digest(body)
    return body


# --------------------------------------------------------------------------------------
# Committing a folder atomically
# --------------------------------------------------------------------------------------


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _siblings(target: Path, tag: str) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.{tag}-*"))


def recover(target: str | Path) -> None:
    """Finish or undo a swap interrupted by a kill, and delete temporaries of dead writers.

    Best effort: a folder that cannot be listed or changed (e.g. a read-only copy) is left as it is.
    """
    t = Path(target)
    try:
        if not t.parent.is_dir():
            return
        olds = _siblings(t, "old")
        if not t.exists() and olds:  # killed between the two renames of the fallback: restore the old bundle
            os.rename(olds[-1], t)
        for p in _siblings(t, "old") + _siblings(t, "new"):
            try:
                pid = int(p.name.rsplit("-", 2)[-2])
            except (ValueError, IndexError):
                continue
            if not _pid_alive(pid) or p.name.split(".")[-1].startswith("old"):
                shutil.rmtree(p, ignore_errors=True)
    except OSError:
        pass


def check_folder_destination(path: str | Path, names: Iterable[str], what: str = "bundle", keep: Iterable[str] = ()) -> Path:
    """Where a bundle of files ``names`` will be committed (symlinks resolved); InputError if it cannot be.

    An existing folder may be empty or hold a previous bundle (the same file names) and the entries
    ``keep`` (carried over into the new folder); anything else in it would be lost by the swap, so it
    is refused. Nothing is created.
    """
    p = Path(os.path.realpath(Path(path).expanduser()))
    if p.exists() and not p.is_dir():
        raise InputError(f"{path} exists and is not a folder; give a new folder for the {what}.")
    if p.is_dir():
        allowed = set(names) | set(keep)
        foreign = sorted(e.name for e in p.iterdir() if e.name not in allowed)
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise InputError(
                f"{path} holds files that are not part of a {what} ({shown}); writing the {what} there would replace "
                "them. Give a new or empty folder."
            )
    anc = p.parent
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir() or not os.access(anc, os.W_OK | os.X_OK):
        raise InputError(f"cannot create the {what} {path}: {anc} is not a writable folder; choose another path.")
    return p


def _link_tree(src: Path, dst: Path) -> None:
    """Recreate ``src`` at ``dst`` with hard links (a copy where linking fails): the old tree stays intact."""
    if src.is_dir() and not src.is_symlink():
        dst.mkdir()
        for e in src.iterdir():
            _link_tree(e, dst / e.name)
    elif src.is_symlink():
        os.symlink(os.readlink(src), dst)
    else:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)


def commit_folder(target: str | Path, fill: Callable[[Path], None], names: Iterable[str], what: str = "bundle",
                  keep: Iterable[str] = ()) -> Path:
    """Create ``target`` atomically: ``fill(tmp_dir)`` writes the files ``names``, then the folder is swapped in.

    Entries ``keep`` of an existing ``target`` (e.g. a calibration's resumable shadow-training run)
    are carried over, hard-linked, so they survive the swap and a kill at any point.
    """
    keep = tuple(keep)
    t = check_folder_destination(target, names, what, keep)
    try:
        t.parent.mkdir(parents=True, exist_ok=True)
        recover(t)
        tmp = Path(tempfile.mkdtemp(dir=t.parent, prefix=f".{t.name}.new-{os.getpid()}-"))
    except OSError as e:
        raise InputError(f"cannot write the {what} {target} ({e.strerror or e}); choose another path.") from e
    try:
        fill(tmp)
        for name in keep:
            if (t / name).exists() and not (tmp / name).exists():
                _link_tree(t / name, tmp / name)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (stat.S_IMODE(t.stat().st_mode) if t.is_dir() else 0o777 & ~umask))
        for f in tmp.iterdir():
            if f.is_file():
                fsync_path(f)
        fsync_path(tmp)
        if t.exists():
            if not _exchange(str(tmp), str(t)):
                old = Path(tempfile.mkdtemp(dir=t.parent, prefix=f".{t.name}.old-{os.getpid()}-"))
                os.rmdir(old)
                os.rename(t, old)
                os.rename(tmp, t)  # a kill between the renames is undone by recover()
                tmp = old
            shutil.rmtree(tmp, ignore_errors=True)  # the previous bundle, now at the temporary name
        else:
            os.rename(tmp, t)
        fsync_path(t.parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"cannot write the {what} {target} ({e.strerror or e}); free some space or choose another path.") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return t


def write_bundle(
    target: str | Path,
    meta_name: str,
    meta: dict[str, Any],
    files: Mapping[str, Writer],
    what: str = "bundle",
    keep: Iterable[str] = (),
) -> dict[str, Any]:
    """Write ``files`` (name -> writer of a path) and the pinned metadata as one atomic commit.

    ``keep`` names entries of an existing folder to carry over unpinned (see :func:`commit_folder`).
    Returns the metadata as written (with ``files`` and ``bundle_sha256``).
    """
    written: dict[str, Any] = {}

    def fill(tmp: Path) -> None:
        hashes = {}
        for name, writer in files.items():
            writer(str(tmp / name))
            hashes[name] = sha256_file(tmp / name)
        m = pin({"auditmi_version": __version__, **meta}, hashes)
        (tmp / meta_name).write_text(json.dumps(m, indent=2, allow_nan=True))
        written.update(m)

    commit_folder(target, fill, [meta_name, *files], what, keep)
    return written


# --------------------------------------------------------------------------------------
# Reading and verifying
# --------------------------------------------------------------------------------------


def read_metadata(path: str | Path, error: ErrorType, fix: str, what: str = "bundle") -> dict[str, Any]:
    """Parse a metadata JSON file into a dict; every failure is ``error`` with ``fix`` appended."""
    p = Path(path)
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"cannot read {p}: {e}. {fix}") from e
    if not isinstance(meta, dict):
        raise error(f"{p} is not an auditmi {what} (it does not hold a JSON object). {fix}")
    return meta


def verify(
    root: str | Path,
    meta_name: str,
    meta: dict[str, Any],
    *,
    fmt: str,
    schema_version: int,
    error: ErrorType,
    fix: str,
    legacy: Callable[[dict[str, Any]], str] | None = None,
    what: str = "bundle",
) -> dict[str, Any]:
    """Check format, schema version, the metadata pin and every file's sha256; returns {name: sha256}.

    ``legacy(meta)`` is called for a bundle written before metadata pins existed (no ``bundle_sha256``)
    and returns the reason to give (how to rebuild or re-pin it).
    """
    mp = Path(root) / meta_name
    if meta.get("format") != fmt:
        raise error(f"{mp} is not an auditmi {what} (format={meta.get('format')!r}). {fix}")
    version = meta.get("schema_version")
    if version != schema_version:
        raise error(
            f"{mp} has schema_version {version} (written by auditmi {meta.get('auditmi_version')}), but this auditmi "
            f"{__version__} reads version {schema_version}. {fix}"
        )
    recorded = meta.get(PIN_KEY)
    if recorded is None and legacy is not None:
        raise error(legacy(meta))
    if not isinstance(recorded, str):
        raise error(f"{mp} records no {PIN_KEY}, so edits to it cannot be detected. {fix}")
    actual = metadata_digest(meta)
    if actual != recorded:
        raise error(
            f"{mp} was edited after it was written: its content no longer matches its {PIN_KEY} "
            f"(recorded {recorded[:12]}..., now {actual[:12]}...). Any change to a bundle's metadata is refused. {fix}"
        )
    files = meta.get(FILES_KEY)
    if not isinstance(files, dict) or not files or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise error(f"{mp} has no valid '{FILES_KEY}' list. {fix}")
    out: dict[str, str] = {}
    for name, expected in files.items():
        fp = safe_member(root, name, error, fix)
        if not fp.is_file():
            raise error(f"{fp} is missing: the bundle is incomplete; re-copy the whole folder. {fix}")
        try:
            got = sha256_file(fp)
        except OSError as e:
            raise error(f"cannot read {fp} ({e.strerror or e}). {fix}") from e
        if got != expected:
            raise error(
                f"{fp} does not match the sha256 recorded in {meta_name} (expected {expected[:12]}..., got {got[:12]}...): "
                f"the bundle was modified or corrupted. Re-copy it from its source. {fix}"
            )
        out[name] = got
    return out


def safe_member(root: str | Path, name: Any, error: ErrorType, fix: str = "") -> Path:
    """``root / name`` for a plain file name; a path, '..', or a non-string is ``error``."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise error(f"{Path(root)} names a file {name!r} that is not a plain file name inside the folder; refused. {fix}".strip())
    return Path(root) / name


def load_arrays(path: str | Path, error: ErrorType, fix: str, framework: str = "numpy") -> dict[str, Any]:
    """Read a safetensors file (numpy or torch arrays); an unreadable or malformed file is ``error``."""
    try:
        if framework == "torch":
            from safetensors.torch import load_file as load_t

            return dict(load_t(str(path)))
        from safetensors.numpy import load_file as load_n

        return dict(load_n(str(path)))
    except Exception as e:  # OSError, safetensors' SafetensorError (header, dtype, truncation)
        raise error(f"cannot read {path} ({type(e).__name__}: {e}). {fix}") from e


# --------------------------------------------------------------------------------------
# Re-pinning a trusted bundle of an older schema (``python -m auditmi.bundle repin PATH``)
# --------------------------------------------------------------------------------------


def repin(folder: str | Path) -> Path:
    """Pin a trusted calibration bundle or encoder checkpoint written before metadata pins existed.

    Only the metadata is rewritten (data files stay bit-for-bit); the data files must still match
    the hashes the old metadata recorded. Returns the metadata file written.
    """
    root = Path(folder)
    for meta_name, recorded_key in (("calibration.json", None), ("encoder.json", "weights_sha256")):
        mp = root / meta_name
        if not mp.is_file():
            continue
        meta = read_metadata(mp, InputError, "")
        if meta_name == "calibration.json":
            names = meta.get(FILES_KEY) or {}
        else:
            names = {str(meta.get("weights", "model.safetensors")): meta.get(recorded_key) if recorded_key else None}
        if not isinstance(names, dict) or not names:
            raise InputError(f"{mp} lists no data files to pin.")
        hashes = {}
        for name, expected in names.items():
            fp = safe_member(root, name, InputError)
            got = sha256_file(fp)
            if expected is not None and got != expected:
                raise InputError(f"{fp} does not match the sha256 recorded in {meta_name}; it was modified or corrupted, so it is not re-pinned.")
            hashes[name] = got
        write_text(mp, json.dumps(pin(meta, hashes), indent=2, allow_nan=True))
        return mp
    raise InputError(f"{root} holds neither calibration.json nor encoder.json.")


if __name__ == "__main__":  # pragma: no cover - a maintenance command
    if len(sys.argv) != 3 or sys.argv[1] != "repin":
        sys.exit("usage: python -m auditmi.bundle repin FOLDER")
    try:
        print(repin(sys.argv[2]))
    except AuditmiError as exc:
        sys.exit(f"error: {exc}")
