"""What each section of the HTML page shows, as plain values for the templates (which escape)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from auditmi.report import charts
from auditmi.report.format import DASH, basename, count, finite, get, num, pct, pval
from auditmi.report.jsondoc import normalise
from auditmi.report.thumbnails import thumbnail_data_uri


@dataclass(frozen=True)
class Card:
    """One key number: a title, the value, and a note."""

    key: str
    value: str
    note: str = ""


def _join(*parts: str) -> str:
    return "; ".join(s for s in parts if s)


def key_number_cards(agg: Mapping[str, Any], threshold_note: str | None = None) -> list[Card]:
    """The key-number cards of the aggregate statistics, in display order (``threshold_note``: why
    the decision threshold flags nothing, e.g. a reference too small for the --fpr asked for)."""
    cards = [
        Card("Images scored", count(agg.get("n_scored")),
             f"of {count(agg.get('n_images'))} found; {count(agg.get('n_skipped'))} skipped, {count(agg.get('n_duplicates'))} duplicate(s)"
             + (f"; {count(agg.get('n_distinct'))} distinct image(s) tested" if agg.get("n_distinct") is not None else "")),
        Card("Flagged as members", f"{count(agg.get('n_flagged'))} ({pct(agg.get('fraction_flagged'))})",
             threshold_note or f"score \u2265 {num(agg.get('decision_threshold'))} (threshold: {agg.get('threshold_kind') or DASH})"),
        Card("Expected false-positive rate", pct(agg.get("expected_fpr"), 2),
             "share of non-member images flagged at this threshold (from calibration)"),
    ]
    uf = agg.get("used_fraction")
    if isinstance(uf, Mapping):
        interval = f"interval {pct(uf.get('ci_low'))} \u2013 {pct(uf.get('ci_high'))}" if finite(uf.get("ci_low")) is not None else ""
        cards.append(Card("Estimated fraction used", pct(uf.get("estimate")), _join(interval, str(uf.get("note") or ""))))
    else:
        cards.append(Card("Estimated fraction used", DASH, "not estimated"))
    rt = agg.get("rank_test")
    if isinstance(rt, Mapping):
        ci = rt.get("auc_ci") if isinstance(rt.get("auc_ci"), Sequence) else None
        ci_text = f", 95% CI {num(ci[0], 3)} \u2013 {num(ci[1], 3)}" if ci and len(ci) == 2 else ""
        cards.append(Card("Rank test vs reference", f"p = {pval(rt.get('p_value'))}",
                          f"AUC {num(rt.get('auc'), 3)}{ci_text}; {count(rt.get('n_suspects'))} suspects vs "
                          f"{count(rt.get('n_reference'))} reference images ({rt.get('method') or DASH})"))
    else:
        cards.append(Card("Rank test vs reference", DASH, "no reference images were given"))
    bt = agg.get("binomial_test")
    if isinstance(bt, Mapping):
        cards.append(Card("Binomial test", f"p = {pval(bt.get('p_value'))}",
                          f"{count(bt.get('n_flagged'))} of {count(bt.get('n_total'))} flagged, "
                          f"{pct(bt.get('expected_fpr'), 2)} expected by chance; {bt.get('note') or ''}"))
    if agg.get("n_bh_flagged") is not None:
        cards.append(Card("Images flagged at FDR", count(agg.get("n_bh_flagged")),
                          f"Benjamini-Hochberg, false-discovery rate {pct(agg.get('fdr'))}"))
    pw = agg.get("power")
    if isinstance(pw, Mapping):
        needed = pw.get("n_suspects_needed")
        value = f"\u2248 {count(needed)} images" if finite(needed) is not None else DASH
        detail = f"to detect AUC {num(pw.get('auc'), 3)} with power {pct(pw.get('power'), 0)} at \u03b1 = {num(pw.get('alpha'))}"
        cards.append(Card("Images needed (power)", value, _join(detail, str(pw.get("note") or ""))))
    sc = agg.get("shift_check")
    if isinstance(sc, Mapping):
        value = {True: "Shift detected", False: "No shift detected"}.get(sc.get("distinguishable"), DASH)  # type: ignore[arg-type]
        detail = f"AUC {num(sc.get('auc'), 3)}, p = {pval(sc.get('p_value'))}"
        cards.append(Card("Suspect vs reference content shift", value, _join(detail, str(sc.get("reason") or ""))))
    else:
        cards.append(Card("Suspect vs reference content shift", DASH, "not checked"))
    cards.append(Card("Mean score", num(agg.get("mean_score"))))
    return cards


def roc_chart(report: Mapping[str, Any]) -> charts.Chart | None:
    """The calibration ROC chart, or None when the report has no usable ROC."""
    roc = get(report, "calibration", "roc")
    if not isinstance(roc, Mapping):
        return None
    f, t = roc.get("fpr"), roc.get("tpr")
    if not (isinstance(f, Sequence) and isinstance(t, Sequence) and len(f) == len(t) and len(f) >= 2):
        return None
    pairs = [(a, b) for a, b in ((finite(a), finite(b)) for a, b in zip(f, t, strict=True)) if a is not None and b is not None]
    if len(pairs) < 2:
        return None
    return charts.roc([a for a, _ in pairs], [b for _, b in pairs], finite(get(report, "aggregate", "expected_fpr")))


def image_rows(images: list[Mapping[str, Any]], top_k: int, thumbnails: bool) -> tuple[list[dict[str, Any]], int]:
    """The ``top_k`` highest-scoring images as table rows (with thumbnails), and the number of images."""

    def order(img: Mapping[str, Any]) -> tuple[float, str]:
        score = finite(img.get("score"))  # highest first; missing scores last; ties by path
        return (-score if score is not None else math.inf, str(img.get("path", "")))

    rows = []
    for rank, img in enumerate(sorted(images, key=order)[:top_k], start=1):
        path = str(img.get("path", ""))
        rows.append({"rank": rank, "path": path, "name": basename(path), "thumbnail": thumbnail_data_uri(path) if thumbnails else None,
                     "sha256": str(img.get("sha256", ""))[:16], "score": num(img.get("score")),
                     "probability": pct(img.get("member_probability")), "p_value": pval(img.get("p_value")),
                     "bh_flag": img.get("bh_flag"), "decision": str(img.get("decision", ""))})
    return rows, len(images)


def _score_line(score: Any) -> str | None:
    """One line on the score a scan used (EncoderMI-R with its shadows and fit, or a classifier)."""
    if not isinstance(score, Mapping):
        return None
    if not score.get("calibrated"):
        return f"{score.get('name')} (reference-free classifier){'; ' + str(score['note']) if score.get('note') else ''}"
    shadows = score.get("shadows") or []
    return (f"{score.get('name')}: calibrated per image against {len(shadows)} shadow encoders; difficulty model R\u00b2 on the "
            f"reference {num(score.get('r2_out_of_fold'), 2)} (out-of-fold); per-image p-values {str(score.get('p_values')).split(':')[0]}")


def provenance(report: Mapping[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, Any]]]:
    """Key/value rows (versions, hashes, seeds) and titled blocks (shown as JSON) for reproduction."""
    calib = get(report, "calibration") or {}
    enc = get(report, "encoder") or {}
    config = get(report, "config") or {}
    env = get(report, "environment") or {}
    ref = get(report, "reference")
    identity = enc.get("identity") if isinstance(enc, Mapping) else None
    if isinstance(identity, (Mapping, list)):
        identity = json.dumps(normalise(identity), ensure_ascii=False, allow_nan=False)
    attack = str(get(calib, "attack") or "")
    if get(calib, "attack_name"):
        attack = f"{attack} ({get(calib, 'attack_name')})".strip()
    rows: list[tuple[str, Any]] = [
        ("report schema", f"{get(report, 'kind') or ''} {get(report, 'schema_version') or ''}".strip()),
        ("auditmi version (scan)", get(report, "auditmi_version")),
        ("created", get(report, "created")),
        ("command", get(report, "command")),
        ("encoder", get(enc, "spec")),
        ("encoder backend", get(enc, "backend")),
        ("encoder identity", identity),
        ("calibration bundle", get(calib, "path")),
        ("calibration bundle sha256", get(calib, "bundle_sha256")),
        ("attack", attack),
        ("score", _score_line(get(report, "score"))),
        ("seed", get(config, "seed")),
        ("device", get(config, "device")),
        ("python", get(env, "python")),
        ("torch", get(env, "torch")),
        ("platform", get(env, "platform")),
    ]
    if isinstance(ref, Mapping):
        rows.append(("reference folders", "; ".join(str(r) for r in ref.get("paths_root") or [])))
        rows.append(("reference images", f"{count(ref.get('n_images'))} used, {count(ref.get('n_skipped'))} skipped"))
    overlap = get(report, "overlap")
    if isinstance(overlap, Mapping):
        rows.append(("left out of the suspects", str(overlap.get("reason") or "")))
    blocks = [
        ("Held-out calibration metrics", get(calib, "held_out_metrics")),
        ("Configuration", config),
        ("Encoder", enc),
        ("Score used (EncoderMI-R: shadows, difficulty model R\u00b2, p-values, reference threshold)", get(report, "score")),
        ("Calibration", {k: v for k, v in calib.items() if k != "roc"} if isinstance(calib, Mapping) else calib),
        ("Environment", env),
        ("Timing", get(report, "timing")),
    ]
    return [(k, DASH if v is None or v == "" else str(v)) for k, v in rows], blocks
