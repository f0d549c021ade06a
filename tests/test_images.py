"""Tests for auditmi.images: discovery, hashing, decoding of every mode, and skip reasons."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from auditmi import images
from auditmi.errors import InputError
from auditmi.images import (
    MAX_PIXELS,
    SUPPORTED_EXTENSIONS,
    Discovery,
    ImageLoadError,
    LoadedImage,
    Skipped,
    decode,
    discover,
    load_image,
    load_many,
    read_and_hash,
)


def _gradient(width: int = 32, height: int = 24) -> np.ndarray:
    """A deterministic RGB image with distinct content per pixel (so rotations are visible)."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack(
        [(xs * 255 // max(width - 1, 1)), (ys * 255 // max(height - 1, 1)), (xs + ys) % 256],
        axis=2,
    ).astype(np.uint8)


def _encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _png(
    path: Path, size: tuple[int, int] = (8, 6), color: tuple[int, int, int] = (10, 20, 30)
) -> Path:
    return _write(path, _encode(Image.new("RGB", size, color), "PNG"))


def test_constants() -> None:
    assert {
        ".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"
    } == SUPPORTED_EXTENSIONS
    assert MAX_PIXELS == 89_478_485 == Image.MAX_IMAGE_PIXELS


# ---------------------------------------------------------------- formats and extensions


_FORMAT_OF = {
    ".jpg": "JPEG", ".JPG": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP",
    ".bmp": "BMP", ".gif": "GIF", ".tif": "TIFF", ".tiff": "TIFF", ".TIFF": "TIFF",
}
_LOSSLESS = {"PNG", "BMP", "TIFF"}


@pytest.mark.parametrize("ext", sorted(_FORMAT_OF))
def test_every_supported_extension_loads(tmp_path: Path, ext: str) -> None:
    fmt = _FORMAT_OF[ext]
    arr = _gradient()
    save_kwargs: dict[str, object] = {"lossless": True} if fmt == "WEBP" else {}
    path = _write(tmp_path / f"img{ext}", _encode(Image.fromarray(arr), fmt, **save_kwargs))

    found = discover([tmp_path])
    assert found.images == [path]  # upper-case extensions are found in folders too
    assert found.ignored == []

    img = load_image(path)
    assert isinstance(img, LoadedImage)
    assert img.pixels.shape == (24, 32, 3)
    assert img.pixels.dtype == np.uint8
    assert img.original_size == (32, 24)
    assert img.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    diff = np.abs(img.pixels.astype(int) - arr.astype(int))
    if fmt in _LOSSLESS or fmt == "WEBP":
        assert diff.max() == 0
    elif fmt == "JPEG":
        assert diff.mean() < 8
    else:  # GIF: 256-colour palette quantisation
        assert diff.mean() < 20


# ---------------------------------------------------------------- pixel modes


def _decode_no_warnings(data: bytes) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning leaking out of decode fails the test
        pixels, _ = decode(data)
    assert pixels.dtype == np.uint8
    assert pixels.ndim == 3 and pixels.shape[2] == 3
    assert pixels.flags["C_CONTIGUOUS"] and pixels.flags["WRITEABLE"]  # torch.from_numpy-safe
    return pixels


def test_mode_L_LA_1() -> None:
    gray = np.array([[0, 128], [200, 255]], dtype=np.uint8)
    for im in (Image.fromarray(gray, "L"), Image.fromarray(gray, "L").convert("LA")):
        px = _decode_no_warnings(_encode(im, "PNG"))
        assert (px == gray[:, :, None]).all()
    bw = Image.fromarray(gray > 127).convert("1")
    px = _decode_no_warnings(_encode(bw, "PNG"))
    assert px[0, 0].tolist() == [0, 0, 0] and px[1, 1].tolist() == [255, 255, 255]


def test_mode_RGBA_drops_alpha_like_torchvision() -> None:
    im = Image.new("RGBA", (3, 3), (200, 100, 50, 0))  # fully transparent
    px = _decode_no_warnings(_encode(im, "PNG"))
    assert px[0, 0].tolist() == [200, 100, 50]


def _palette_image() -> Image.Image:
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    im.putpixel((0, 0), 2)
    return im


def test_mode_P_without_transparency() -> None:
    px = _decode_no_warnings(_encode(_palette_image(), "PNG"))
    assert px[0, 0].tolist() == [0, 255, 0]
    assert px[3, 3].tolist() == [255, 0, 0]


@pytest.mark.parametrize("transparency", [1, bytes([255, 0, 128])])
def test_mode_P_with_transparency_no_warning(transparency: int | bytes) -> None:
    # bytes-valued transparency is what makes Pillow warn in convert("RGB")
    data = _encode(_palette_image(), "PNG", transparency=transparency)
    assert Image.open(io.BytesIO(data)).info.get("transparency") is not None
    px = _decode_no_warnings(data)
    assert px[3, 3].tolist() == [255, 0, 0]  # transparent pixels keep their palette colour


def test_mode_CMYK_and_YCbCr() -> None:
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in naive CMYK
    for fmt in ("TIFF", "JPEG"):
        px = _decode_no_warnings(_encode(cmyk, fmt))
        assert px[0, 0, 0] > 200 and px[0, 0, 1] < 60 and px[0, 0, 2] < 60
    ycbcr = Image.new("RGB", (4, 4), (30, 160, 220)).convert("YCbCr")
    data = _encode(ycbcr, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "YCbCr"
    px = _decode_no_warnings(data)
    assert np.abs(px[0, 0].astype(int) - [30, 160, 220]).max() <= 3


@pytest.mark.parametrize("mode,fmt", [("I;16", "PNG"), ("I;16", "TIFF"), ("I;16B", "TIFF")])
def test_mode_16_bit_is_scaled_not_clipped(mode: str, fmt: str) -> None:
    values = np.array([[0, 257, 32896], [65535, 1000, 12850]], dtype=np.uint16)
    im = Image.fromarray(values)  # uint16 -> I;16
    if mode == "I;16B":
        im = Image.frombytes("I;16B", im.size, values.astype(">u2").tobytes())
    data = _encode(im, fmt)
    assert Image.open(io.BytesIO(data)).mode == mode
    px = _decode_no_warnings(data)
    assert px[..., 0].tolist() == [[0, 1, 128], [255, 4, 50]]
    assert (px[..., 0] == px[..., 2]).all()


def test_mode_I_32_bit() -> None:
    eight_bit = np.array([[0, 100], [200, 255]], dtype=np.int32)
    sixteen_bit = np.array([[0, 257], [32896, 65535]], dtype=np.int32)
    signed = np.array([[-1000, 0], [1000, 3000]], dtype=np.int32)
    expected = {
        0: [[0, 100], [200, 255]],
        1: [[0, 1], [128, 255]],
        2: [[0, 64], [128, 255]],  # min-max normalised
    }
    for i, arr in enumerate((eight_bit, sixteen_bit, signed)):
        data = _encode(Image.fromarray(arr, "I"), "TIFF")
        assert Image.open(io.BytesIO(data)).mode == "I"
        assert _decode_no_warnings(data)[..., 1].tolist() == expected[i]


def test_mode_F_float() -> None:
    unit = np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32)
    data = _encode(Image.fromarray(unit, "F"), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    assert _decode_no_warnings(data)[..., 0].tolist() == [[0, 128], [255, 64]]
    wide = np.array([[-1.0, 0.0], [1.0, np.nan]], dtype=np.float32)
    px = _decode_no_warnings(_encode(Image.fromarray(wide, "F"), "TIFF"))
    assert px[..., 0].tolist() == [[0, 128], [255, 128]]


def test_animated_gif_and_multipage_tiff_use_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    for fmt in ("GIF", "TIFF", "WEBP"):
        kwargs: dict[str, object] = {"save_all": True, "append_images": frames[1:]}
        if fmt == "WEBP":
            kwargs["lossless"] = True
        px = _decode_no_warnings(_encode(frames[0], fmt, **kwargs))
        assert px[4, 4].tolist() == [255, 0, 0], fmt


# ---------------------------------------------------------------- EXIF orientation


def test_exif_orientation_6_rotates(tmp_path: Path) -> None:
    arr = np.zeros((20, 40, 3), dtype=np.uint8)  # stored landscape: width 40, height 20
    arr[:5, :5] = (255, 0, 0)  # red block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _encode(Image.fromarray(arr), "JPEG", exif=exif, quality=95)
    path = _write(tmp_path / "rot.jpg", data)

    img = load_image(path)
    assert img.pixels.shape == (40, 20, 3)  # displayed portrait
    assert img.original_size == (20, 40)
    # rotating 90 degrees clockwise moves the stored top-left corner to the top-right
    assert img.pixels[1, 18, 0] > 200 and img.pixels[1, 1, 0] < 50


def test_corrupt_exif_is_not_fatal() -> None:
    data = _encode(Image.new("RGB", (6, 4), (1, 2, 3)), "JPEG", exif=b"Exif\x00\x00garbage")
    px, size = decode(data)
    assert size == (6, 4) and px.shape == (4, 6, 3)


# ---------------------------------------------------------------- bad files


def _zero_width_png() -> bytes:
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", 0, 5, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_bad_files_are_skipped_with_reasons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    png, jpg = _encode(noise, "PNG"), _encode(noise, "JPEG")

    good1 = _png(tmp_path / "a_good.png")
    bad = {
        "empty": _write(tmp_path / "empty.jpg", b""),
        "trunc_png": _write(tmp_path / "trunc.png", png[: len(png) // 2]),
        "trunc_jpg": _write(tmp_path / "trunc.jpg", jpg[: len(jpg) // 2]),
        "random": _write(tmp_path / "random.jpg", rng.bytes(4096)),
        "text": _write(tmp_path / "notes.png", b"hello, I am not an image\n"),
        "zero": _write(tmp_path / "zero.png", _zero_width_png()),
        "bomb": _png(tmp_path / "bomb.png", size=(200, 200)),
        "folder": tmp_path / "folder.jpg",
        "broken_link": tmp_path / "broken.jpg",
        "missing": tmp_path / "missing.jpg",
    }
    bad["folder"].mkdir()
    bad["broken_link"].symlink_to(tmp_path / "nowhere.jpg")
    good2 = _png(tmp_path / "z_good.png", size=(5, 5))
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)  # 200x200 is now a "bomb", 64x64 is not

    paths = [good1, *bad.values(), good2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded, skipped = load_many(paths)

    assert [img.path for img in loaded] == [good1, good2]  # bad files did not stop the batch
    reasons = {s.path: s.reason for s in skipped}
    assert all(isinstance(s, Skipped) for s in skipped)
    assert list(reasons) == list(bad.values())  # input order kept
    assert "empty" in reasons[bad["empty"]]
    assert "truncated" in reasons[bad["trunc_png"]]
    assert "truncated" in reasons[bad["trunc_jpg"]]
    assert "not an image" in reasons[bad["random"]]
    assert "not an image" in reasons[bad["text"]]
    assert reasons[bad["zero"]]  # Pillow refuses zero-size images at identification
    assert "too large" in reasons[bad["bomb"]] and "10,000" in reasons[bad["bomb"]]
    assert "folder" in reasons[bad["folder"]]
    assert "broken symbolic link" in reasons[bad["broken_link"]]
    assert "does not exist" in reasons[bad["missing"]]
    for reason in reasons.values():  # short sentences, no tracebacks
        assert "\n" not in reason and len(reason) < 200
    assert capsys.readouterr().out == ""  # the library never prints


def test_pil_decompression_bomb_warning_and_error_are_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = _encode(Image.new("RGB", (20, 20)), "PNG")  # 400 pixels
    # 300 < 400 < 600 -> Pillow warns; 150 -> 400 > 2 * 150 -> Pillow raises
    for pil_limit in (300, 150):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pil_limit)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ImageLoadError, match="too large"):
                decode(data)


def test_unreadable_file(tmp_path: Path) -> None:
    path = _png(tmp_path / "secret.png")
    path.chmod(0)
    try:
        if os.geteuid() == 0:
            pytest.skip("root can read any file")
        with pytest.raises(ImageLoadError) as info:
            read_and_hash(path)
        assert info.value.reason == "cannot read file: permission denied"
        _, skipped = load_many([path])
        assert skipped == [Skipped(path, "cannot read file: permission denied")]
    finally:
        path.chmod(0o644)


def test_permission_denied_reason_even_as_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # test_unreadable_file is skipped under root; simulate the OS refusing the read instead.
    path = _png(tmp_path / "secret.png")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(images, "open", refuse, raising=False)
    loaded, skipped = load_many([path])
    assert loaded == []
    assert skipped == [Skipped(path, "cannot read file: permission denied")]


def test_fifo_is_not_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # opening it for reading would block forever
    with pytest.raises(ImageLoadError, match="not a regular file"):
        read_and_hash(fifo)
    assert discover([tmp_path]) == Discovery(images=[], ignored=[fifo])


def test_load_image_error_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "empty.png", b"")
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.path == path
    assert info.value.reason == "empty file (0 bytes)"
    assert str(path) in str(info.value)
    assert isinstance(info.value, InputError)


# ---------------------------------------------------------------- discovery


def test_discover_recursion_hidden_and_ignored(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    a = _png(root / "a.png")
    b = _write(root / "sub" / "deeper" / "b.JPEG", _encode(Image.new("RGB", (4, 4)), "JPEG"))
    _png(root / ".hidden.png")
    _png(root / "._a.png")  # macOS AppleDouble file
    _write(root / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    _png(root / ".git" / "objects" / "c.png")
    notes = _write(root / "sub" / "notes.txt", b"text")
    thumbs = _write(root / "Thumbs.db", b"")

    found = discover([root])
    assert found.images == [a, b]
    assert found.ignored == sorted([notes, thumbs])


def test_discover_explicit_files_dedup_and_sorting(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    z = _png(root / "z.png")
    a = _png(root / "a.png")
    odd = _write(tmp_path / "scan.raw", b"whatever")  # unsupported, but asked for explicitly
    link = tmp_path / "link.png"
    link.symlink_to(a)

    found = discover([str(z), root, odd, root / ".." / "photos" / "a.png", link, root])
    # link.png and photos/../photos/a.png are a.png again: each file is listed once
    assert found.images == sorted([a, z, odd])
    assert found.ignored == []
    assert all(p.is_absolute() for p in found.images)


def test_discover_explicit_unsupported_file_wins_over_ignored(tmp_path: Path) -> None:
    odd = _write(tmp_path / "photo.heic", b"data")
    found = discover([tmp_path, odd])
    assert found.images == [odd]
    assert found.ignored == []


def test_discover_survives_symlink_loops(tmp_path: Path) -> None:
    root = tmp_path / "root"
    a = _png(root / "sub" / "a.png")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "again").symlink_to(root / "sub", target_is_directory=True)
    found = discover([root])
    assert found.images == [a]  # once, and under its real location rather than via a link


def test_discover_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        discover([tmp_path / "nope"])
    broken = tmp_path / "broken"
    broken.symlink_to(tmp_path / "nowhere")
    with pytest.raises(InputError, match="broken symbolic link"):
        discover([broken])


def test_discover_empty_folder(tmp_path: Path) -> None:
    assert discover([tmp_path]) == Discovery(images=[], ignored=[])


# ---------------------------------------------------------------- duplicates


def test_max_side_downscales_shorter_side_keeping_aspect() -> None:
    landscape = _encode(Image.fromarray(_gradient(400, 200)), "PNG")
    px, size = decode(landscape, max_side=100)
    assert px.shape == (100, 200, 3)
    assert size == (400, 200)

    portrait = _encode(Image.fromarray(_gradient(90, 301)), "PNG")
    px, size = decode(portrait, max_side=30)
    assert px.shape == (100, 30, 3)  # 301 / 3 = 100.33 -> 100
    assert size == (90, 301)


def test_max_side_never_upscales(tmp_path: Path) -> None:
    data = _encode(Image.fromarray(_gradient(40, 30)), "PNG")
    for limit in (30, 31, 1000):
        px, size = decode(data, max_side=limit)
        assert px.shape == (30, 40, 3) and size == (40, 30)
    full, _ = decode(data)
    assert (decode(data, max_side=1000)[0] == full).all()


def test_max_side_applies_after_exif_rotation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(Image.fromarray(_gradient(200, 100)), "JPEG", exif=exif)
    px, size = decode(data, max_side=50)
    assert size == (100, 200)
    assert px.shape == (100, 50, 3)


def test_downscale_is_antialiased() -> None:
    stripes = np.zeros((64, 64, 3), dtype=np.uint8)
    stripes[:, ::2] = 255  # 1-pixel stripes alias badly with nearest-neighbour
    px, _ = decode(_encode(Image.fromarray(stripes), "PNG"), max_side=16)
    assert np.abs(px.astype(int) - 128).max() < 20


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_invalid_max_side(bad: object) -> None:
    data = _encode(Image.new("RGB", (4, 4)), "PNG")
    with pytest.raises(InputError, match="max_side"):
        decode(data, max_side=bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="max_side"):
        load_many([], max_side=bad)  # type: ignore[arg-type]


def test_load_many_progress(tmp_path: Path) -> None:
    paths = [_png(tmp_path / f"{i}.png") for i in range(3)]
    calls: list[tuple[int, int]] = []
    load_many(paths, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
