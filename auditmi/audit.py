"""The three jobs behind the CLI: calibrate, scan and evaluate. Returns data; never prints.

Scan verdict logic (honest by construction):

* With a reference set of known non-members, the dataset-level test is a one-sided
  Mann-Whitney rank test "suspects score higher than the reference" (valid for small sets), and
  per-image empirical p-values against the reference are flagged with Benjamini-Hochberg.
  Before any "likely-used", an encoder-free shift check asks whether suspects and reference
  differ in ways that are not membership; if they do, the verdict is "inconclusive".
* Without a reference, a binomial test compares the flagged count with the calibrated
  false-positive rate of the decision threshold; the report says it relies on calibration
  transfer from the shadow encoder to the audited one.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from auditmi import __version__
from auditmi import stats as S
from auditmi._paths import check_rates
from auditmi.cache import FeatureCache, default_cache_dir
from auditmi.calibration import Calibration, fit_calibration, load_calibration, save_calibration
from auditmi.encoders import Encoder, load_encoder, resolve_device
from auditmi.encoders.local import load_local
from auditmi.engines import compute_features
from auditmi.errors import InputError
from auditmi.features import feature_config
from auditmi.images import ImageLoadError, discover, read_and_hash
from auditmi.pipeline import FeatureSet, cache_key
from auditmi.report import SCHEMA_VERSION
from auditmi.shadow import TrainConfig, load_training_images, train_encoder
from auditmi.shift import shift_check
from auditmi.views import ViewConfig

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): stages are 'suspect', 'reference', 'members', 'non-members', 'train'."""

VERDICT_USED = "likely-used"
VERDICT_NONE = "no-evidence"
VERDICT_INCONCLUSIVE = "inconclusive"


@dataclass
class ScanOptions:
    """Everything a scan needs besides the images."""

    encoder: str
    calibration: str | Path
    attack: str | None = None
    views: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    seed: int = 0
    fpr: float | None = None
    fdr: float = 0.05
    alpha: float = 0.05
    reference: list[str | Path] = field(default_factory=list)
    cache_dir: str | Path | None = None
    use_cache: bool = True
    workers: int | None = None
    amp: bool = True
    engine: str = "local"  # local or ray (auditmi.engines)
    parquet: str | Path | None = None  # also write one row per image to this Parquet file


def environment() -> dict[str, Any]:
    """Versions that make a result reproducible."""
    env = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
           "numpy": np.__version__, "auditmi": __version__, "cuda": torch.version.cuda if torch.cuda.is_available() else None}
    try:
        # The installed distribution's version, without importing open_clip (about a second of
        # start-up, plus timm) for audits of local or TorchScript encoders that never use it.
        from importlib.metadata import version

        env["open_clip"] = version("open_clip_torch")
    except Exception:  # pragma: no cover
        pass
    return env


def discover_images(paths: Sequence[str | Path], what: str) -> list[Path]:
    d = discover(paths)
    if not d.images:
        extra = f" ({len(d.ignored)} files with other extensions were ignored)" if d.ignored else ""
        raise InputError(
            f"no image files found in the {what} path(s) {', '.join(map(str, paths))}{extra}. "
            "Supported: jpg, jpeg, png, webp, bmp, gif, tif, tiff."
        )
    return d.images


def _features(paths: list[Path], enc: Encoder, cfg: ViewConfig, opts_seed: int, batch_size: int | None, cache: FeatureCache | None,
              workers: int | None, progress: Progress | None, stage: str, engine: str = "local", device: str = "auto") -> FeatureSet:
    cb = (lambda d, t: progress(stage, d, t)) if progress else None
    return compute_features(paths, enc, cfg, seed=opts_seed, batch_size=batch_size, cache=cache, num_workers=workers, progress=cb,
                            engine=engine, device=device)


def _require_usable(fs: FeatureSet, what: str) -> None:
    if fs.n == 0:
        reasons = "; ".join(f"{s.path.name}: {s.reason}" for s in fs.skipped[:5])
        raise InputError(f"none of the {what} images could be used ({len(fs.skipped)} skipped: {reasons}).")


def _binomial_power(flag_rate: float, fpr: float, alpha: float, power: float = 0.8) -> int | None:
    """Smallest n at which a one-sided binomial test of ``fpr`` rejects with the given power."""
    from scipy.stats import binom

    if not (0 <= fpr < flag_rate <= 1):
        return None
    n = 1
    while n <= 1_000_000:
        crit = int(binom.isf(alpha, n, fpr)) + 1  # smallest k with P(X >= k) <= alpha
        if binom.sf(crit - 1, n, flag_rate) >= power:
            return n
        n = int(n * 1.25) + 1
    return None


def run_scan(images: Sequence[str | Path], opts: ScanOptions, progress: Progress | None = None, command: str = "") -> dict[str, Any]:
    """Audit ``images`` against an encoder; returns the JSON-able report (schema in auditmi/schemas)."""
    t0 = _dt.datetime.now(_dt.timezone.utc)
    check_rates(opts.fpr, opts.fdr, opts.alpha)
    suspects = discover_images(images, "suspect")
    refs = discover_images(opts.reference, "reference") if opts.reference else []
    cal = load_calibration(opts.calibration)
    cfg = cal.views if opts.views is None else ViewConfig(n_views=opts.views)
    cal.check_views(cfg)
    ac = cal.get(opts.attack)
    kind = (opts.attack or cal.default_attack).upper()
    enc = load_encoder(opts.encoder, opts.device, amp=opts.amp)
    cache = FeatureCache(opts.cache_dir or default_cache_dir(), cache_key(enc, cfg, opts.seed)) if opts.use_cache else None

    fs = _features(suspects, enc, cfg, opts.seed, opts.batch_size, cache, opts.workers, progress, "suspect", opts.engine, opts.device)
    _require_usable(fs, "suspect")
    rs = _features(refs, enc, cfg, opts.seed, opts.batch_size, cache, opts.workers, progress, "reference", opts.engine, opts.device) if refs else None
    if rs is not None:
        _require_usable(rs, "reference")

    scores = ac.attack.score(fs.features)
    probs = ac.attack.member_probability(fs.features)
    if opts.fpr is not None:
        thr, thr_kind = ac.threshold_at(opts.fpr), f"fpr={opts.fpr:g}"
    else:
        thr, thr_kind = ac.thresholds["accuracy"], "accuracy"
    cal_tpr, cal_fpr = ac.tpr_fpr_at(thr)
    flags = scores >= thr
    n, k = len(scores), int(flags.sum())
    n_null = int((ac.heldout_labels == 0).sum())
    # A zero observed FPR on a finite held-out set is not a zero rate: use the conservative (fp+1)/(n+1).
    fpr_for_test = (cal_fpr * n_null + 1) / (n_null + 1)

    rank = binom = power = shift = None
    pvals = bh = None
    ref_scores: np.ndarray | None = None
    if rs is not None:
        ref_scores = ac.attack.score(rs.features)
        rank = S.rank_test(scores, ref_scores)
        pvals = S.empirical_pvalues(scores, ref_scores)
        bh = S.benjamini_hochberg(pvals, opts.fdr)
        shift = shift_check(fs.stats, rs.stats, seed=opts.seed)
        power = S.required_sample_size(rank.auc, alpha=opts.alpha, reference_size=rs.n)
        if shift.distinguishable:
            label, reason = VERDICT_INCONCLUSIVE, "suspects and reference differ without the encoder, so a score difference cannot be attributed to training: " + shift.reason
        elif rank.p_value < opts.alpha:
            label = VERDICT_USED
            reason = (f"suspect images score higher than the {rs.n} reference non-members (one-sided rank test p={rank.p_value:.2g} < {opts.alpha:g}; "
                      f"AUC {rank.auc:.2f}); no encoder-free difference between the sets was detected.")
        else:
            label = VERDICT_NONE
            reason = f"suspects do not score significantly higher than the reference (p={rank.p_value:.2g} >= {opts.alpha:g}, AUC {rank.auc:.2f})."
            if power.n_suspects_needed:
                reason += f" At this effect size about {power.n_suspects_needed} suspect images would be needed for a conclusive audit."
            elif power.note:
                reason += f" Power estimate: {power.note}."
        test, p_value = "rank-test", rank.p_value
    else:
        binom = S.binomial_test(k, n, fpr_for_test)
        need = _binomial_power(k / n, fpr_for_test, opts.alpha)
        power = S.PowerEstimate(n_suspects_needed=need, n_reference=None, auc=float(cal.attacks[kind].metrics.get("roc_auc") or float("nan")),
                                alpha=opts.alpha, power=0.8,
                                note=("binomial test at the observed flag rate" if need else "flag rate does not exceed the calibrated FPR: no sample size reaches significance"))
        if binom.p_value < opts.alpha:
            label = VERDICT_USED
            reason = (f"{k} of {n} images flagged, more than the calibrated false-positive rate {fpr_for_test:.3g} explains "
                      f"(binomial p={binom.p_value:.2g}); this relies on the calibration transferring to the audited encoder. "
                      "Add --reference with known non-members for a test that does not.")
        else:
            label = VERDICT_NONE
            reason = f"{k} of {n} images flagged, consistent with the calibrated false-positive rate {fpr_for_test:.3g} (binomial p={binom.p_value:.2g})."
        test, p_value = "binomial-test", binom.p_value
    frac = S.used_fraction(k, n, cal_tpr, cal_fpr)

    image_rows = []
    for i, r in enumerate(fs.rows):
        image_rows.append({
            "path": str(r.path), "sha256": r.sha256, "score": float(scores[i]), "member_probability": float(np.clip(probs[i], 0, 1)),
            "decision": "member" if flags[i] else "non-member",
            "p_value": float(pvals[i]) if pvals is not None else None,
            "bh_flag": bool(bh[i]) if bh is not None else None,
        })
    if opts.parquet is not None:
        from auditmi.parquet import write_image_table

        write_image_table(opts.parquet, image_rows, fs, feature_config(cfg.n_views))
    skipped = [{"path": str(s.path), "reason": s.reason, "set": "suspect"} for s in fs.skipped]
    if rs is not None:
        skipped += [{"path": str(s.path), "reason": s.reason, "set": "reference"} for s in rs.skipped]
    t1 = _dt.datetime.now(_dt.timezone.utc)
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "auditmi.scan-report",
        "auditmi_version": __version__,
        "created": t1.isoformat(timespec="seconds"),
        "command": command,
        "verdict": {"label": label, "reason": reason, "test": test, "p_value": float(p_value), "alpha": opts.alpha},
        "aggregate": {
            "n_images": len(suspects), "n_scored": n, "n_skipped": len(fs.skipped), "n_duplicates": sum(len(g) - 1 for g in fs.duplicates),
            "n_flagged": k, "fraction_flagged": k / n, "mean_score": float(np.mean(scores)),
            "decision_threshold": float(thr) if np.isfinite(thr) else float(np.finfo(np.float64).max), "threshold_kind": thr_kind,
            "expected_fpr": cal_fpr, "calibrated_tpr": cal_tpr,
            "used_fraction": frac.to_dict(),
            "rank_test": rank.to_dict() if rank else None,
            "binomial_test": binom.to_dict() if binom else None,
            "power": power.to_dict() if power else None,
            "shift_check": shift.to_dict() if shift else None,
            "n_bh_flagged": int(bh.sum()) if bh is not None else None,
            "fdr": opts.fdr if bh is not None else None,
        },
        "images": image_rows,
        "reference": None if rs is None else {"paths_root": [str(p) for p in opts.reference], "n_images": len(refs), "n_skipped": len(rs.skipped),
                                               "scores": [float(s) for s in ref_scores]},  # type: ignore[union-attr]
        "skipped": skipped,
        "duplicates": [[str(p) for p in g] for g in fs.duplicates],
        "encoder": enc.describe(),
        "calibration": {"path": str(cal.path), "bundle_sha256": cal.sha256, "attack": kind, "attack_name": ac.attack.name,
                        "default_attack": cal.default_attack, "held_out_metrics": ac.metrics, "roc": ac.roc,
                        "thresholds": {k2: (v if np.isfinite(v) else None) for k2, v in ac.thresholds.items()},
                        "shadow": cal.meta.get("shadow")},
        "config": {"views": cfg.to_dict(), "features": feature_config(cfg.n_views), "seed": opts.seed,
                   "batch_size": int(fs.timing.get("batch_size", 0)), "device": str(enc.device), "fpr": opts.fpr, "fdr": opts.fdr,
                   "alpha": opts.alpha, "cache": str(cache.dir) if cache else None, "engine": opts.engine},
        "environment": environment(),
        "timing": {"started": t0.isoformat(timespec="seconds"), "seconds": (t1 - t0).total_seconds(),
                   "suspect": fs.timing, "reference": rs.timing if rs else None,
                   "from_cache": fs.n_from_cache + (rs.n_from_cache if rs else 0)},
    }
    return report


# ----------------------------------------------------------------------------------------- calibrate


@dataclass
class CalibrateOptions:
    """Options of ``auditmi calibrate``."""

    out: str | Path
    shadow_data: list[str | Path] = field(default_factory=list)
    arch: str = "resnet18-w16"
    epochs: int = 100
    batch_size: int = 256
    image_size: int = 32
    member_fraction: float = 0.5
    views: int = 10
    seed: int = 0
    device: str = "auto"
    shadow_encoder: str | None = None
    members: list[str | Path] = field(default_factory=list)
    non_members: list[str | Path] = field(default_factory=list)
    attacks: tuple[str, ...] = ("T", "V", "S")
    attack_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    heldout_fraction: float = 0.4
    lr: float = 0.06
    optimizer: str = "sgd"
    temperature: float = 0.5
    feature_batch_size: int | None = None
    workers: int | None = None
    engine: str = "local"


def _split_by_hash(paths: list[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path], list[str], list[str]]:
    """Seeded member/non-member split that depends only on file contents (not names or order)."""
    if not 0 < fraction < 1:
        raise InputError(f"--member-fraction must be between 0 and 1 (got {fraction}).")
    hashed = []
    seen: set[str] = set()
    for p in paths:
        try:
            _, h = read_and_hash(p)
        except ImageLoadError:
            continue
        if h not in seen:  # a duplicate must not land on both sides
            seen.add(h)
            hashed.append((h, p))
    hashed.sort()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(hashed))
    k = int(round(len(hashed) * fraction))
    mem = sorted(order[:k].tolist())
    non = sorted(order[k:].tolist())
    return ([hashed[i][1] for i in mem], [hashed[i][1] for i in non], [hashed[i][0] for i in mem], [hashed[i][0] for i in non])


def run_calibrate(opts: CalibrateOptions, progress: Progress | None = None, command: str = "") -> tuple[Path, Calibration]:
    """Build a calibration bundle (pre-training a shadow encoder unless one is given)."""
    cfg = ViewConfig(n_views=opts.views)
    out = Path(opts.out)
    shadow_meta: dict[str, Any]
    if opts.shadow_encoder:
        if not opts.members or not opts.non_members:
            raise InputError("--shadow-encoder needs --members DIR and --non-members DIR (images you know it was / was not trained on).")
        enc = load_encoder(opts.shadow_encoder, opts.device)
        mem_paths, non_paths = discover_images(opts.members, "member"), discover_images(opts.non_members, "non-member")
        shadow_meta = {"trained_by_auditmi": False, "encoder": enc.describe()}
    else:
        if not opts.shadow_data:
            raise InputError("give --shadow-data DIR (public images to pre-train a shadow encoder on) or --shadow-encoder SPEC with --members/--non-members.")
        allp = discover_images(opts.shadow_data, "shadow-data")
        mem_paths, non_paths, mem_h, non_h = _split_by_hash(allp, opts.member_fraction, opts.seed)
        if len(mem_paths) < 8 or len(non_paths) < 8:
            raise InputError(f"calibration needs at least 16 distinct shadow images (found {len(mem_paths) + len(non_paths)}).")
        tensors, shas, skipped = load_training_images(mem_paths, opts.image_size, cfg)
        if len(tensors) < 8:
            raise InputError(f"only {len(tensors)} shadow member images could be read; need at least 8.")
        tcfg = TrainConfig(arch=opts.arch, image_size=opts.image_size, epochs=opts.epochs, batch_size=opts.batch_size, seed=opts.seed,
                           optimizer=opts.optimizer, lr=opts.lr, temperature=opts.temperature, checkpoint_every=max(1, min(10, opts.epochs)))
        data_digest = hashlib.sha256("".join(sorted(shas)).encode()).hexdigest()[:16]
        run_dir = out / "shadow-encoder" / f"{tcfg.digest()}-{data_digest}"
        dev = resolve_device(opts.device)
        cb = (lambda s, t, d: progress("train", s, t)) if progress else None
        final = train_encoder(tensors, run_dir, tcfg, device=dev, view_cfg=cfg, progress=cb,
                              extra_meta={"member_sha256": sorted(shas)})
        enc = load_local(final, dev, spec=str(final))
        shadow_meta = {"trained_by_auditmi": True, "encoder": enc.describe(), "training": tcfg.to_dict(), "checkpoint": str(final),
                       "member_sha256": mem_h, "non_member_sha256": non_h,
                       "skipped_members": [{"path": str(s.path), "reason": s.reason} for s in skipped]}
    mf = _features(mem_paths, enc, cfg, opts.seed, opts.feature_batch_size, None, opts.workers, progress, "members", opts.engine, opts.device)
    nf = _features(non_paths, enc, cfg, opts.seed, opts.feature_batch_size, None, opts.workers, progress, "non-members", opts.engine, opts.device)
    if shadow_meta.get("trained_by_auditmi"):
        # Record only images that were actually used: the split hashes raw bytes, so an unreadable
        # file (listed under "skipped") would otherwise appear as a shadow member or non-member.
        shadow_meta["member_sha256"] = sorted({r.sha256 for r in mf.rows})
        shadow_meta["non_member_sha256"] = sorted({r.sha256 for r in nf.rows})
    cal = fit_calibration(mf.features, nf.features, cfg, kinds=opts.attacks, seed=opts.seed, heldout_fraction=opts.heldout_fraction,
                          attack_options=opts.attack_options,
                          meta={"shadow": shadow_meta, "command": command, "environment": environment(),
                                "skipped": [{"path": str(s.path), "reason": s.reason} for s in mf.skipped + nf.skipped]})
    save_calibration(cal, out)
    return out, cal


# ----------------------------------------------------------------------------------------- evaluate


def run_evaluate(encoder: str, calibration: str | Path, members: Sequence[str | Path], non_members: Sequence[str | Path],
                 seed: int = 0, device: str = "auto", batch_size: int | None = None, cache_dir: str | Path | None = None,
                 use_cache: bool = True, progress: Progress | None = None, command: str = "", workers: int | None = None,
                 engine: str = "local") -> dict[str, Any]:
    """Per-classifier metrics on images whose membership the user knows (model builders)."""
    cal = load_calibration(calibration)
    enc = load_encoder(encoder, device)
    cache = FeatureCache(cache_dir or default_cache_dir(), cache_key(enc, cal.views, seed)) if use_cache else None
    mf = _features(discover_images(members, "member"), enc, cal.views, seed, batch_size, cache, workers, progress, "members", engine, device)
    nf = _features(discover_images(non_members, "non-member"), enc, cal.views, seed, batch_size, cache, workers, progress, "non-members", engine, device)
    _require_usable(mf, "member")
    _require_usable(nf, "non-member")
    x = np.concatenate([mf.features, nf.features])
    y = np.concatenate([np.ones(mf.n, int), np.zeros(nf.n, int)])
    results = {}
    for kind, ac in cal.attacks.items():
        sc = ac.attack.score(x)
        m = S.binary_metrics(y, sc, ac.thresholds["accuracy"]).to_dict()
        m["threshold_kind"] = "accuracy (from shadow calibration)"
        m["at_calibrated_fpr"] = {}
        for f in (0.01, 0.001):
            t = ac.threshold_at(f)
            fl = sc >= t
            m["at_calibrated_fpr"][f"{f:g}"] = {"threshold": float(t) if np.isfinite(t) else None, "tpr": float(fl[y == 1].mean()), "achieved_fpr": float(fl[y == 0].mean())}
        m["roc"] = S.roc_points(y, sc)
        results[kind] = m
    return {
        "kind": "auditmi.evaluate-report", "schema_version": SCHEMA_VERSION, "auditmi_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "command": command,
        "encoder": enc.describe(), "calibration": {"path": str(cal.path), "bundle_sha256": cal.sha256, "default_attack": cal.default_attack},
        "counts": {"members": mf.n, "non_members": nf.n, "skipped": len(mf.skipped) + len(nf.skipped)},
        "skipped": [{"path": str(s.path), "reason": s.reason} for s in mf.skipped + nf.skipped],
        "metrics": results, "config": {"views": cal.views.to_dict(), "seed": seed}, "environment": environment(),
    }
