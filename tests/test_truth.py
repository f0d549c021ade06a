"""Tests for `scan --truth`: matching truth entries to scanned files by name or relative path."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditmi.errors import InputError
from auditmi.truth import compare, read_truth


def _rows(*rows: tuple[str, str]) -> list[tuple[str, bool]]:
    """(path, flagged) as the scan passes its decisions to ``compare``."""
    return [(p, d == "member") for p, d in rows]


def _truth(tmp_path: Path, text: str) -> dict[str, int]:
    f = tmp_path / "truth.csv"
    f.write_text(text)
    return read_truth(f)


def test_bare_names_match_files_in_any_subfolder(tmp_path: Path) -> None:
    t = _truth(tmp_path, "file,member\nx.png,1\ny.png,0\nmissing.png,1\n")
    s = compare(_rows(("/scan/a/x.png", "member"), ("/scan/b/y.png", "member"), ("/scan/z.png", "non-member")), t)
    assert (s["n_matched"], s["true_positives"], s["false_positives"]) == (2, 1, 1)
    assert s["n_unmatched_truth_entries"] == 1


def test_a_bare_name_shared_by_two_files_is_refused(tmp_path: Path) -> None:
    t = _truth(tmp_path, "x.png,1\n")
    with pytest.raises(InputError, match="'x.png' matches 2 scanned files"):
        compare(_rows(("/scan/a/x.png", "member"), ("/scan/b/x.png", "non-member")), t)


def test_relative_paths_tell_same_named_files_apart(tmp_path: Path) -> None:
    t = _truth(tmp_path, "file,member\na/x.png,1\n.\\b\\x.png,0\n")  # Windows separators and ./ are accepted
    s = compare(_rows(("/scan/a/x.png", "member"), ("/scan/b/x.png", "non-member")), t)
    assert (s["true_positives"], s["true_negatives"], s["false_positives"], s["false_negatives"]) == (1, 1, 0, 0)


def test_the_longest_matching_entry_wins(tmp_path: Path) -> None:
    t = _truth(tmp_path, "x.png,0\nsub/x.png,1\n")
    s = compare(_rows(("/scan/sub/x.png", "member"), ("/scan/other/x.png", "member")), t)
    # sub/x.png -> member (1, flagged: TP); other/x.png -> the bare entry (0, flagged: FP)
    assert (s["true_positives"], s["false_positives"], s["n_unmatched_truth_entries"]) == (1, 1, 0)


def test_contradictory_rows_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="both 0 and 1"):
        _truth(tmp_path, "x.png,0\n./x.png,1\n")


from e2e_support import Calibrated, calibrated, make_noise_images, run_cli  # noqa: E402,F401  (fixture)


def test_an_ambiguous_truth_file_does_not_lose_the_scan(calibrated: Calibrated, tmp_path: Path) -> None:
    import json

    make_noise_images(tmp_path / "imgs" / "a", 3, seed=1, prefix="x")
    make_noise_images(tmp_path / "imgs" / "b", 3, seed=2, prefix="x")  # same names, other pictures
    truth = tmp_path / "truth.csv"
    truth.write_text("x0000.png,1\n")
    p = run_cli("scan", tmp_path / "imgs", "-e", calibrated.encoder, "-c", calibrated.bundle, "--json", tmp_path / "r.json",
                "--truth", truth, "--device", "cpu", "--no-cache", "--quiet", cache_dir=tmp_path / "cache")
    assert p.returncode == 0, p.stderr
    assert "matches 2 scanned files" in " ".join(p.stderr.split())
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["images"]) == 6 and "matches 2 scanned files" in report["truth"]["error"]


def test_a_truth_file_that_is_not_utf8_text_is_a_user_error(tmp_path: Path) -> None:
    f = tmp_path / "truth.csv"
    f.write_bytes(b"\x00\xff\xfe garbage")
    with pytest.raises(InputError, match="is not a UTF-8 CSV text file"):
        read_truth(f)


def test_a_byte_order_mark_does_not_hide_the_first_row(tmp_path: Path) -> None:
    f = tmp_path / "truth.csv"
    f.write_bytes("x.png,1\ny.png,0\n".encode("utf-8-sig"))  # what spreadsheet programs save
    assert read_truth(f) == {"x.png": 1, "y.png": 0}
