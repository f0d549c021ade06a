"""``auditmi scan``: was this encoder trained on these images?"""

from __future__ import annotations

import dataclasses
import math
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from auditmi.cli.main import app, command_line, handle_errors
from auditmi.cli.ui import err, fmt, out, progress_bar
from auditmi.discovery import SUPPORTED_EXTENSIONS
from auditmi.errors import EXIT_VERDICT, InputError
from auditmi.terminal import printable
from auditmi.truth import compare, read_truth
from auditmi.verdict import Label

if TYPE_CHECKING:
    from auditmi.jobs.scan import ScanResult


class FailOn(str, Enum):
    """``--fail-on``: the verdicts that make ``scan`` exit with code 5 (labels from auditmi.verdict)."""

    likely_used = Label.LIKELY_USED.value
    inconclusive = Label.INCONCLUSIVE.value
    never = "never"


#: The verdict labels each ``--fail-on`` value fails on.
FAILING = {
    FailOn.likely_used: {Label.LIKELY_USED},
    FailOn.inconclusive: {Label.LIKELY_USED, Label.INCONCLUSIVE},
    FailOn.never: set(),
}

VERDICT_STYLE = {Label.LIKELY_USED: "bold white on red", Label.NO_EVIDENCE: "bold white on green", Label.INCONCLUSIVE: "bold black on yellow"}


class _Plain(Table):
    """A table whose cells are plain text: file names and reasons are never read as rich markup."""

    def add_row(self, *cells: str, **kw: Any) -> None:  # type: ignore[override]
        super().add_row(*(Text(printable(c)) for c in cells), **kw)


def print_report(result: ScanResult, show: int) -> None:
    """The human-readable report on stdout: verdict first, then numbers, then images."""
    v, st, thr, n = result.verdict, result.statistics, result.threshold, len(result.images)
    out.print(Panel(Text.assemble((f" {v.label.value.upper()} ", VERDICT_STYLE.get(v.label, "bold")), "\n\n" + printable(v.reason)),
                    title="auditmi verdict", expand=False))
    t = _Plain(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("encoder", f"{result.encoder['spec']}  ({result.encoder['source']})")
    cal, su = result.calibration, result.score
    if su is not None and su.calibrated:
        r2 = "-" if su.r2_out_of_fold is None else f"{su.r2_out_of_fold:.2f}"
        t.add_row("score", f"{su.name}: calibrated per image against {len(su.shadows)} shadow encoders "
                  f"(difficulty model R^2 on the reference {r2}, out-of-fold); p-values {su.p_values.split(':')[0]}")
        if su.shadow_training_overlap:
            t.add_row("shadow training overlap", f"{len(su.shadow_training_overlap)} suspect/reference images were shadow training images "
                      "(those shadows not used for them; see the JSON report)")
    else:
        t.add_row("classifier", f"{cal.attack_name} (held-out shadow AUC {fmt(cal.held_out_metrics.get('roc_auc'))})")
        if su is not None and su.note:
            t.add_row("note", su.note)
    n_skipped = sum(s.set == "suspect" and not s.folder for s in result.skipped)
    distinct = result.n_distinct if result.n_distinct is not None else n - result.n_duplicates
    t.add_row("images scored", f"{n} of {result.n_images} ({n_skipped} skipped, {result.n_duplicates} duplicates; "
              f"{distinct} distinct images tested)")
    if result.overlap is not None:
        t.add_row("left out", result.overlap.reason)
    if result.ignored:
        t.add_row("files left out", "; ".join(f"{i.set}: {i.count} {i.reason}" for i in result.ignored)
                  + " (not read: auditmi reads " + ", ".join(sorted(e.lstrip(".") for e in SUPPORTED_EXTENSIONS)) + ")")
    shown_thr = thr.value if math.isfinite(thr.value) else sys.float_info.max
    if su is not None and su.calibrated and su.threshold and su.threshold.get("note"):  # e.g. --fpr finer than the reference resolves
        t.add_row("flagged as members", f"{st.n_flagged} of {distinct} distinct: {su.threshold['note']}")
    elif su is not None and su.calibrated and su.threshold:
        lo, hi = su.threshold["fpr_interval"]
        t.add_row("flagged as members", f"{st.n_flagged} of {distinct} distinct ({st.n_flagged / distinct:.1%}) at threshold {shown_thr:.4g} "
                  f"({thr.kind}): expected FPR {fmt(thr.expected_fpr)} (95% interval for this reference {fmt(lo)}-{fmt(hi)}); "
                  "TPR unknown, so the used fraction is a lower bound")
    else:
        t.add_row("flagged as members", f"{st.n_flagged} of {distinct} distinct ({st.n_flagged / distinct:.1%}) at threshold {shown_thr:.4g} ({thr.kind} threshold), "
                  f"calibrated FPR {fmt(thr.expected_fpr)}, TPR {fmt(thr.calibrated_tpr)}")
    uf = st.used_fraction
    if uf.estimate is not None and math.isfinite(uf.estimate):
        t.add_row("estimated fraction used", f"{uf.estimate:.1%} (95% CI {fmt(_finite(uf.ci_low), '.1%')} - {fmt(_finite(uf.ci_high), '.1%')})")
    if st.rank_test:
        rt = st.rank_test
        t.add_row("rank test vs reference", f"p = {rt.p_value:.3g}, AUC {rt.auc:.3f} (95% CI {fmt(_finite(rt.auc_ci[0]))}-{fmt(_finite(rt.auc_ci[1]))}), "
                  f"{rt.n_suspects} suspects vs {rt.n_reference} reference")
        t.add_row("per-image flags (BH)", f"{st.n_bh_flagged} at FDR {st.fdr:g}")
    if st.binomial_test:
        b = st.binomial_test
        t.add_row("binomial test", f"p = {b.p_value:.3g} ({b.note})")
    if st.shift_check:
        t.add_row("shift check", st.shift_check.reason)
    if st.power:
        p = st.power
        need = p.n_suspects_needed
        t.add_row("power", f"~{need} images needed for p < {p.alpha:g} at 80% power" if need else (p.note or "-"))
    tr = result.truth
    if tr and "error" in tr:
        t.add_row("vs truth file", f"not compared: {tr['error']}")
    elif tr:
        t.add_row("vs truth file", f"{tr['true_positives']} of {tr['n_members']} known members flagged, {tr['false_positives']} of {tr['n_non_members']} "
                  f"known non-members flagged (accuracy {fmt(tr['accuracy'], '.1%')}, precision {fmt(tr['precision'], '.1%')}, recall {fmt(tr['recall'], '.1%')})")
    out.print(t)
    rows = sorted(result.images, key=lambda r: -r.score)
    if show and rows:
        it = _Plain(title=f"most member-like images (top {min(show, len(rows))} of {len(rows)})")
        for col in ("#", "image", "score", "P(member)", "decision", "p-value", "BH"):
            it.add_column(col, justify="right" if col not in {"image", "decision"} else "left")
        for i, r in enumerate(rows[:show], 1):
            it.add_row(str(i), r.path.name, f"{r.score:.4f}", fmt(r.member_probability, ".3f"), "member" if r.member else "non-member",
                       fmt(r.p_value, ".3g"), "" if r.bh_flag is None else ("yes" if r.bh_flag else "no"))
        out.print(it)
    if result.skipped:
        sk = _Plain(title=f"skipped files ({len(result.skipped)})")
        sk.add_column("set")
        sk.add_column("file")
        sk.add_column("reason")
        for s in result.skipped:
            sk.add_row(s.set, str(s.path), s.reason)
        out.print(sk)


def _finite(x: float | None) -> float | None:
    """NaN and infinities shown as a dash, as the JSON report writes them as null."""
    return x if x is not None and math.isfinite(x) else None


@app.command()
@handle_errors
def scan(
    encoder: Annotated[str, typer.Option("--encoder", "-e", help="Encoder: alias (clip-vit-b32), open_clip:MODEL@TAG, timm:NAME or timm:DIR, hf:REPO_ID or hf:DIR, http:CONFIG.toml or http:URL, a torch.export FILE.pt2, an auditmi checkpoint folder, or a TorchScript file (`auditmi encoders --all` lists them with examples).")],
    calibration: Annotated[Path, typer.Option("--calibration", "-c", help="Calibration bundle folder written by `auditmi calibrate`.")],
    reference: Annotated[list[Path] | None, typer.Option("--reference", "-r", help="Images known NOT to be in the training data: files and folders, every path up to the next option (so reference/*.png works). Enables the rank test, per-image p-values and the shift check.")] = None,
    attack: Annotated[str | None, typer.Option("--attack", "-a", help="Classifier: T (threshold), V (vector) or S (set). Default: the best on held-out shadow data.")] = None,
    views: Annotated[int | None, typer.Option("--views", "-n", help="Augmented views per image (default: the calibration's; must match it).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", "-b", help="Views per encoder pass (default: chosen for the device).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random views (results are reproducible from it).")] = 0,
    fpr: Annotated[float | None, typer.Option("--fpr", help="Flag images at this calibrated false-positive rate (e.g. 0.05) instead of the accuracy-optimal threshold. "
                                                 "The calibration resolves rates down to 1 / its held-out shadow non-members (`auditmi calibrate` "
                                                 "prints it; the report's calibration.finest_fpr); with EncoderMI-R the reference sets the limit.")] = None,
    fdr: Annotated[float, typer.Option("--fdr", help="False-discovery rate for per-image Benjamini-Hochberg flags (needs --reference).")] = 0.05,
    alpha: Annotated[float, typer.Option("--alpha", help="Significance level of the dataset-level verdict.")] = 0.05,
    json_out: Annotated[str | None, typer.Option("--json", help="Write the JSON report to FILE, or '-' for stdout (then nothing else is printed on stdout).")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML report to FILE.")] = None,
    truth: Annotated[Path | None, typer.Option("--truth", help="CSV 'file,member(0/1)' of known membership, to compare decisions with.")] = None,
    fail_on: Annotated[FailOn, typer.Option("--fail-on", help="Exit with code 5 when the verdict is likely-used (or, with 'inconclusive', likely-used or inconclusive).")] = FailOn.never,
    cache_dir: Annotated[Path | None, typer.Option("--cache", help="Feature cache folder (default: the user cache dir, or $AUDITMI_CACHE_DIR).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")] = False,
    workers: Annotated[int | None, typer.Option("--workers", help="Worker processes. On a Linux CPU each decodes, renders and embeds its share of images with one thread (default: one per core); on a GPU they decode (default: cores - 1). 0: everything in this process.")] = None,
    show: Annotated[int, typer.Option("--show", help="Rows of the per-image table printed on the terminal.")] = 20,
    engine: Annotated[str, typer.Option("--engine", help="local (this machine) or ray (the Ray cluster at $RAY_ADDRESS, else a Ray started here; needs auditmi[ray]). With ray, --workers is the number of embedding actors and --cache must be a folder every node sees.")] = "local",
    parquet: Annotated[Path | None, typer.Option("--parquet", help="Also write one row per scored image (path, sha256, score, p-value, flags, features, image statistics) to this Parquet file (needs pyarrow).")] = None,
    max_report_images: Annotated[int, typer.Option("--max-report-images", help="Most images listed in the JSON report (the highest scores); the aggregate always covers every image, --parquet lists them all.")] = 10_000,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    images: Annotated[list[Path] | None, typer.Argument(metavar="IMAGES", help="Image files or folders (searched recursively) to audit. Not after --reference: its values run to the next option.", show_default=False)] = None,
) -> None:
    """Score IMAGES for membership in ENCODER's training data and print a verdict."""
    # Checks that need no torch run before importing it, so a typo fails at once; the scan
    # repeats them with the same functions.
    from auditmi._io import check_destination
    from auditmi._paths import cap_workers, check_attack, check_batch_size, check_device, check_rates, check_views, check_workers, precheck
    from auditmi.engines import check_engine
    from auditmi.validate import int_in

    if not images:
        raise InputError(
            "no suspect images given. Put the images to audit first: `auditmi scan SUSPECTS... --reference REF...`; "
            "every path after --reference, up to the next option, is a reference image (end the list with -- if needed)."
        )
    check_rates(fpr, fdr, alpha)
    check_views(views)
    check_batch_size(batch_size)
    check_workers(workers)
    check_device(device)
    check_attack(attack)
    check_engine(engine)
    int_in("--max-report-images", max_report_images, 0, 10**9)
    for dest in ([json_out] if json_out is not None else []) + ([html] if html is not None else []) + ([parquet] if parquet is not None else []):
        check_destination(dest)  # before any work: a typo must not cost a whole scan
    precheck([*images, *(reference or [])])
    precheck(calibration=calibration)
    from auditmi.cli.encoders import http_preflight

    http_preflight(encoder, [images, reference or []], calibration, views, batch_size, one_pass=True)  # HTTP: the query plan, the budget
    tr = read_truth(truth) if truth else None
    if not no_cache:
        from auditmi.cache import read_only_note

        if ro := read_only_note(cache_dir):
            err.print(Text.assemble(("note: ", "yellow"), ro))
    if workers is not None and engine == "local":  # with ray, --workers counts actors on the cluster
        workers, note = cap_workers(workers)
        if note:
            err.print(Text.assemble(("note: ", "yellow"), note))
    if engine == "ray":  # start (or join) Ray in the background while torch, the encoder and the images load
        from auditmi.engines.ray_connect import start_connecting

        start_connecting()
    from auditmi.cli.options import encoder_assumptions
    from auditmi.jobs import scan as job

    for warning in encoder_assumptions(encoder):
        err.print(Text.assemble(("warning: ", "yellow"), warning))
    from auditmi.report import InvalidReportError, scan_report, validate_report, write_html, write_json

    opts = job.ScanOptions(encoder=encoder, calibration=calibration, attack=attack, views=views, batch_size=batch_size, device=device,
                           seed=seed, fpr=fpr, fdr=fdr, alpha=alpha, reference=list(reference or []), cache_dir=cache_dir,
                           use_cache=not no_cache, workers=workers, engine=engine, parquet=parquet, truth=truth)
    with progress_bar(not quiet) as cb:
        result = job.run_scan(images, opts, progress=cb)
    if tr is not None:
        try:
            comparison = compare(((str(r.path), r.member) for r in result.images), tr)
        except InputError as e:  # the scan itself is fine: report it, without the comparison
            comparison = {"error": str(e)}
            err.print(Text.assemble(("warning: ", "yellow"), f"{e} The report is written without the truth comparison."))
        result = dataclasses.replace(result, truth=comparison)
    report = scan_report(result, command=command_line(), max_images=max_report_images, parquet=parquet)
    try:
        validate_report(report)
    except InvalidReportError as e:
        # The report was built by auditmi itself: a schema mismatch is a bug (exit 1), not bad user
        # input (InvalidReportError is an InputError, exit 2, for report files a user passes in).
        raise RuntimeError(f"auditmi built a scan report that does not match its own schema: {e}") from e
    try:
        if json_out:
            write_json(report, json_out)
        if html:
            # The HTML's score histogram needs every score, also when the JSON lists only the top images.
            write_html(report if report["images_listed"]["complete"] else scan_report(result, command=command_line(), max_images=None), html)
            err.print(f"HTML report written to {html}")
    except Exception:
        # The scan itself succeeded: never lose its summary because a report could not be written.
        # (On stdout unless stdout was the JSON destination; the error follows on stderr.)
        if json_out != "-":
            print_report(result, show)
        else:
            err.print("The JSON report could not be written to stdout; the verdict was:", result.verdict.label.value,
                      "-", Text(result.verdict.reason))
        raise
    if json_out != "-":
        print_report(result, show)
    if result.verdict.label in FAILING[fail_on]:
        raise typer.Exit(EXIT_VERDICT)
