"""Issue 14 items 2 and 3: suspects that overlap the reference, and duplicate images.

Runs the scan job in this process (``run_scan``) on tiny noise images with the shared tiny
calibration bundle and its shadow encoder (tests/e2e_support.py).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from auditmi.errors import InputError
from auditmi.jobs.scan import ScanOptions, ScanResult, run_scan
from auditmi.report import render_html, scan_report, validate_report

from e2e_support import (  # noqa: F401  (``calibrated`` is a fixture)
    Calibrated,
    calibrated,
    invoke_in_process,
    make_noise_images,
)


def _scan(cal: Calibrated, suspects: list[Path], reference: list[Path], cache: Path) -> ScanResult:
    opts = ScanOptions(encoder=str(cal.encoder), calibration=cal.bundle, reference=list(reference), device="cpu", workers=0,
                       cache_dir=cache)
    result = run_scan(suspects, opts)
    validate_report(scan_report(result))  # the new fields fit the schema
    return result


def _copies(src: list[Path], folder: Path, n: int) -> None:
    """``n`` copies of each file, named so that the first copy of image i sorts before image i+1."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(src):
        for j in range(n):
            shutil.copyfile(p, folder / f"a{i:04d}_{j:02d}.png")


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sets")
    ten = make_noise_images(root / "ten", 10, seed=11, prefix="a")
    _copies(ten, root / "ten_x10", 10)
    ref = make_noise_images(root / "ref", 20, seed=12, prefix="r")
    _copies(ref, root / "ref_x3", 3)
    return {"root": root, "ten": root / "ten", "ten_x10": root / "ten_x10", "ref": root / "ref", "ref_x3": root / "ref_x3"}


# ---- item 3: duplicates count once


def test_ten_images_with_ten_copies_each_test_like_the_ten_images(calibrated: Calibrated, sets: dict[str, Path]) -> None:
    cache = sets["root"] / "cache"
    alone = _scan(calibrated, [sets["ten"]], [sets["ref"]], cache)
    copied = _scan(calibrated, [sets["ten_x10"]], [sets["ref"]], cache)
    a, c = alone.statistics, copied.statistics
    assert a.rank_test is not None and c.rank_test is not None
    assert c.rank_test.p_value == a.rank_test.p_value and c.rank_test.auc == a.rank_test.auc
    assert c.rank_test.n_suspects == 10
    assert a.shift_check is not None and c.shift_check is not None
    assert (c.shift_check.p_value, c.shift_check.auc, c.shift_check.distinguishable) == (
        a.shift_check.p_value, a.shift_check.auc, a.shift_check.distinguishable)
    assert c.shift_check.n_suspects == 10
    assert (c.n_flagged, c.n_bh_flagged, c.used_fraction, c.power) == (a.n_flagged, a.n_bh_flagged, a.used_fraction, a.power)
    assert copied.verdict.label is alone.verdict.label and copied.verdict.p_value == alone.verdict.p_value
    # still reported: every path has its row, the copies are listed, the distinct count is said
    assert len(copied.images) == 100 and copied.n_duplicates == 90 and copied.n_distinct == 10
    assert sorted(len(g) for g in copied.duplicates) == [10] * 10
    rep = scan_report(copied)
    assert rep["aggregate"]["n_distinct"] == 10 and rep["aggregate"]["n_duplicates"] == 90 and len(rep["images"]) == 100
    assert rep["aggregate"]["fraction_flagged"] == scan_report(alone)["aggregate"]["fraction_flagged"]
    # each copy gets its image's p-value
    by_sha = {r.sha256: r.p_value for r in alone.images}
    assert all(r.p_value == by_sha[r.sha256] for r in copied.images)


def test_duplicate_reference_images_count_once(calibrated: Calibrated, sets: dict[str, Path]) -> None:
    cache = sets["root"] / "cache"
    once = _scan(calibrated, [sets["ten"]], [sets["ref"]], cache)
    thrice = _scan(calibrated, [sets["ten"]], [sets["ref_x3"]], cache)
    assert thrice.statistics.rank_test is not None and once.statistics.rank_test is not None
    assert thrice.statistics.rank_test.n_reference == 20
    assert thrice.statistics.rank_test.p_value == once.statistics.rank_test.p_value
    assert thrice.reference is not None and thrice.reference.n_distinct == 20


def test_duplicates_count_once_in_the_reference_free_binomial_test(calibrated: Calibrated, sets: dict[str, Path]) -> None:
    cache = sets["root"] / "cache"
    alone = _scan(calibrated, [sets["ten"]], [], cache)
    copied = _scan(calibrated, [sets["ten_x10"]], [], cache)
    assert alone.statistics.binomial_test is not None and copied.statistics.binomial_test is not None
    assert copied.statistics.binomial_test == alone.statistics.binomial_test
    assert copied.statistics.binomial_test.n_total == 10


# ---- item 2: suspects that are also reference images


def test_a_suspect_folder_containing_the_reference_leaves_the_reference_out(calibrated: Calibrated, sets: dict[str, Path]) -> None:
    root = sets["root"] / "parent"
    shutil.copytree(sets["ten"], root)
    shutil.copytree(sets["ref"], root / "ref")
    cache = sets["root"] / "cache"
    nested = _scan(calibrated, [root], [root / "ref"], cache)
    plain = _scan(calibrated, [sets["ten"]], [sets["ref"]], cache)
    assert nested.overlap is not None and nested.overlap.n_same_file == 20 and nested.overlap.n_same_content == 0
    assert "left out of the suspects" in nested.overlap.reason
    assert nested.statistics.rank_test is not None and plain.statistics.rank_test is not None
    assert nested.statistics.rank_test.n_suspects == 10 and nested.statistics.rank_test.n_reference == 20
    assert nested.statistics.rank_test.p_value == plain.statistics.rank_test.p_value
    assert len(nested.images) == 10
    rep = scan_report(nested)
    assert rep["overlap"]["n_excluded"] == 20 and len(rep["overlap"]["paths"]) == 20
    assert scan_report(plain)["overlap"] is None
    page = render_html(rep, thumbnails=False)
    assert "left out of the suspects" in page and "20 suspect image(s) are also in the reference" in page


def test_reference_images_under_other_names_are_left_out_of_the_suspects(calibrated: Calibrated, sets: dict[str, Path]) -> None:
    mixed = sets["root"] / "mixed"
    shutil.copytree(sets["ten"], mixed)
    refs = sorted(sets["ref"].glob("*.png"))[:3]
    for i, p in enumerate(refs):
        shutil.copyfile(p, mixed / f"zz_renamed_{i}.png")
    res = _scan(calibrated, [mixed], [sets["ref"]], sets["root"] / "cache")
    assert res.overlap is not None and res.overlap.n_same_content == 3 and res.overlap.n_same_file == 0
    assert {p.name for p in res.overlap.paths} == {f"zz_renamed_{i}.png" for i in range(3)}
    assert res.statistics.rank_test is not None and res.statistics.rank_test.n_suspects == 10


def test_the_same_folder_as_suspects_and_reference_is_refused(calibrated: Calibrated, sets: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="also a reference image"):
        run_scan([sets["ref"]], ScanOptions(encoder=str(calibrated.encoder), calibration=calibrated.bundle, reference=[sets["ref"]],
                                            device="cpu", workers=0, use_cache=False))
    proc = invoke_in_process("scan", sets["ref"], "-e", calibrated.encoder, "-c", calibrated.bundle, "--reference", sets["ref"],
                             "--device", "cpu", "--quiet", "--no-cache")
    assert proc.returncode == 2 and "also a reference image" in " ".join(proc.stderr.split()), proc.stderr


def test_the_same_images_as_reference_under_other_names_are_refused(calibrated: Calibrated, sets: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="also a reference image"):
        _scan(calibrated, [sets["ref_x3"]], [sets["ref"]], sets["root"] / "cache")


@pytest.mark.parametrize("command", ["evaluate", "calibrate"])
def test_members_and_non_members_with_images_in_common_are_refused(command: str, calibrated: Calibrated, sets: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    common = ["--members", sets["ten"], "--non-members", sets["ten"], "--device", "cpu", "--quiet"]
    if command == "evaluate":
        args = ["evaluate", "-e", calibrated.encoder, "-c", calibrated.bundle, *common, "--no-cache"]
    else:
        args = ["calibrate", "--shadow-encoder", calibrated.encoder, "--out", tmp_path / "b", "--views", "4", *common]
    proc = invoke_in_process(*args)
    msg = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "10 member image(s) are also non-member image(s)" in msg, proc.stderr
    assert not (tmp_path / "b").exists()
    # the same content under other names: refused after hashing
    _copies(sorted(sets["ten"].glob("*.png")), tmp_path / "renamed", 1)
    args = [str(a) for a in args]
    args[args.index("--non-members") + 1] = str(tmp_path / "renamed")
    proc = invoke_in_process(*args)
    msg = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "have the same content as non-member image(s)" in msg, proc.stderr


def test_calibrate_counts_each_shadow_image_once_and_says_how_many_copies_it_dropped(calibrated: Calibrated, sets: dict[str, Path],
                                                                                      tmp_path: Path) -> None:
    """Ten members with ten copies each and twenty non-members with three more copies each calibrate
    exactly like the distinct images: copies would otherwise weigh double in the fit and the held-out rates."""
    import json

    def calibrate(out: Path, members: list[Path], non_members: list[Path]) -> tuple[dict, str]:
        proc = invoke_in_process("calibrate", "--shadow-encoder", calibrated.encoder, "--out", out, "--views", "4", "--attacks", "T",
                                 "--members", *members, "--non-members", *non_members, "--device", "cpu", "--quiet", "--json", "-",
                                 cache_dir=tmp_path / "cache")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout), " ".join(proc.stderr.split())

    alone, _ = calibrate(tmp_path / "alone", [sets["ten"]], [sets["ref"]])
    copied, said = calibrate(tmp_path / "copied", [sets["ten_x10"]], [sets["ref"], sets["ref_x3"]])
    assert copied["duplicates_dropped"] == {"members": 90, "non_members": 60} and alone["duplicates_dropped"] == {}
    assert "150 duplicate shadow image(s) (same content as another) counted once: 90 in members, 60 in non-members" in said
    assert copied["heldout_metrics"] == alone["heldout_metrics"]
    meta = json.loads((tmp_path / "copied" / "calibration.json").read_text())
    assert (meta["n_shadow_members"], meta["n_shadow_non_members"]) == (10, 20)


def test_evaluate_counts_each_image_once(calibrated: Calibrated, sets: dict[str, Path], tmp_path: Path) -> None:
    import json

    reports = {}
    for name, members in (("alone", [sets["ten"]]), ("copied", [sets["ten_x10"]])):
        proc = invoke_in_process("evaluate", "-e", calibrated.encoder, "-c", calibrated.bundle, "--members", *members,
                                 "--non-members", sets["ref"], "--device", "cpu", "--quiet", "--json", tmp_path / f"{name}.json",
                                 cache_dir=tmp_path / "cache")
        assert proc.returncode == 0, proc.stderr
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert reports["copied"]["counts"] == {"members": 10, "non_members": 20, "skipped": 0, "duplicates": 90}
    assert reports["copied"]["metrics"] == reports["alone"]["metrics"]


def test_shadow_data_copies_are_split_once_and_counted(sets: dict[str, Path]) -> None:
    from auditmi.jobs.calibrate import _split_by_hash

    paths = sorted(sets["ten"].glob("*.png")) + sorted(sets["ten_x10"].glob("*.png"))
    copies: list[Path] = []
    mem, non, mh, nh = _split_by_hash(paths, 0.5, 0, [], copies)
    assert len(mem) + len(non) == 10 and not set(mh) & set(nh) and len(copies) == 100


# ---- item 4 end to end: four reference images cannot give likely-used


def test_four_reference_images_give_inconclusive_and_say_why(calibrated: Calibrated, sets: dict[str, Path]) -> None:
    four = sets["root"] / "four"
    four.mkdir()
    for p in sorted(sets["ref"].glob("*.png"))[:4]:
        shutil.copyfile(p, four / p.name)
    res = _scan(calibrated, [sets["ten"]], [four], sets["root"] / "cache")
    assert res.verdict.label.value == "inconclusive"
    assert "shift check was not run with" in res.verdict.reason
    assert "4 reference images (at least 20 reference images are needed)" in res.verdict.reason


def test_the_truth_file_is_not_an_ignored_file(tmp_path: Path) -> None:
    """--truth suspect/truth.csv is input; other non-image files are still counted as ignored."""
    from auditmi.jobs.scan import gather_images

    folder = tmp_path / "suspect"
    make_noise_images(folder, 2, seed=31)
    (folder / "truth.csv").write_text("file,member\nimg0000.png,1\n")
    (folder / "notes.csv").write_text("x\n")
    (folder / "readme.txt").write_text("x\n")
    opts = ScanOptions(encoder="-", calibration="-", truth=folder / "truth.csv")
    counts = {i.reason: i.count for i in gather_images([folder], opts).ignored}
    assert counts == {"extension .csv": 1, "extension .txt": 1}
    counts = {i.reason: i.count for i in gather_images([folder], ScanOptions(encoder="-", calibration="-")).ignored}
    assert counts == {"extension .csv": 2, "extension .txt": 1}


def test_an_fpr_finer_than_the_reference_resolves_is_said_not_hidden(calibrated: Calibrated, sets: dict[str, Path], tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """With EncoderMI-R the --fpr threshold is the reference's conformal quantile: 32 reference images
    cannot resolve 0.02 (it needs 49), so nothing is flagged. The terminal and the HTML say why,
    instead of a threshold of 1.8e308 and an "expected FPR 0.000"."""
    from rich.console import Console

    import auditmi.cli.scan as cli_scan

    ref = tmp_path / "ref32"
    make_noise_images(ref, 32, seed=41, prefix="r")
    opts = ScanOptions(encoder=str(calibrated.encoder), calibration=calibrated.bundle, reference=[ref], device="cpu", workers=0,
                       cache_dir=sets["root"] / "cache", fpr=0.02)
    result = run_scan([sets["ten"]], opts)
    assert result.score is not None and result.score.calibrated and result.score.threshold is not None
    note = result.score.threshold["note"]
    assert "32 reference images cannot resolve a false-positive rate of 0.02: at least 49 are needed" in note
    console = Console(width=300, record=True, color_system=None)
    monkeypatch.setattr(cli_scan, "out", console)
    cli_scan.print_report(result, 0)
    text = console.export_text()
    assert f"flagged as members 0 of 10 distinct: {note}" in " ".join(text.split()) and "1.798e+308" not in text
    page = render_html(scan_report(result), thumbnails=False)
    assert note in page
    # The histogram has no threshold line at 1.8e308 (it made every coordinate NaN).
    svg = page[page.index("<svg"):page.rindex("</svg>")]
    assert not re.search(r"\bnan\b", svg, re.IGNORECASE)
