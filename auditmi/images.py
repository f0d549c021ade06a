"""Reading, hashing and decoding the data owner's images.

Every image that enters an audit goes through :func:`load_image`, which

* checks the file's size (:data:`MAX_FILE_BYTES`) and its image header before reading it, so a
  huge or foreign file is skipped after a few bytes, not after loading all of it;
* reads the file once and hashes those exact bytes (SHA-256), so a third party can later check
  that the evidence refers to the very files that were scanned;
* decodes them fully with Pillow (a truncated or corrupt file is *skipped with a reason*, never
  silently padded with grey as ``ImageFile.LOAD_TRUNCATED_IMAGES`` would do);
* refuses decompression bombs before decoding them;
* applies the EXIF orientation and converts every pixel mode to 8-bit RGB.

The RGB conversion (auditmi/pixels.py) mirrors torchvision's default loader, so the encoder
sees the pixels a typical training pipeline saw. Finding the files is auditmi/discovery.py's job.

Bad files never stop a batch: :func:`load_many` returns them as :class:`Skipped` entries with a
short human-readable reason that the CLI shows to the user.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from auditmi.discovery import (
    SUPPORTED_EXTENSIONS,
    Discovery,
    Skipped,
    check_exists,
    discover,
    os_reason,
)
from auditmi.errors import InputError
from auditmi.pixels import ORIENTATION_TRANSPOSE, UnsupportedMode, downscale, exif_orientation, to_rgb
from auditmi.validate import is_int

__all__ = [
    "MAX_FILE_BYTES", "MAX_FILE_ENV", "MAX_PIXELS", "SUPPORTED_EXTENSIONS", "Discovery",
    "ImageLoadError", "LoadedImage", "Skipped", "check_exists", "decode", "discover",
    "load_image", "load_many", "max_file_bytes", "read_and_hash",
]

#: Decompression-bomb limit in pixels (width * height), Pillow's default ``MAX_IMAGE_PIXELS``.
#: Larger images are skipped *before* their pixel data is decoded. Read at call time, so it can be
#: changed (or monkeypatched in tests) through this module.
MAX_PIXELS: int = 89_478_485

#: Largest file read as one image (512 MiB: an uncompressed 16-bit RGB TIFF at the pixel limit
#: is about as big). Larger files are skipped, with the reason, before any byte is read; the
#: environment variable :data:`MAX_FILE_ENV` (in MiB) overrides it.
MAX_FILE_BYTES: int = 512 * 2**20
MAX_FILE_ENV = "AUDITMI_MAX_FILE_MB"

class ImageLoadError(InputError):
    """A file that cannot be used as an image.

    It is an :class:`auditmi.errors.InputError` (exit code 2) so that a single bad file given
    directly to a command produces a clean message; :func:`load_many` turns it into a
    :class:`Skipped` entry instead.

    Attributes:
        reason: A short human sentence saying what is wrong, e.g.
            ``"truncated or corrupt image data (image file is truncated)"``.
        path: The file concerned, when known.
    """

    def __init__(self, reason: str, path: Path | None = None) -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path is not None else reason)


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image together with the evidence needed to identify its file.

    Attributes:
        path: The file it was read from.
        sha256: Hex SHA-256 of the file's bytes, so a third party can verify the file.
        pixels: ``uint8`` array of shape ``(H, W, 3)``, RGB, EXIF orientation applied, possibly
            downscaled (see ``max_side`` in :func:`decode`).
        original_size: ``(width, height)`` after the EXIF transpose, before any downscaling.
    """

    path: Path
    sha256: str
    pixels: np.ndarray = field(repr=False)
    original_size: tuple[int, int]


# --------------------------------------------------------------------------------------------
# Reading and decoding
# --------------------------------------------------------------------------------------------


def read_and_hash(path: Path) -> tuple[bytes, str]:
    """Read a file and hash its bytes.

    The bytes that are hashed are exactly the bytes that are decoded (one read), so the SHA-256
    in the evidence identifies what the encoder was shown.

    Args:
        path: The file to read.

    Returns:
        ``(data, sha256_hex)``.

    Raises:
        ImageLoadError: The file is missing, a broken symlink, a folder, not a regular file (a
            pipe would block forever), or cannot be read (e.g. ``"cannot read file: permission
            denied"``).
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        if os.path.islink(path):
            raise ImageLoadError("cannot read file: broken symbolic link", path) from exc
        raise ImageLoadError("cannot read file: it does not exist", path) from exc
    except OSError as exc:
        raise ImageLoadError(f"cannot read file: {os_reason(exc)}", path) from exc
    if stat.S_ISDIR(st.st_mode):
        raise ImageLoadError("cannot read file: it is a folder, not a file", path)
    if not stat.S_ISREG(st.st_mode):
        raise ImageLoadError(
            "cannot read file: not a regular file (a pipe, socket or device)", path
        )
    if st.st_size == 0:
        raise ImageLoadError("empty file (0 bytes)", path)
    limit = max_file_bytes()
    if st.st_size > limit:
        raise ImageLoadError(
            f"file too large: {st.st_size / 2**20:,.0f} MiB exceeds the {limit / 2**20:,.0f} MiB limit for one "
            f"image (set {MAX_FILE_ENV} to raise it)",
            path,
        )
    try:
        # The header first: a file that is not an image, or whose pixels could never be
        # decoded, is refused after reading a few bytes instead of all of them. (Its own open:
        # Pillow may close the file object it was given. Decoding checks the header again.)
        with open(path, "rb") as fh:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    _open_checked(fh).close()
            except ImageLoadError as exc:
                raise ImageLoadError(exc.reason, path) from exc.__cause__
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ImageLoadError(f"cannot read file: {os_reason(exc)}", path) from exc
    return data, hashlib.sha256(data).hexdigest()


def max_file_bytes() -> int:
    """Largest file read as one image: :data:`MAX_FILE_BYTES`, or ``$AUDITMI_MAX_FILE_MB`` MiB.

    Raises:
        InputError: ``$AUDITMI_MAX_FILE_MB`` is not a positive number.
    """
    raw = os.environ.get(MAX_FILE_ENV, "").strip()
    if not raw:
        return MAX_FILE_BYTES
    try:
        mb = float(raw)
    except ValueError:
        mb = float("nan")
    if not mb > 0 or mb == float("inf"):
        raise InputError(f"{MAX_FILE_ENV}={raw!r} is not a positive number of MiB; unset it or set e.g. {MAX_FILE_ENV}=2048.")
    return int(mb * 2**20)


def _open_checked(fp: Any) -> Image.Image:
    """Open an image lazily (its header only) and refuse what must never be decoded.

    Call it inside ``warnings.catch_warnings`` with ``DecompressionBombWarning`` as an error.

    Raises:
        ImageLoadError: not an image, a corrupt header, a zero-size image or a decompression bomb.
    """
    try:
        im = Image.open(fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(f"image too large: {_first_line(exc)}") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(
            "not an image, or an image format that cannot be read "
            f"(supported: {', '.join(sorted(SUPPORTED_EXTENSIONS))})"
        ) from exc
    except MemoryError as exc:
        raise ImageLoadError("not enough memory to decode the image") from exc
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on corrupt headers
        raise ImageLoadError(f"corrupt image header ({_first_line(exc)})") from exc
    width, height = im.size
    limit = MAX_PIXELS  # module global read at call time (monkeypatchable)
    if width <= 0 or height <= 0:
        im.close()
        raise ImageLoadError(f"image has zero size ({width}x{height} pixels)")
    if width * height > limit:
        im.close()  # checked before load(): a bomb must never be decoded
        raise ImageLoadError(_bomb_reason(width, height, limit))
    return im


def _bomb_reason(width: int, height: int, limit: int) -> str:
    return (
        f"image too large: {width}x{height} = {width * height:,} pixels exceeds the "
        f"decompression-bomb limit of {limit:,} pixels"
    )


def decode(data: bytes, max_side: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode image bytes into an upright 8-bit RGB array.

    The image is loaded completely, so truncated files are detected (this function never relies
    on ``ImageFile.LOAD_TRUNCATED_IMAGES``). For animated GIF/WebP and multi-page TIFF the first
    frame is used. The EXIF orientation is applied. Pixel modes are converted with
    ``Image.convert("RGB")`` semantics (alpha is dropped, not composited; palette and CMYK go
    through Pillow's conversions), as torchvision's default loader does, except high-bit-depth
    modes which are rescaled instead of clipped:

    * ``I;16``, ``I;16L``, ``I;16B``, ...: full range ``0..65535`` maps to ``0..255``.
    * ``I`` (32-bit integer): values within ``0..255`` are used as they are, values within
      ``0..65535`` are treated as 16-bit, anything else is min-max normalised.
    * ``F`` (float): values within ``0..1`` are scaled by 255, values within ``0..255`` are used as
      they are, anything else is min-max normalised; NaN becomes 0.

    No Pillow warning escapes this function.

    Args:
        data: The encoded file contents.
        max_side: If given, downscale (antialiased bicubic) so that the *shorter* side is at most
            ``max_side`` pixels, keeping the aspect ratio. Images are never upscaled.

    Returns:
        ``(pixels, original_size)``: a ``uint8`` ``(H, W, 3)`` array and the ``(width, height)``
        after the EXIF transpose but before downscaling.

    Raises:
        ImageLoadError: Empty data, not an image, truncated or corrupt data, a zero-size image, a
            decompression bomb (more than :data:`MAX_PIXELS` pixels) or an unsupported pixel mode.
        InputError: ``max_side`` is not a positive integer.
    """
    _check_max_side(max_side)
    if not data:
        raise ImageLoadError("empty file (0 bytes)")

    # warnings.catch_warnings is process-global state: decode images from one thread at a time.
    with warnings.catch_warnings():
        # Pillow warns about e.g. palette transparency or odd EXIF; none of that is the user's
        # business. Its DecompressionBombWarning, however, is turned into an error and reported.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im = _open_checked(io.BytesIO(data))
        with im:
            try:
                # First frame of animated GIF/WebP and multi-page TIFF: a freshly opened image is
                # positioned on frame 0, and load() decodes only that frame, but all of it.
                im.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ImageLoadError(f"image too large: {_first_line(exc)}") from exc
            except MemoryError as exc:
                raise ImageLoadError("not enough memory to decode the image") from exc
            except Exception as exc:  # noqa: BLE001 - OSError, SyntaxError, struct.error...
                raise ImageLoadError(
                    f"truncated or corrupt image data ({_first_line(exc)})"
                ) from exc

            orientation = exif_orientation(im)
            try:
                rgb = to_rgb(im)
            except UnsupportedMode as exc:
                cause = exc.__cause__ or exc
                raise ImageLoadError(f"unsupported pixel mode {im.mode!r} ({_first_line(cause)})") from cause
            except Exception as exc:  # noqa: BLE001
                raise ImageLoadError(
                    f"cannot convert pixel mode {im.mode!r} to RGB ({_first_line(exc)})"
                ) from exc

        # Same transposes as ImageOps.exif_transpose, applied after the mode conversion so they
        # work identically for every mode (and with orientation read before convert() drops it).
        if orientation in ORIENTATION_TRANSPOSE:
            rgb = rgb.transpose(ORIENTATION_TRANSPOSE[orientation])
        original_size = (rgb.width, rgb.height)
        if max_side is not None:
            rgb = downscale(rgb, int(max_side))
        # A real copy: np.asarray on a PIL image is a read-only view, and torch.from_numpy warns
        # on (and cannot safely share) non-writable arrays.
        pixels = np.array(rgb, dtype=np.uint8, copy=True, order="C")
    if pixels.ndim != 3 or pixels.shape[2] != 3:  # pragma: no cover - defensive
        raise ImageLoadError(f"unexpected decoded shape {pixels.shape}")
    return pixels, original_size


def _check_max_side(max_side: object) -> None:
    if max_side is None:
        return
    if not is_int(max_side) or max_side < 1:
        raise InputError(
            f"max_side must be a positive whole number of pixels or None, got {max_side!r}."
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_image(path: Path, max_side: int | None = None) -> LoadedImage:
    """Read, hash and decode one image file.

    Args:
        path: The image file.
        max_side: Optional downscaling limit for the shorter side (see :func:`decode`).

    Returns:
        The :class:`LoadedImage`.

    Raises:
        ImageLoadError: The file cannot be read or decoded; ``.reason`` says why.
    """
    path = Path(path)
    data, digest = read_and_hash(path)
    try:
        pixels, original_size = decode(data, max_side=max_side)
    except ImageLoadError as exc:
        raise ImageLoadError(exc.reason, path) from exc.__cause__
    return LoadedImage(path=path, sha256=digest, pixels=pixels, original_size=original_size)


def load_many(
    paths: Sequence[Path],
    max_side: int | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[LoadedImage], list[Skipped]]:
    """Load many images; files that cannot be used are skipped, with a reason.

    All pixels are kept in memory, so pass ``max_side`` for large collections of big photos.

    Args:
        paths: Image files, e.g. ``discover(...).images``.
        max_side: Optional downscaling limit for the shorter side (see :func:`decode`).
        progress: Optional callback called as ``progress(done, total)`` after each file.

    Returns:
        ``(loaded, skipped)``, each in the order of ``paths``.

    Raises:
        InputError: ``max_side`` is not a positive integer (raised before any file is read).
    """
    _check_max_side(max_side)
    loaded: list[LoadedImage] = []
    skipped: list[Skipped] = []
    total = len(paths)
    for done, path in enumerate(paths, start=1):
        try:
            loaded.append(load_image(Path(path), max_side=max_side))
        except ImageLoadError as exc:
            skipped.append(Skipped(path=Path(path), reason=exc.reason))
        if progress is not None:
            progress(done, total)
    return loaded, skipped
