"""``auditmi scan``: was this encoder trained on these images?"""

from __future__ import annotations

import csv
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from auditmi.cli.main import app, command_line, handle_errors
from auditmi.cli.ui import err, fmt, out, progress_bar
from auditmi.errors import EXIT_VERDICT, InputError


class FailOn(str, Enum):
    likely_used = "likely-used"
    inconclusive = "inconclusive"
    never = "never"


VERDICT_STYLE = {"likely-used": "bold white on red", "no-evidence": "bold white on green", "inconclusive": "bold black on yellow"}


def read_truth(path: Path) -> dict[str, int]:
    """``file,member`` CSV (header optional) -> {file: 0/1}; a file is a name or a path relative
    to the scanned folder (``/`` or ``\\`` separators)."""
    try:
        rows = list(csv.reader(path.read_text().splitlines()))
    except OSError as e:
        raise InputError(f"cannot read --truth {path}: {e}") from e
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


def truth_summary(report: dict[str, Any], truth: dict[str, int]) -> dict[str, Any]:
    """Compare per-image decisions (and the flag count) with known membership.

    Each scanned image takes the truth entry that matches the longest tail of its path (so
    ``a/x.png`` beats ``x.png``). An entry that is the best match of two scanned files is
    ambiguous (two ``x.png`` in different subfolders) and refused: write their relative paths.
    """
    lengths = sorted({k.count("/") + 1 for k in truth}, reverse=True)
    matched: dict[str, list[str]] = {}
    tp = fp = tn = fn = 0
    for row in report["images"]:
        parts = Path(row["path"]).parts
        key = next((k for n in lengths if n <= len(parts) and (k := "/".join(parts[-n:])) in truth), None)
        if key is None:
            continue
        matched.setdefault(key, []).append(row["path"])
        pred, t = row["decision"] == "member", truth[key]
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


class _Plain(Table):
    """A table whose cells are plain text: file names and reasons are never read as rich markup."""

    def add_row(self, *cells: str, **kw: Any) -> None:  # type: ignore[override]
        super().add_row(*(Text(c) for c in cells), **kw)


def print_report(report: dict[str, Any], show: int) -> None:
    """The human-readable report on stdout: verdict first, then numbers, then images."""
    v, a = report["verdict"], report["aggregate"]
    out.print(Panel(Text.assemble((f" {v['label'].upper()} ", VERDICT_STYLE.get(v["label"], "bold")), "\n\n" + v["reason"]), title="auditmi verdict", expand=False))
    t = _Plain(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("encoder", f"{report['encoder']['spec']}  ({report['encoder']['source']})")
    cal = report["calibration"]
    t.add_row("classifier", f"{cal['attack_name']} (held-out shadow AUC {fmt(cal['held_out_metrics'].get('roc_auc'))})")
    t.add_row("images scored", f"{a['n_scored']} of {a['n_images']} ({a['n_skipped']} skipped, {a['n_duplicates']} duplicates)")
    t.add_row("flagged as members", f"{a['n_flagged']} ({a['fraction_flagged']:.1%}) at threshold {a['decision_threshold']:.4g} ({a['threshold_kind']} threshold), "
              f"calibrated FPR {fmt(a['expected_fpr'])}, TPR {fmt(a.get('calibrated_tpr'))}")
    uf = a.get("used_fraction") or {}
    if uf.get("estimate") is not None:
        t.add_row("estimated fraction used", f"{uf['estimate']:.1%} (95% CI {fmt(uf.get('ci_low'), '.1%')} - {fmt(uf.get('ci_high'), '.1%')})")
    if a.get("rank_test"):
        r = a["rank_test"]
        t.add_row("rank test vs reference", f"p = {r['p_value']:.3g}, AUC {r['auc']:.3f} (95% CI {fmt(r['auc_ci'][0])}-{fmt(r['auc_ci'][1])}), "
                  f"{r['n_suspects']} suspects vs {r['n_reference']} reference")
        t.add_row("per-image flags (BH)", f"{a['n_bh_flagged']} at FDR {a['fdr']:g}")
    if a.get("binomial_test"):
        b = a["binomial_test"]
        t.add_row("binomial test", f"p = {b['p_value']:.3g} ({b['note']})")
    if a.get("shift_check"):
        t.add_row("shift check", a["shift_check"]["reason"])
    if a.get("power"):
        p = a["power"]
        need = p.get("n_suspects_needed")
        t.add_row("power", f"~{need} images needed for p < {p['alpha']:g} at 80% power" if need else (p.get("note") or "-"))
    tr = report.get("truth")
    if tr and "error" in tr:
        t.add_row("vs truth file", f"not compared: {tr['error']}")
    elif tr:
        t.add_row("vs truth file", f"{tr['true_positives']} of {tr['n_members']} known members flagged, {tr['false_positives']} of {tr['n_non_members']} "
                  f"known non-members flagged (accuracy {fmt(tr['accuracy'], '.1%')}, precision {fmt(tr['precision'], '.1%')}, recall {fmt(tr['recall'], '.1%')})")
    out.print(t)
    rows = sorted(report["images"], key=lambda r: -r["score"])
    if show and rows:
        it = _Plain(title=f"most member-like images (top {min(show, len(rows))} of {len(rows)})")
        for col in ("#", "image", "score", "P(member)", "decision", "p-value", "BH"):
            it.add_column(col, justify="right" if col not in {"image", "decision"} else "left")
        for i, r in enumerate(rows[:show], 1):
            it.add_row(str(i), Path(r["path"]).name, f"{r['score']:.4f}", f"{r['member_probability']:.3f}", r["decision"],
                       fmt(r["p_value"], ".3g"), "" if r["bh_flag"] is None else ("yes" if r["bh_flag"] else "no"))
        out.print(it)
    if report["skipped"]:
        st = _Plain(title=f"skipped files ({len(report['skipped'])})")
        st.add_column("set")
        st.add_column("file")
        st.add_column("reason")
        for s in report["skipped"]:
            st.add_row(s["set"], s["path"], s["reason"])
        out.print(st)


@app.command()
@handle_errors
def scan(
    images: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively) to audit.", show_default=False)],
    encoder: Annotated[str, typer.Option("--encoder", "-e", help="Encoder: alias (clip-vit-b32), open_clip:MODEL@TAG, open_clip:MODEL@/weights, an auditmi checkpoint folder, or a TorchScript file.")],
    calibration: Annotated[Path, typer.Option("--calibration", "-c", help="Calibration bundle folder written by `auditmi calibrate`.")],
    reference: Annotated[Optional[list[Path]], typer.Option("--reference", "-r", help="Images known NOT to be in the training data (repeatable). Enables the rank test, per-image p-values and the shift check.")] = None,
    attack: Annotated[Optional[str], typer.Option("--attack", "-a", help="Classifier: T (threshold), V (vector) or S (set). Default: the best on held-out shadow data.")] = None,
    views: Annotated[Optional[int], typer.Option("--views", "-n", help="Augmented views per image (default: the calibration's; must match it).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", help="Views per encoder pass (default: chosen for the device).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random views (results are reproducible from it).")] = 0,
    fpr: Annotated[Optional[float], typer.Option("--fpr", help="Flag images at this calibrated false-positive rate (e.g. 0.01) instead of the accuracy-optimal threshold.")] = None,
    fdr: Annotated[float, typer.Option("--fdr", help="False-discovery rate for per-image Benjamini-Hochberg flags (needs --reference).")] = 0.05,
    alpha: Annotated[float, typer.Option("--alpha", help="Significance level of the dataset-level verdict.")] = 0.05,
    json_out: Annotated[Optional[str], typer.Option("--json", help="Write the JSON report to FILE, or '-' for stdout (then nothing else is printed on stdout).")] = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="Write a self-contained HTML report to FILE.")] = None,
    truth: Annotated[Optional[Path], typer.Option("--truth", help="CSV 'file,member(0/1)' of known membership, to compare decisions with.")] = None,
    fail_on: Annotated[FailOn, typer.Option("--fail-on", help="Exit with code 5 when the verdict is likely-used (or, with 'inconclusive', likely-used or inconclusive).")] = FailOn.never,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache", help="Feature cache folder (default: the user cache dir, or $AUDITMI_CACHE_DIR).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")] = False,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Worker processes. On a Linux CPU each decodes, renders and embeds its share of images with one thread (default: one per core); on a GPU they decode (default: cores - 1). 0: everything in this process.")] = None,
    show: Annotated[int, typer.Option("--show", help="Rows of the per-image table printed on the terminal.")] = 20,
    engine: Annotated[str, typer.Option("--engine", help="local (this machine) or ray (the Ray cluster at $RAY_ADDRESS, else a Ray started here; needs auditmi[ray]). With ray, --workers is the number of embedding actors and --cache must be a folder every node sees.")] = "local",
    parquet: Annotated[Optional[Path], typer.Option("--parquet", help="Also write one row per scored image (path, sha256, score, p-value, flags, features, image statistics) to this Parquet file (needs pyarrow).")] = None,
    max_report_images: Annotated[int, typer.Option("--max-report-images", help="Most images listed in the JSON/HTML report (the highest scores); the aggregate always covers every image, --parquet lists them all.")] = 10_000,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Score IMAGES for membership in ENCODER's training data and print a verdict."""
    # Checks that need no torch run before importing it, so a typo fails at once; the scan
    # repeats them with the same functions.
    from auditmi._paths import check_rates, precheck
    from auditmi.engines import check_engine

    check_rates(fpr, fdr, alpha)
    check_engine(engine)
    if max_report_images < 0:
        raise InputError(f"--max-report-images must be 0 or more (got {max_report_images}).")
    precheck([*images, *(reference or [])])
    precheck(calibration=calibration)
    tr = read_truth(truth) if truth else None
    for dest in ([Path(json_out)] if json_out and json_out != "-" else []) + ([html] if html else []) + ([parquet] if parquet else []):
        if not dest.parent.is_dir():
            raise InputError(f"cannot write the report to {dest}: folder {dest.parent} does not exist.")
    from auditmi.audit import ScanOptions, run_scan
    from auditmi.report import InvalidReportError, validate_report, write_html, write_json

    opts = ScanOptions(encoder=encoder, calibration=calibration, attack=attack, views=views, batch_size=batch_size, device=device,
                       seed=seed, fpr=fpr, fdr=fdr, alpha=alpha, reference=list(reference or []), cache_dir=cache_dir,
                       use_cache=not no_cache, workers=workers, engine=engine, parquet=parquet)
    with progress_bar(not quiet) as cb:
        report = run_scan(images, opts, progress=cb, command=command_line())
    if tr is not None:
        try:
            report["truth"] = truth_summary(report, tr)
        except InputError as e:  # the scan itself is fine: report it, without the comparison
            report["truth"] = {"error": str(e)}
            err.print(Text.assemble(("warning: ", "yellow"), f"{e} The report is written without the truth comparison."))
    from auditmi.parquet import cap_image_list

    cap_image_list(report, max_report_images, parquet)  # after --truth, which compares every image
    try:
        validate_report(report)
    except InvalidReportError as e:
        # The report was built by auditmi itself: a schema mismatch is a bug (exit 1), not bad user
        # input (InvalidReportError is an InputError, exit 2, for report files a user passes in).
        raise RuntimeError(f"auditmi built a scan report that does not match its own schema: {e}") from e
    if json_out:
        write_json(report, json_out)
    if html:
        write_html(report, html)
        err.print(f"HTML report written to {html}")
    if json_out != "-":
        print_report(report, show)
    label = report["verdict"]["label"]
    if (fail_on == FailOn.likely_used and label == "likely-used") or (fail_on == FailOn.inconclusive and label in {"likely-used", "inconclusive"}):
        raise typer.Exit(EXIT_VERDICT)
