"""Which images each test uses: suspects that are also reference images, and duplicate images.

Images are identified by the sha256 of their bytes (see :mod:`auditmi.images`). A set's tests must
count each distinct image once: ten copies of one image are one observation, not ten. An image
given both as a suspect and as a known non-member (reference) is a known non-member; for
``calibrate`` and ``evaluate``, an image given both as a member and as a non-member has two
contradictory labels, and is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from auditmi.errors import InputError
from auditmi.pipeline import FeatureSet

__all__ = ["Overlap", "Separated", "distinct", "duplicate_groups", "overlapping_files", "refuse_overlap", "separate"]


@dataclass(frozen=True)
class Overlap:
    """Suspect images that are also reference images, left out of the suspects."""

    paths: list[Path]  # the suspect paths left out
    n_same_file: int  # found by path (the same file given as suspect and reference)
    n_same_content: int  # found by sha256 (the same image under another name)

    @property
    def reason(self) -> str:
        """One sentence for the user."""
        return (f"{len(self.paths)} suspect image(s) are also in the reference ({self.n_same_file} the same file, "
                f"{self.n_same_content} the same content under another name); reference images are known non-members, "
                "so they were left out of the suspects and kept in the reference.")



def _resolved(p: Path) -> Path:
    try:
        return p.resolve()
    except (OSError, RuntimeError):  # a symlink loop or an unreadable parent: compare as given
        return p.absolute()


def overlapping_files(a: Sequence[Path], b: Sequence[Path]) -> list[Path]:
    """The paths of ``a`` that name the same file as a path of ``b`` (after resolving links)."""
    in_b = {_resolved(p) for p in b}
    return [p for p in a if _resolved(p) in in_b]


@dataclass(frozen=True)
class Separated:
    """Step 3b: the suspects as listed (overlap left out), the distinct images the tests use."""

    suspects: FeatureSet  # every usable suspect path except reference images (one row per path)
    tested: FeatureSet  # one row per distinct suspect image
    inverse: np.ndarray  # suspects row i -> tested row inverse[i]
    reference: FeatureSet | None  # one row per distinct reference image
    overlap: Overlap | None


def _subset(fs: FeatureSet, idx: Sequence[int] | np.ndarray) -> FeatureSet:
    return fs.take(idx)


def _distinct(fs: FeatureSet) -> tuple[FeatureSet, np.ndarray]:
    """The first row of each sha256, and for every row the index of its distinct image."""
    first: dict[str, int] = {}
    inverse = np.array([first.setdefault(r.sha256, len(first)) for r in fs.rows], dtype=np.int64)
    keep = np.zeros(len(first), dtype=np.int64)
    for i in range(len(fs.rows) - 1, -1, -1):
        keep[inverse[i]] = i
    return _subset(fs, keep), inverse


def distinct(fs: FeatureSet) -> FeatureSet:
    """One row per distinct image (sha256) of ``fs``: copies count once (the first path of each is kept)."""
    return _distinct(fs)[0]


def separate(fs: FeatureSet, rs: FeatureSet | None, same_file: Sequence[Path] = ()) -> Separated:
    """Step 3b: leave reference images out of the suspects, and keep one row per distinct image.

    A suspect with the sha256 of a reference image is a known non-member: it is left out of the
    suspects (and kept in the reference, whose validity as a sample of non-members does not
    change). Duplicates (same sha256) within a set count once in every test.

    Raises:
        InputError: When no suspect is left.
    """
    same_content: list[Path] = []
    if rs is not None:
        ref_sha = {r.sha256 for r in rs.rows}
        keep = [i for i, r in enumerate(fs.rows) if r.sha256 not in ref_sha]
        same_content = [r.path for r in fs.rows if r.sha256 in ref_sha]
        if not keep:
            raise InputError(f"every usable suspect image is also a reference image ({len(same_content)} by content, "
                             f"{len(same_file)} the same file): the suspects and the reference must be different images.")
        if same_content:
            fs = _subset(fs, keep)
    overlap = None
    if same_file or same_content:
        overlap = Overlap(paths=[*same_file, *same_content], n_same_file=len(same_file), n_same_content=len(same_content))
    tested, inverse = _distinct(fs)
    return Separated(fs, tested, inverse, _distinct(rs)[0] if rs is not None else None, overlap)


def duplicate_groups(fs: FeatureSet) -> list[list[Path]]:
    """Paths that share an image (sha256), groups of two or more."""
    by_sha: dict[str, list[Path]] = {}
    for r in fs.rows:
        by_sha.setdefault(r.sha256, []).append(r.path)
    return [g for g in by_sha.values() if len(g) > 1]


def refuse_overlap(a: Sequence[Path] | FeatureSet, b: Sequence[Path] | FeatureSet, what_a: str, what_b: str) -> None:
    """Refuse images given in both sets: by file (lists of paths) or by content (feature sets).

    Raises:
        InputError: Naming how many images overlap and the first few.
    """
    if isinstance(a, FeatureSet) and isinstance(b, FeatureSet):
        shas = {r.sha256 for r in b.rows}
        both = [r.path for r in a.rows if r.sha256 in shas]
        how = "have the same content as"
    else:
        assert not isinstance(a, FeatureSet) and not isinstance(b, FeatureSet)
        both = overlapping_files(a, b)
        how = "are also"
    if both:
        names = ", ".join(str(p) for p in both[:3]) + (", ..." if len(both) > 3 else "")
        raise InputError(f"{len(both)} {what_a} image(s) {how} {what_b} image(s) ({names}): an image cannot be both. "
                         f"Give {what_a} and {what_b} images as separate folders with no image in common.")
