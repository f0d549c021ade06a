"""Finding, reading, hashing and decoding the data owner's images.

Every image that enters an audit goes through :func:`load_image`, which

* reads the file once and hashes those exact bytes (SHA-256), so a third party can later check
  that the evidence refers to the very files that were scanned;
* decodes them fully with Pillow (a truncated or corrupt file is *skipped with a reason*, never
  silently padded with grey as ``ImageFile.LOAD_TRUNCATED_IMAGES`` would do);
* refuses decompression bombs before decoding them;
* applies the EXIF orientation and converts every pixel mode to 8-bit RGB.

The RGB conversion deliberately mirrors ``PIL.Image.convert("RGB")``, which is what torchvision's
default loader (``torchvision.datasets.folder.pil_loader``) does: a membership audit compares the
encoder's behaviour on the owner's images with its behaviour on images it was trained on, so the
pixels we feed it should be the pixels a typical training pipeline saw. The one exception is
high-bit-depth modes (``I``, ``I;16*``, ``F``), where ``convert`` *clips* to 0..255 (a 16-bit
photo becomes almost entirely white); those are rescaled instead.

Bad files never stop a batch: :func:`load_many` returns them as :class:`Skipped` entries with a
short human-readable reason that the CLI shows to the user.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from auditmi.errors import InputError

__all__ = [
    "MAX_PIXELS",
    "SUPPORTED_EXTENSIONS",
    "Discovery",
    "ImageLoadError",
    "LoadedImage",
    "Skipped",
    "decode",
    "discover",
    "load_image",
    "load_many",
    "read_and_hash",
]

#: File extensions picked up when searching a folder (compared lower-cased).
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)

#: Decompression-bomb limit in pixels (width * height), Pillow's default ``MAX_IMAGE_PIXELS``.
#: Larger images are skipped *before* their pixel data is decoded. Read at call time, so it can be
#: changed (or monkeypatched in tests) through this module.
MAX_PIXELS: int = 89_478_485

# EXIF "Orientation" tag (0x0112) -> the transpose that displays the image upright; the same table
# as PIL.ImageOps.exif_transpose.
_EXIF_ORIENTATION_TAG = 0x0112
_ORIENTATION_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


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
class Skipped:
    """A file that was not used, and why."""

    path: Path
    reason: str


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


@dataclass
class Discovery:
    """The result of :func:`discover`.

    Attributes:
        images: Files to try to load (sorted, deduplicated).
        ignored: Files found while searching folders that were left out because their extension is
            not in :data:`SUPPORTED_EXTENSIONS` (or because they are not regular files).
    """

    images: list[Path]
    ignored: list[Path]


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------


def _is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_EXTENSIONS


def _is_hidden(name: str) -> bool:
    # ".DS_Store", ".git", AppleDouble "._IMG_001.jpg" files, editors' swap files ...
    return name.startswith(".")


def check_exists(raw: str | Path) -> Path:
    """The absolute path of a user-given file or folder; :class:`InputError` if it does not exist.

    Cheap (one ``stat``): the CLI calls it before importing torch, so a typo fails at once.
    """
    given = Path(raw).expanduser()
    path = Path(os.path.abspath(given))
    if not path.exists():  # follows symlinks: a broken link "does not exist" either
        hint = " (it is a broken symbolic link)" if path.is_symlink() else ""
        raise InputError(
            f"{given} does not exist{hint}; check the spelling, or pass an existing image "
            "file or folder."
        )
    return path


def discover(paths: Sequence[str | Path]) -> Discovery:
    """Find the image files named by ``paths``.

    Each path is a file or a folder. Folders are searched recursively; symbolic links are followed
    but every real folder is visited once, so symlink loops terminate. Hidden files and folders
    (names starting with ``.``) found while searching are skipped. Files found in folders whose
    extension is not supported go to ``ignored``. A file given explicitly is always included in
    ``images`` whatever its extension: the user asked for it, and decoding decides.

    Returned paths are absolute but keep the symlinks the user went through (reports show the
    names the user knows); duplicates are detected on the fully resolved path.

    Args:
        paths: Files and/or folders.

    Returns:
        A :class:`Discovery` with sorted, deduplicated ``images`` and ``ignored`` lists.

    Raises:
        InputError: A path does not exist, is neither a file nor a folder, or a folder cannot be
            listed.
    """
    images: dict[str, Path] = {}
    ignored: dict[str, Path] = {}

    def add(target: dict[str, Path], path: Path) -> None:
        key = os.path.realpath(path)
        target.setdefault(key, path)

    for raw in paths:
        given = Path(raw).expanduser()
        path = check_exists(raw)
        if path.is_dir():
            for found, supported in _walk(path):
                add(images if supported else ignored, found)
        elif path.is_file():
            add(images, path)
        else:
            raise InputError(
                f"{given} is neither a regular file nor a folder (a pipe, socket or device?); "
                "pass image files or folders of images."
            )

    # A file given explicitly may also have been ignored while walking a folder: it wins.
    for key in images:
        ignored.pop(key, None)
    return Discovery(images=sorted(images.values()), ignored=sorted(ignored.values()))


def _walk(root: Path) -> Iterable[tuple[Path, bool]]:
    """Yield ``(file, has_supported_extension)`` for every non-hidden file under ``root``.

    Broken symlinks with a supported extension are yielded as images so that loading reports
    them as skipped (with a reason) rather than dropping them silently; other special files
    (pipes, sockets, devices) are reported as not supported, and are never opened.
    """
    visited: set[tuple[int, int]] = set()
    stack = [root]
    # Folders reached through a symlink are visited only once no real folder is left, so that a
    # file reachable both ways is reported under its real location.
    linked: list[Path] = []
    while stack or linked:
        folder = stack.pop() if stack else linked.pop()
        try:
            st = folder.stat()
        except OSError as exc:  # vanished or unreadable between listing and visiting
            raise InputError(f"cannot read folder {folder}: {_os_reason(exc)}.") from exc
        ident = (st.st_dev, st.st_ino)
        if ident in visited:  # symlink loop or two links to the same folder
            continue
        visited.add(ident)
        try:
            with os.scandir(folder) as entries:
                listing = sorted(entries, key=lambda e: e.name)
        except OSError as exc:
            raise InputError(
                f"cannot read folder {folder}: {_os_reason(exc)}; fix its permissions or pass "
                "only the folders you want audited."
            ) from exc
        for entry in listing:
            if _is_hidden(entry.name):
                continue
            path = Path(entry.path)
            try:
                if entry.is_dir(follow_symlinks=True):
                    (linked if entry.is_symlink() else stack).append(path)
                    continue
                is_file = entry.is_file(follow_symlinks=True)
            except OSError:
                is_file = False
            if is_file or entry.is_symlink() and not os.path.exists(path):
                yield path, _is_supported(path)
            else:
                yield path, False


# --------------------------------------------------------------------------------------------
# Reading and decoding
# --------------------------------------------------------------------------------------------


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "it does not exist"
    if isinstance(exc, IsADirectoryError):
        return "it is a folder"
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


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
        raise ImageLoadError(f"cannot read file: {_os_reason(exc)}", path) from exc
    if stat.S_ISDIR(st.st_mode):
        raise ImageLoadError("cannot read file: it is a folder, not a file", path)
    if not stat.S_ISREG(st.st_mode):
        raise ImageLoadError(
            "cannot read file: not a regular file (a pipe, socket or device)", path
        )
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ImageLoadError(f"cannot read file: {_os_reason(exc)}", path) from exc
    return data, hashlib.sha256(data).hexdigest()


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
    limit = MAX_PIXELS  # module global read at call time (monkeypatchable)

    # warnings.catch_warnings is process-global state: decode images from one thread at a time.
    with warnings.catch_warnings():
        # Pillow warns about e.g. palette transparency or odd EXIF; none of that is the user's
        # business. Its DecompressionBombWarning, however, is turned into an error and reported.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
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

        with im:
            width, height = im.size
            if width <= 0 or height <= 0:
                raise ImageLoadError(f"image has zero size ({width}x{height} pixels)")
            if width * height > limit:
                # Checked before load(): a bomb must never be decoded.
                raise ImageLoadError(_bomb_reason(width, height, limit))
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

            orientation = _exif_orientation(im)
            try:
                rgb = _to_rgb(im)
            except ImageLoadError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise ImageLoadError(
                    f"cannot convert pixel mode {im.mode!r} to RGB ({_first_line(exc)})"
                ) from exc

        # Same transposes as ImageOps.exif_transpose, applied after the mode conversion so they
        # work identically for every mode (and with orientation read before convert() drops it).
        if orientation in _ORIENTATION_TRANSPOSE:
            rgb = rgb.transpose(_ORIENTATION_TRANSPOSE[orientation])
        original_size = (rgb.width, rgb.height)
        if max_side is not None:
            rgb = _downscale(rgb, int(max_side))
        # A real copy: np.asarray on a PIL image is a read-only view, and torch.from_numpy warns
        # on (and cannot safely share) non-writable arrays.
        pixels = np.array(rgb, dtype=np.uint8, copy=True, order="C")
    if pixels.ndim != 3 or pixels.shape[2] != 3:  # pragma: no cover - defensive
        raise ImageLoadError(f"unexpected decoded shape {pixels.shape}")
    return pixels, original_size


def _check_max_side(max_side: object) -> None:
    if max_side is None:
        return
    if isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 1:
        raise InputError(
            f"max_side must be a positive whole number of pixels or None, got {max_side!r}."
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


def _exif_orientation(im: Image.Image) -> int:
    """EXIF orientation 1..8, or 1 when absent or unreadable (a broken EXIF block is not fatal)."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION_TAG, 1)
        return int(value)
    except Exception:  # noqa: BLE001 - malformed EXIF: show the image as stored
        return 1


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    gray = np.ascontiguousarray(gray, dtype=np.uint8)
    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))  # (H, W, 3) uint8: RGB


def _minmax(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert a loaded image of any mode to an 8-bit RGB image."""
    mode = im.mode
    if mode == "RGB":
        return im.copy()
    if mode.startswith("I;16"):
        # 16-bit grayscale: 65535 -> 255. np.asarray honours the byte order (I;16B is big-endian).
        values = np.asarray(im).astype(np.float64)
        return _gray_to_rgb(np.rint(values / 257.0))
    if mode == "I":
        values = np.asarray(im).astype(np.float64)
        lo, hi = values.min(), values.max()
        if lo >= 0 and hi <= 255:
            return _gray_to_rgb(values)
        if lo >= 0 and hi <= 65535:  # 16-bit data in a 32-bit container (PGM, some TIFFs)
            return _gray_to_rgb(np.rint(values / 257.0))
        return _gray_to_rgb(_minmax(values))
    if mode == "F":
        values = np.nan_to_num(np.asarray(im).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = values.min(), values.max()
        if lo >= 0 and hi <= 1.0:
            return _gray_to_rgb(np.rint(values * 255.0))
        if lo >= 0 and hi <= 255.0:
            return _gray_to_rgb(np.rint(values))
        return _gray_to_rgb(_minmax(values))
    # Everything else (1, L, LA, P, PA, RGBA, RGBX, CMYK, YCbCr, HSV, ...): exactly what
    # torchvision's pil_loader does, so pixels match what a training pipeline saw.
    try:
        return im.convert("RGB")
    except ValueError as exc:
        raise ImageLoadError(f"unsupported pixel mode {mode!r} ({_first_line(exc)})") from exc


def _downscale(im: Image.Image, max_side: int) -> Image.Image:
    """Shrink so the shorter side is ``max_side`` (never enlarge), keeping the aspect ratio."""
    width, height = im.size
    short = min(width, height)
    if short <= max_side:
        return im
    scale = max_side / short
    if width <= height:
        size = (max_side, max(1, round(height * scale)))
    else:
        size = (max(1, round(width * scale)), max_side)
    # BICUBIC in Pillow widens its kernel when shrinking, i.e. it is antialiased.
    return im.resize(size, Image.Resampling.BICUBIC)


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
