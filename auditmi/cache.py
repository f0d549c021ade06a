"""Resumable on-disk cache of membership features.

An entry is keyed by everything that determines an image's features: the encoder identity
(name + weights hash), the image content hash (sha256 of the file), the view configuration,
the feature configuration and the seed. A scan writes one shard per batch with an atomic
``os.replace`` (:func:`auditmi._io.atomic_write`), so a scan killed at any point (even ``kill -9``) leaves only complete shards,
and the next scan with the same key resumes from them. Shards are ``.npz`` files read with
``allow_pickle=False``: a cache folder can never execute code.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from auditmi._io import atomic_write, write_text
from auditmi.errors import InputError

CACHE_FORMAT = "auditmi-feature-cache-v1"
COMPACT_AT = 64  # merge shards into one once there are this many


def default_cache_dir() -> Path:
    """``$AUDITMI_CACHE_DIR`` or the user's cache directory (e.g. ~/.cache/auditmi)."""
    env = os.environ.get("AUDITMI_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("auditmi"))


#: OS errors that mean "this folder cannot be written" (as opposed to "it is full" or "it is a file").
_READ_ONLY_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def is_read_only_error(e: BaseException) -> bool:
    """Whether ``e`` says the cache folder is not writable (permissions, a read-only mount)."""
    return isinstance(e, OSError) and e.errno in _READ_ONLY_ERRNOS


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def read_only_note(root: str | Path | None = None) -> str | None:
    """A sentence for the user when the cache folder ``root`` (default: :func:`default_cache_dir`)
    can be read but not written, else None. Probes by creating (and removing) a temporary file,
    which is what the cache itself will try."""
    folder = Path(root) if root is not None else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="tmp-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        if not is_read_only_error(e):
            return None  # not a folder, disk full...: the cache says so itself when it is used
        return (f"the feature cache {folder} is read-only ({e.strerror or e}): features already cached there are used, "
                "new ones are not saved. Pass --cache with a writable folder to keep them.")
    return None


class FeatureCache:
    """Features and encoder-free image statistics of images, for one (encoder, views, seed) key."""

    def __init__(self, root: str | Path, key: dict[str, Any]) -> None:
        blob = json.dumps({"format": CACHE_FORMAT, **key}, sort_keys=True)
        self.root, self.key = Path(root), key
        self.digest = hashlib.sha256(blob.encode()).hexdigest()[:32]
        self.dir = Path(root) / "features" / self.digest
        #: True when the folder cannot be written: cached entries are read, new ones are not saved.
        self.read_only = False
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            kp = self.dir / "key.json"
            if not _writable(self.dir):
                self.read_only = True  # a shared or archived cache: use what is there
            elif not kp.exists():
                write_text(kp, json.dumps(json.loads(blob), indent=2))
        except (OSError, InputError) as e:  # a user's --cache / $AUDITMI_CACHE_DIR problem, not a bug: say so
            if is_read_only_error(e) or is_read_only_error(e.__cause__ or e):
                self.read_only = True
                return
            raise InputError(
                f"cannot use {root} as the feature cache folder ({getattr(e, 'strerror', None) or e}); "
                "pass --cache with a writable folder, or --no-cache."
            ) from e

    def reopen(self) -> FeatureCache:
        """The same cache opened afresh (e.g. by a Ray actor on another node: only the folder and
        the key travel, and that node checks for itself whether it can write there)."""
        return FeatureCache(self.root, self.key)

    def _remove_stale_temporaries(self, older_than_s: float = 3600.0) -> None:
        """Delete temp files left by killed writers (old enough that no live scan still writes them)."""
        now = time.time()
        for p in [*self.dir.glob("tmp-*"), *self.dir.glob(".*.tmp")]:  # older and current writers' temporaries
            try:
                if now - p.stat().st_mtime > older_than_s:
                    p.unlink()
            except OSError:
                pass

    def shards(self) -> list[Path]:
        """Complete shards (temporary files of interrupted writes are never listed)."""
        return sorted(self.dir.glob("shard-*.npz"))

    def load(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """All cached entries: sha256 -> (features, image statistics)."""
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._remove_stale_temporaries()
        shards = self.shards()
        for p in shards:
            try:
                with np.load(p, allow_pickle=False) as z:
                    shas, feats, stats = z["sha256"], z["features"], z["stats"]
            except Exception:  # unreadable shard (disk error, foreign file): ignore it, recompute
                continue
            if not self._fits(shas, feats, stats):  # readable but not ours: ignore it, recompute
                continue
            for s, f, st in zip(shas, feats, stats, strict=True):
                out[str(s)] = (f, st)
        if len(shards) >= COMPACT_AT and out and not self.read_only:
            self._compact(out, shards)
        return out

    def _fits(self, shas: np.ndarray, feats: np.ndarray, stats: np.ndarray) -> bool:
        """Whether a shard's arrays have the shapes this key implies.

        A shard that loads but does not fit (another tool's file, a bug in an older writer)
        would otherwise crash the scan when its rows are stacked with freshly computed ones.
        """
        if shas.ndim != 1 or feats.ndim != 2 or stats.ndim != 2 or not len(shas) == len(feats) == len(stats):
            return False
        if feats.dtype.kind != "f" or stats.dtype.kind != "f":
            return False
        fcfg, stat_names = self.key.get("features"), self.key.get("stats")
        if isinstance(fcfg, dict) and isinstance(fcfg.get("n_features"), int) and feats.shape[1] != fcfg["n_features"]:
            return False
        return not (isinstance(stat_names, (list, tuple)) and stats.shape[1] != len(stat_names))

    def put(self, shas: list[str], features: np.ndarray, stats: np.ndarray) -> None:
        """Append entries as one new shard, atomically."""
        if not shas or self.read_only:
            return

        def fill(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
                np.savez(f, sha256=np.array(shas, dtype="U64"), features=features.astype(np.float32), stats=stats.astype(np.float32))

        try:
            atomic_write(self.dir / f"shard-{time.time_ns():020d}-{os.getpid()}.npz", fill)
        except (OSError, InputError) as e:  # e.g. disk full: completed shards stay valid; say what to do
            if is_read_only_error(e) or is_read_only_error(e.__cause__ or e) or not _writable(self.dir):
                self.read_only = True  # made read-only meanwhile: go on without saving
                return
            raise InputError(
                f"cannot write to the feature cache {self.dir} ({getattr(e, 'strerror', None) or e}); free some space, "
                "pass --cache with another folder, or --no-cache. Re-running resumes from the cached part."
            ) from e

    def _compact(self, entries: dict[str, tuple[np.ndarray, np.ndarray]], old: list[Path]) -> None:
        shas = list(entries)
        self.put(shas, np.stack([entries[s][0] for s in shas]), np.stack([entries[s][1] for s in shas]))
        if self.read_only:  # the merged shard was not written: keep the old ones
            return
        for p in old:
            p.unlink(missing_ok=True)
