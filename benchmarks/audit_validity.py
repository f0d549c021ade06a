"""Are auditmi's dataset-level verdicts honest? Null calibration, power and shift detection.

On the bundled Fashion-MNIST example (examples/fashion, rebuilt by examples/fashion/build.py):
  * null: known non-members (test-split images never used for training, from manifest.json) are
    split at random into "suspects" and "reference" many times; the fraction of rank tests with
    p < 0.05 must stay at or below 0.05 (within sampling error). The reference-free binomial test
    (which relies on the calibration transferring) is checked the same way, at every --fpr the
    scan accepts (and the finer ones it refuses are listed), with 40 and 200 suspects per draw.
  * power: 20 target members as suspects against the reference give p < 1e-3 (the scan itself on
    a folder of 20 members, plus the distribution over random draws of 20 members).
  * shift: a reference made deliberately different (brightness +40; MNIST digits) is reported as
    "inconclusive", while the unshifted reference is not.

  * EncoderMI-R (when the example bundle carries shadow encoders): the same null check for the
    calibrated score, with suspects and reference drawn from 1,200 known non-members and the
    difficulty model refitted (reference cross-fitted) on every split; rank test and BH flags
    (the scan's conformal p-values) at 0.05.

Usage:
  python benchmarks/audit_validity.py [--splits 500] [--json benchmarks/results/validity.json]
  python benchmarks/audit_validity.py --only-calibrated [--splits 1000]   # EncoderMI-R null check only
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from auditmi import stats as S
from auditmi.calibration import load_calibration
from auditmi.datasets import fashion_mnist, mnist_digits
from auditmi.encoders import load_encoder
from auditmi.errors import InputError
from auditmi.jobs.scan import ScanOptions, run_scan
from auditmi.pipeline import compute_features

ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "examples" / "fashion"


def write(images: np.ndarray, folder: Path, prefix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, a in enumerate(images):
        p = folder / f"{prefix}_{i:05d}.png"
        Image.fromarray(a).save(p)
        out.append(p)
    return out


def calibrated_null(splits: int, n_unseen: int = 1000) -> dict:
    """EncoderMI-R under the null: suspects and reference drawn from the same known non-members
    (the example's reference plus unseen test images), the whole procedure redone per split."""
    import torch

    from auditmi.calibrated_scan import cached_signals
    from auditmi.difficulty import uses_neighbours
    from auditmi.encoders.local import load_local
    from auditmi.measures import embed_whole_files
    from auditmi.shadow_set import load_shadows, shadow_encoder
    from auditmi.signals import summaries

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from calibrated import null_splits

    man = json.loads((EX / "manifest.json").read_text())
    cal = load_calibration(EX / "calibration")
    ss = load_shadows(cal.meta, cal.path)
    assert ss is not None
    xte, _ = fashion_mnist("test")
    rng = np.random.default_rng(2026)
    unseen = np.sort(rng.choice(np.setdiff1d(np.arange(10000), man["target_non_members_test_idx"]), n_unseen, replace=False))
    work = ROOT / "benchmarks" / ".work" / "validity"
    paths = write(xte[unseen], work / "unseen", "te") + sorted((EX / "reference").glob("*.png"))
    cache = work / "cache"
    n = cal.views.n_views
    cpu = torch.device("cpu")
    ts = cached_signals(paths, load_local(EX / "encoder", cpu), cal.views, 0, cache)
    t = summaries(ts.raw, n)
    sh = np.stack([summaries(cached_signals(paths, shadow_encoder(e, cpu), cal.views, 0, cache).raw, n) for e in ss.shadows], axis=1)
    # The neighbourhood signal depends on the reference: null_splits recomputes it on every split
    # from the whole-image embeddings (the scan's own embed_whole_files), target first.
    emb = ([embed_whole_files(ts.paths, enc, cal.views) for enc in [load_local(EX / "encoder", cpu), *(shadow_encoder(e, cpu) for e in ss.shadows)]]
           if uses_neighbours(ss.spec) else None)
    return {"pool": f"{n_unseen} unseen test images + the {len(paths) - n_unseen} reference images", "shadows": ss.k,
            "score": ss.spec.to_dict(), **null_splits(t, sh, ss.spec, splits, ts.sha256, emb=emb)}


def _reference_free_p(ac, suspect_scores: np.ndarray, thr: float, alpha: float) -> float:
    """The scan's reference-free p-value (auditmi.jobs.scan.statistics) for these suspect scores."""
    null = ac.heldout_labels == 0
    fp, n0 = int((ac.heldout_scores[null] >= thr).sum()), int(null.sum())
    return S.calibrated_binomial_test(int((suspect_scores >= thr).sum()), len(suspect_scores), fp, n0, alpha / 2).p_value


def _reference_free_null(ac, sn: np.ndarray, splits: int, sizes: tuple[int, ...], rng: np.random.Generator) -> dict:
    """Rejection rate at alpha 0.05 of the reference-free test at every --fpr, over random draws of known non-members.

    Also the rate of the test it replaced (against (fp + 1) / (n + 1), no bound), for comparison.
    """
    null = ac.heldout_labels == 0
    n0 = int(null.sum())
    out: dict = {"held_out_non_members": n0, "finest_fpr": S.fpr_resolution(n0), "alpha": 0.05, "splits": splits, "by_fpr": {}}
    for fpr in (0.01, 0.025, 0.05, 0.1, None):
        key = "accuracy" if fpr is None else f"{fpr:g}"
        try:
            if fpr is not None:
                ac.check_fpr(fpr)
        except InputError as e:
            out["by_fpr"][key] = {"accepted": False, "message": str(e)}
            continue
        thr = ac.thresholds["accuracy"] if fpr is None else ac.threshold_at(fpr)
        fp = int((ac.heldout_scores[null] >= thr).sum())
        old_fpr = (fp + 1) / (n0 + 1)
        row: dict = {"accepted": True, "threshold": thr, "calibrated_fpr": fp / n0, "heldout_false_positives": fp,
                     "fpr_upper_bound_97.5": S.fpr_upper_bound(fp, n0, 0.975),
                     "flag_rate_on_all_known_non_members": float((sn >= thr).mean())}
        for n in sizes:
            p_new, p_old = [], []
            for _ in range(splits):
                s = sn[rng.choice(len(sn), n, replace=False)]
                p_new.append(_reference_free_p(ac, s, thr, 0.05))
                p_old.append(S.binomial_test(int((s >= thr).sum()), n, old_fpr).p_value)
            row[f"n_suspects={n}"] = {"rejection_rate": float((np.array(p_new) < 0.05).mean()),
                                      "rejection_rate_before_issue_14": float((np.array(p_old) < 0.05).mean())}
        out["by_fpr"][key] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--splits", type=int, default=500)
    ap.add_argument("--n-suspects", type=int, default=40)
    ap.add_argument("--n-reference", type=int, default=200)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "validity.json"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only-calibrated", action="store_true", help="run only the EncoderMI-R null check (needs the bundle's shadows)")
    a = ap.parse_args()
    if a.only_calibrated:
        res = {"encodermi_r_null": calibrated_null(a.splits), "command": "python " + " ".join(sys.argv)}
        out = Path(a.json).with_name("validity_calibrated.json")
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(json.dumps(res, indent=1))
        return
    t0 = time.time()
    man = json.loads((EX / "manifest.json").read_text())
    xtr, _ = fashion_mnist("train")
    xte, _ = fashion_mnist("test")
    cal = load_calibration(EX / "calibration")
    ac = cal.get(None)
    enc = load_encoder(str(EX / "encoder"), a.device)
    res: dict = {"attack": cal.default_attack, "command": "python " + " ".join(sys.argv)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        non_idx = np.array(man["target_non_members_test_idx"])
        mem_idx = np.array(man["target_members_train_idx"])
        non_paths = write(xte[non_idx], tmp / "non", "n")
        mem_paths = write(xtr[mem_idx], tmp / "mem", "m")
        fn = compute_features(non_paths, enc, cal.views, seed=0, num_workers=0)
        fm = compute_features(mem_paths, enc, cal.views, seed=0, num_workers=0)
        sn, sm = ac.attack.score(fn.features), ac.attack.score(fm.features)

        # ---- null: random splits of known non-members
        rng = np.random.default_rng(0)
        ps, pb = [], []
        thr = ac.thresholds["accuracy"]
        _, cfpr = ac.tpr_fpr_at(thr)
        for _ in range(a.splits):
            perm = rng.permutation(len(sn))
            s, r = sn[perm[: a.n_suspects]], sn[perm[a.n_suspects: a.n_suspects + a.n_reference]]
            ps.append(S.rank_test(s, r).p_value)
            pb.append(_reference_free_p(ac, s, thr, 0.05))
        ps, pb = np.array(ps), np.array(pb)
        rate = float((ps < 0.05).mean())
        se = float(np.sqrt(0.05 * 0.95 / a.splits))
        res["null"] = {"splits": a.splits, "n_suspects": a.n_suspects, "n_reference": a.n_reference, "n_known_non_members": len(sn),
                       "rank_test_rejection_rate_at_0.05": rate, "standard_error": se, "within_sampling_error": rate <= 0.05 + 2 * se,
                       "binomial_test_rejection_rate_at_0.05": float((pb < 0.05).mean()),
                       "non_member_flag_rate_at_accuracy_threshold": float((sn >= thr).mean()), "calibrated_fpr": cfpr,
                       "reference_free": _reference_free_null(ac, sn, a.splits, (a.n_suspects, 200), rng)}

        # ---- power: 20 members vs the reference
        ref_feats = compute_features(sorted((EX / "reference").glob("*.png")), enc, cal.views, seed=0, num_workers=0).features
        sr = ac.attack.score(ref_feats)
        draws = [S.rank_test(sm[rng.choice(len(sm), 20, replace=False)], sr).p_value for _ in range(200)]
        truth = {r[0]: int(r[1]) for r in (line.split(",") for line in (EX / "suspect" / "truth.csv").read_text().splitlines()[1:])}
        members_in_suspect = sorted(n for n, m in truth.items() if m == 1)[:20]
        d20 = tmp / "suspect20"
        d20.mkdir()
        for n in members_in_suspect:
            (d20 / n).write_bytes((EX / "suspect" / n).read_bytes())
        rep = run_scan([d20], ScanOptions(encoder=str(EX / "encoder"), calibration=EX / "calibration", reference=[EX / "reference"],
                                          use_cache=False, device=a.device, workers=0))
        res["power"] = {"scan_20_members_p_value": rep.verdict.p_value, "scan_20_members_verdict": rep.verdict.label.value,
                        "rank_auc": rep.statistics.rank_test.auc,
                        "random_draws_of_20_members": {"n": len(draws), "median_p": float(np.median(draws)),
                                                        "fraction_p_below_1e-3": float((np.array(draws) < 1e-3).mean())}}

        # ---- shift: brightness-shifted and MNIST references against the real suspects
        ref_imgs = xte[np.array(man["reference_test_idx"])]
        bright = write(np.clip(ref_imgs.astype(int) + 40, 0, 255).astype(np.uint8), tmp / "ref_bright", "b")
        mn, _ = mnist_digits()
        write(mn[:200], tmp / "ref_mnist", "d")
        shift = {}
        for name, ref in (("unshifted reference", EX / "reference"), ("brightness +40", tmp / "ref_bright"), ("MNIST digits", tmp / "ref_mnist")):
            r = run_scan([EX / "suspect"], ScanOptions(encoder=str(EX / "encoder"), calibration=EX / "calibration", reference=[ref],
                                                      use_cache=False, device=a.device, workers=0))
            shift[name] = {"verdict": r.verdict.label.value, "shift_auc": r.statistics.shift_check.auc,
                           "shift_p": r.statistics.shift_check.p_value, "rank_p": r.statistics.rank_test.p_value}
        res["shift"] = shift
        del bright
    if cal.meta.get("shadows"):
        res["encodermi_r_null"] = calibrated_null(a.splits)
    res["seconds"] = time.time() - t0
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
