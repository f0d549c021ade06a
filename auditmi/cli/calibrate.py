"""``auditmi calibrate``: shadow encoder -> membership features -> fitted classifiers -> bundle."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from auditmi.cli.main import app, command_line, handle_errors
from auditmi.cli.ui import err, fmt, out, progress_bar

if TYPE_CHECKING:
    from auditmi.jobs.calibrate import CalibrateResult


@app.command()
@handle_errors
def calibrate(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the calibration bundle to.")],
    shadow_data: Annotated[list[Path] | None, typer.Option("--shadow-data", "-d", help="Public images like the target's training data (files and folders, every path up to the next option); split into shadow members/non-members.")] = None,
    arch: Annotated[str, typer.Option("--arch", help="Shadow architecture: resnet18, resnet18-w32, resnet18-w16, resnet10-w16, resnet-tiny, convnet-w32, convnet-w16.")] = "resnet18-w16",
    epochs: Annotated[int, typer.Option("--epochs", help="Shadow pre-training epochs (membership signal needs an encoder that overfits: hundreds).")] = 100,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Pre-training batch size.")] = 256,
    image_size: Annotated[int, typer.Option("--image-size", help="Shadow encoder input size.")] = 32,
    member_fraction: Annotated[float, typer.Option("--member-fraction", help="Fraction of the shadow data used as shadow members.")] = 0.5,
    views: Annotated[int, typer.Option("--views", "-n", help="Augmented views per image (scan must use the same).")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split, training and views.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    optimizer: Annotated[str, typer.Option("--optimizer", help="sgd (SimCLR/MoCo CIFAR recipe) or adam.")] = "sgd",
    lr: Annotated[float, typer.Option("--lr", help="Learning rate (SGD: scaled by batch/256).")] = 0.06,
    shadows: Annotated[int, typer.Option("--shadows", "-k", help="Shadow encoders to pre-train on seeded halves of --shadow-data and carry in the bundle "
                                         "as reference models for EncoderMI-R (scans with --reference); 0 for none.")] = 4,
    shadow_encoder: Annotated[str | None, typer.Option("--shadow-encoder", help="Use an existing encoder with known members/non-members instead of pre-training one.")] = None,
    members: Annotated[list[Path] | None, typer.Option("--members", help="With --shadow-encoder: images it was trained on (files and folders, every path up to the next option).")] = None,
    non_members: Annotated[list[Path] | None, typer.Option("--non-members", help="With --shadow-encoder: images it was not trained on (files and folders, every path up to the next option).")] = None,
    attacks: Annotated[str, typer.Option("--attacks", help="Classifiers to fit, e.g. TVS or T.")] = "TVS",
    vector_epochs: Annotated[int, typer.Option("--classifier-epochs", help="Training epochs of the V and S classifiers (paper: 300 for V).")] = 300,
    json_out: Annotated[str | None, typer.Option("--json", help="Also write the bundle summary as JSON to FILE or '-'.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    engine: Annotated[str, typer.Option("--engine", help="Where the feature stage runs: local or ray (see `auditmi scan --help`); shadow pre-training stays local.")] = "local",
) -> None:
    """Pre-train a shadow encoder and fit the EncoderMI-T/-V/-S classifiers into a calibration bundle."""
    from auditmi._io import check_destination
    from auditmi._paths import check_batch_size, check_device, check_fraction, check_positive, check_views, parse_attacks, precheck
    from auditmi.engines import check_engine

    # Everything that needs no torch is checked before importing it, so a typo fails at once.
    kinds = parse_attacks(attacks)
    check_engine(engine)
    check_views(views)
    check_positive("--epochs", epochs)
    check_batch_size(batch_size)
    check_positive("--image-size", image_size)
    check_fraction("--member-fraction", member_fraction)
    check_positive("--classifier-epochs", vector_epochs)
    check_device(device)
    if json_out is not None:
        check_destination(json_out)
    precheck([*(shadow_data or []), *(members or []), *(non_members or [])])
    from auditmi.calibration import check_bundle_destination
    from auditmi.cli.options import check_training_options, encoder_assumptions

    if not shadow_encoder:  # with --shadow-encoder nothing is trained
        check_training_options(arch, optimizer)
    from auditmi.jobs.calibrate import CalibrateOptions, run_calibrate
    from auditmi.report import calibrate_summary, write_json

    check_bundle_destination(out_dir)  # before the (long) shadow training
    if shadow_encoder:
        from auditmi.cli.encoders import http_preflight

        http_preflight(shadow_encoder, [members or [], non_members or []], views=views)  # HTTP: the query plan, the budget
    for warning in encoder_assumptions(shadow_encoder) if shadow_encoder else []:
        err.print(Text.assemble(("warning: ", "yellow"), warning))
    opts = CalibrateOptions(out=out_dir, shadow_data=list(shadow_data or []), arch=arch, epochs=epochs, batch_size=batch_size,
                            image_size=image_size, member_fraction=member_fraction, views=views, seed=seed, device=device,
                            shadow_encoder=shadow_encoder, members=list(members or []), non_members=list(non_members or []),
                            attacks=kinds, optimizer=optimizer, lr=lr, shadows=shadows, engine=engine,
                            attack_options={"V": {"epochs": vector_epochs}, "S": {"epochs": max(1, vector_epochs // 3)}})
    with progress_bar(not quiet) as cb:
        result = run_calibrate(opts, progress=cb, command=command_line())
    print_notes(result)
    if json_out:
        write_json(calibrate_summary(result), json_out)
        if json_out == "-":
            return
    cal = result.calibration
    t = Table(title=f"held-out shadow metrics ({result.n_heldout} images; fitted on {result.n_fit})")
    for c in ("classifier", "accuracy", "precision", "recall", "ROC AUC", "TPR@1%FPR", "TPR@0.1%FPR"):
        t.add_column(c)
    for k, a in cal.attacks.items():
        m = a.metrics
        star = " (default)" if k == cal.default_attack else ""
        t.add_row(k + star, fmt(m["accuracy"]), fmt(m["precision"]), fmt(m["recall"]), fmt(m["roc_auc"]),
                  fmt(m["tpr_at_1pct_fpr"]), fmt(m["tpr_at_0_1pct_fpr"]))
    out.print(t)
    sh = cal.meta.get("shadows")
    if sh:
        chosen = sh["score"].get("chosen_by", {})
        err.print(f"{len(sh['encoders'])} shadow encoders carried for EncoderMI-R; score chosen by {chosen.get('method', '-')}"
                  + (f" ({chosen['combination']})" if chosen.get("combination") else ""))
    err.print(f"calibration bundle written to {result.bundle}")


def print_notes(result: CalibrateResult) -> None:
    """What a user of the bundle must know (on stderr, also with ``--json -``): the --fpr it supports."""
    if result.n_duplicates:
        err.print(f"{result.n_duplicates} duplicate shadow image(s) (same content as another) counted once: "
                  + ", ".join(f"{n} in {k.replace('_', '-')}" for k, n in result.calibration.meta["duplicates_dropped"].items() if n))
    ft = result.calibration.meta.get("fpr_thresholds") or {}
    if ft:
        written = ", ".join(f"{f:g}" for f in ft["written"]) or "none"
        err.print(f"scans accept --fpr {ft['finest_fpr']:.3g} or more (1/{ft['heldout_non_members']} held-out shadow non-members); "
                  f"thresholds stored for --fpr {written}"
                  + (f"; not for {', '.join(k.removeprefix('fpr=') for k in ft['not_written'])} (finer than the held-out set resolves)"
                     if ft["not_written"] else ""))
