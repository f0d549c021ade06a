"""Awkward input that must cost little and be accounted for (issue 14): huge files, files that
are not images, unreadable sub-folders, files left out of a search, too many workers."""

from __future__ import annotations

import io
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from auditmi import images
from auditmi.discovery import Discovery, Skipped, discover
from auditmi.errors import InputError
from auditmi.images import MAX_FILE_BYTES, ImageLoadError, load_many, read_and_hash


def _png(path: Path, size: tuple[int, int] = (8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)
    return path


def _sparse(path: Path, size: int, head: bytes = b"") -> Path:
    """A file of ``size`` bytes that takes no disk space (a hole after ``head``)."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


# ------------------------------------------------------------------------- size and header first


def test_default_file_size_limit_is_sane() -> None:
    assert 64 * 2**20 <= MAX_FILE_BYTES <= 2**30


def test_file_over_the_size_limit_is_skipped_without_being_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = _sparse(tmp_path / "huge.png", 3 * 2**20)
    monkeypatch.setenv("AUDITMI_MAX_FILE_MB", "1")

    def must_not_open(*a: object, **k: object) -> None:
        raise AssertionError("a file over the size limit was opened")

    monkeypatch.setattr(images, "open", must_not_open, raising=False)
    loaded, skipped = load_many([big])
    assert loaded == []
    assert len(skipped) == 1 and skipped[0].reason.startswith("file too large: 3 MiB exceeds the 1 MiB limit")
    assert "AUDITMI_MAX_FILE_MB" in skipped[0].reason


def test_size_limit_is_overridable_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _png(tmp_path / "a.png", (300, 300))
    monkeypatch.setenv("AUDITMI_MAX_FILE_MB", "0.0001")  # ~100 bytes
    with pytest.raises(ImageLoadError, match="file too large"):
        read_and_hash(p)
    monkeypatch.setenv("AUDITMI_MAX_FILE_MB", "10")
    assert read_and_hash(p)[0] == p.read_bytes()
    for bad in ("0", "-5", "lots", "inf", "nan"):
        monkeypatch.setenv("AUDITMI_MAX_FILE_MB", bad)
        with pytest.raises(InputError, match="AUDITMI_MAX_FILE_MB"):
            images.max_file_bytes()


def test_large_file_that_is_not_an_image_is_skipped_after_its_header(tmp_path: Path) -> None:
    """A 200 MB file named .png (under the limit) costs a header read, not 200 MB of memory."""
    fake = _sparse(tmp_path / "movie.png", 200 * 2**20, b"\x00not an image at all")
    tracemalloc.start()
    try:
        loaded, skipped = load_many([fake])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert loaded == [] and "not an image" in skipped[0].reason
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_decompression_bomb_header_is_refused_before_the_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real PNG header announcing too many pixels, padded to 100 MB: refused from the header."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "PNG")
    bomb = _sparse(tmp_path / "bomb.png", 100 * 2**20, buf.getvalue())
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    tracemalloc.start()
    try:
        _, skipped = load_many([bomb])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "image too large" in skipped[0].reason and "decompression-bomb" in skipped[0].reason
    assert peak < 8 * 2**20


# ------------------------------------------------------------------------- discovery accounting


def test_unreadable_subfolder_is_skipped_with_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "photos"
    a = _png(root / "a.png")
    b = _png(root / "ok" / "b.png")
    _png(root / "locked" / "c.png")
    locked = root / "locked"
    real = os.scandir

    def scandir(path: object = ".") -> object:  # what chmod 000 does for a non-root user
        if Path(str(path)) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    found = discover([root])
    assert found.images == [a, b]
    assert found.unreadable == [Skipped(locked, "folder not searched: permission denied")]
    # The folder the user named is still an error: nothing of it could be audited.
    with pytest.raises(InputError, match="cannot read folder"):
        discover([locked])


@pytest.mark.skipif(os.geteuid() == 0, reason="root can list any folder")
def test_unreadable_subfolder_really_chmodded(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    a = _png(root / "a.png")
    _png(root / "locked" / "c.png")
    (root / "locked").chmod(0)
    try:
        found = discover([root])
    finally:
        (root / "locked").chmod(0o755)
    assert found.images == [a] and len(found.unreadable) == 1


def test_ignored_files_are_counted_by_reason(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    a = _png(root / "a.png")
    for name in ("x.heic", "y.HEIC", "z.avif", "README", "sub/notes.txt"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"data")
    _png(root / ".hidden.png")
    _png(root / ".git" / "objects" / "c.png")  # a hidden folder counts once, it is not entered
    os.mkfifo(root / "pipe.jpg")
    found = discover([root])
    assert found.images == [a]
    assert found.ignored_counts() == {"extension .heic": 2, "hidden": 2, "extension .avif": 1, "extension .txt": 1,
                                      "no extension": 1, "not a regular file": 1}
    assert Discovery(images=[], ignored=[]).ignored_counts() == {}


def _noise(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    out = []
    for i in range(n):
        p = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


# ------------------------------------------------------------------------- worker cap


def test_workers_are_capped_by_cores_and_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from auditmi import _paths

    monkeypatch.setattr(_paths, "usable_cores", lambda: 4)
    monkeypatch.setattr(_paths, "available_memory", lambda: 64 * 2**30)
    assert _paths.cap_workers(3) == (3, None)
    n, note = _paths.cap_workers(999)
    assert n == 4 and note is not None and "999" in note and "4 usable cores" in note
    monkeypatch.setattr(_paths, "available_memory", lambda: 2**30)  # 1 GiB: half of it holds 2 workers of 256 MiB
    n, note = _paths.cap_workers(999)
    assert n == 2 and "1.0 GiB memory available" in note  # type: ignore[operator]
    monkeypatch.setattr(_paths, "available_memory", lambda: 2**20)
    assert _paths.cap_workers(8)[0] == 1  # never below one worker


def test_pipeline_never_starts_more_workers_than_cores(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from auditmi._paths import usable_cores
    from auditmi.encoders import load_encoder
    from auditmi.pipeline import compute_features
    from auditmi.views import ViewConfig

    paths = _noise(tmp_path / "imgs", 12)
    enc = load_encoder(str(tiny_checkpoint), "cpu")
    fs = compute_features(paths, enc, ViewConfig(n_views=4), batch_size=4, num_workers=999)
    assert fs.n == 12
    assert fs.timing["workers"] <= usable_cores()
    assert any("--workers 999 lowered to" in n for n in fs.notes)
