"""Known membership (``scan --truth``): read a ``file,member`` CSV and compare it with decisions."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from auditmi.errors import InputError


def read_truth(path: Path) -> dict[str, int]:
    """``file,member`` CSV (header optional) -> {file: 0/1}; a file is a name or a path relative
    to the scanned folder (``/`` or ``\\`` separators). UTF-8, with or without the byte-order mark
    spreadsheet programs write."""
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    except OSError as e:
        raise InputError(f"cannot read --truth {path}: {e}") from e
    except (UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"--truth {path} is not a UTF-8 CSV text file ({e}); save it as CSV (UTF-8) with 'file,member' rows.") from e
    truth: dict[str, int] = {}
    for r in rows:
        if len(r) < 2 or r[1].strip() not in {"0", "1"}:
            continue  # header or blank line
        key = "/".join(p for p in r[0].strip().replace("\\", "/").split("/") if p not in ("", "."))
        if key in truth and truth[key] != int(r[1].strip()):
            raise InputError(f"--truth {path} gives {key!r} both 0 and 1.")
        truth[key] = int(r[1].strip())
    if not truth:
        raise InputError(f"--truth {path} has no 'file,member' rows with member 0 or 1.")
    return truth


def compare(decisions: Iterable[tuple[str | Path, bool]], truth: dict[str, int]) -> dict[str, Any]:
    """Compare per-image decisions ``(path, flagged as member)`` with known membership.

    Each scanned image takes the truth entry that matches the longest tail of its path (so
    ``a/x.png`` beats ``x.png``). An entry that is the best match of two scanned files is
    ambiguous (two ``x.png`` in different subfolders) and refused: write their relative paths.

    Raises:
        InputError: An ambiguous truth entry.
    """
    lengths = sorted({k.count("/") + 1 for k in truth}, reverse=True)
    matched: dict[str, list[str]] = {}
    tp = fp = tn = fn = 0
    for path, pred in decisions:
        parts = Path(path).parts
        key = next((k for n in lengths if n <= len(parts) and (k := "/".join(parts[-n:])) in truth), None)
        if key is None:
            continue
        matched.setdefault(key, []).append(str(path))
        t = truth[key]
        tp += pred and t == 1
        fp += pred and t == 0
        tn += (not pred) and t == 0
        fn += (not pred) and t == 1
    for key, paths in matched.items():
        if len(paths) > 1:
            raise InputError(
                f"--truth entry {key!r} matches {len(paths)} scanned files ({', '.join(paths[:3])}"
                f"{', ...' if len(paths) > 3 else ''}); name them by their paths relative to the scanned folder."
            )
    n = tp + fp + tn + fn
    return {
        "n_matched": n, "n_unmatched_truth_entries": len(truth) - len(matched), "n_members": tp + fn, "n_non_members": tn + fp,
        "true_positives": tp, "false_positives": fp,
        "true_negatives": tn, "false_negatives": fn, "accuracy": (tp + tn) / n if n else None,
        "precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
        "false_positive_rate": fp / (fp + tn) if fp + tn else None,
    }

