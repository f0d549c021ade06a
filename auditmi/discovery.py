"""Finding the image files named by the user's paths (files and folders, searched recursively).

Nothing here opens a file: discovery only lists folders and looks at names and file types, so a
pipe, a device or a huge file costs nothing here. What is left out is accounted for: files with
other extensions, hidden files, special files and folders that cannot be listed each come back
with the reason, so the report can say what was not looked at.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from auditmi.errors import InputError

#: File extensions picked up when searching a folder (compared lower-cased).
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)


@dataclass(frozen=True)
class Skipped:
    """A file (or folder) that was not used, and why."""

    path: Path
    reason: str


@dataclass
class Discovery:
    """The result of :func:`discover`.

    Attributes:
        images: Files to try to load (sorted, deduplicated).
        ignored: Files found while searching folders that were left out because their extension is
            not in :data:`SUPPORTED_EXTENSIONS` (or because they are not regular files).
        hidden: Hidden files and folders (names starting with ``.``) that were not entered.
        unreadable: Sub-folders that could not be listed, with the reason; the search goes on
            without them.
    """

    images: list[Path]
    ignored: list[Path]
    hidden: list[Path] = field(default_factory=list)
    unreadable: list[Skipped] = field(default_factory=list)

    def ignored_counts(self) -> dict[str, int]:
        """How many files were left out, by reason (``"hidden"``, ``"no extension"``,
        ``"extension .heic"``, ``"not a regular file"``), most frequent first."""
        counts: dict[str, int] = {}
        for p in self.ignored:
            if not os.path.isfile(p) and os.path.lexists(p) and not os.path.islink(p):
                key = "not a regular file"
            elif p.suffix:
                key = f"extension {p.suffix.lower()}"
            else:
                key = "no extension"
            counts[key] = counts.get(key, 0) + 1
        if self.hidden:
            counts["hidden"] = len(self.hidden)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_EXTENSIONS


def _is_hidden(name: str) -> bool:
    # ".DS_Store", ".git", AppleDouble "._IMG_001.jpg" files, editors' swap files ...
    return name.startswith(".")


def os_reason(exc: OSError) -> str:
    """A short lower-case reason for an OS error (``"permission denied"``)."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "it does not exist"
    if isinstance(exc, IsADirectoryError):
        return "it is a folder"
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


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
    (names starting with ``.``) found while searching are skipped (and counted). Files found in
    folders whose extension is not supported go to ``ignored``. A file given explicitly is always
    included in ``images`` whatever its extension: the user asked for it, and decoding decides. A
    sub-folder that cannot be listed is skipped with the reason; a folder given explicitly that
    cannot be listed is an error.

    Returned paths are absolute but keep the symlinks the user went through (reports show the
    names the user knows); duplicates are detected on the fully resolved path.

    Raises:
        InputError: A path does not exist, is neither a file nor a folder, or a folder given
            explicitly cannot be listed.
    """
    images: dict[str, Path] = {}
    ignored: dict[str, Path] = {}
    hidden: list[Path] = []
    unreadable: list[Skipped] = []

    def add(target: dict[str, Path], path: Path) -> None:
        key = os.path.realpath(path)
        target.setdefault(key, path)

    for raw in paths:
        given = Path(raw).expanduser()
        path = check_exists(raw)
        if path.is_dir():
            for found, supported in _walk(path, hidden, unreadable):
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
    return Discovery(images=sorted(images.values()), ignored=sorted(ignored.values()),
                     hidden=sorted(set(hidden)), unreadable=sorted(set(unreadable), key=lambda s: s.path))


def _walk(root: Path, hidden: list[Path], unreadable: list[Skipped]) -> Iterable[tuple[Path, bool]]:
    """Yield ``(file, has_supported_extension)`` for every non-hidden file under ``root``.

    Hidden entries go to ``hidden`` and sub-folders that cannot be listed to ``unreadable``.
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
            ident = (st.st_dev, st.st_ino)
            if ident in visited:  # symlink loop or two links to the same folder
                continue
            visited.add(ident)
            with os.scandir(folder) as entries:
                listing = sorted(entries, key=lambda e: e.name)
        except OSError as exc:  # unreadable, or vanished between listing and visiting
            if folder == root:
                raise InputError(
                    f"cannot read folder {folder}: {os_reason(exc)}; fix its permissions or pass "
                    "only the folders you want audited."
                ) from exc
            unreadable.append(Skipped(folder, f"folder not searched: {os_reason(exc)}"))
            continue
        for entry in listing:
            path = Path(entry.path)
            if _is_hidden(entry.name):
                hidden.append(path)
                continue
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
