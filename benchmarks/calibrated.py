"""Raw versus reference-calibrated (EncoderMI-R) membership scores on the bundled example.

Target: examples/fashion/encoder (64 members, 2,500 epochs). Shadows: the K encoders of
benchmarks/train_shadows.py (public pool of Fashion-MNIST train images, seeded halves).
Reference: examples/fashion/reference (200 test-split non-members).

No calibration step sees an evaluated image:
  * the score's regression and combination are chosen on the shadows alone (auditmi.shadow_game);
  * the difficulty model is fitted on the reference (its own scores cross-fitted);
  * evaluation: all 64 target members and N unseen test-split images (not in reference/ or
    suspect/, nor any image of the example's splits), each scored as a suspect.

Also: AUC against the number of shadows, the README's suspect folder (rank test), and random
draws of 40 unseen test images as suspects (how often the rank test says likely-used).

Usage (from the repository root, after benchmarks/train_shadows.py):
  python benchmarks/calibrated.py [--shadows-dir benchmarks/.work/shadows] [--unseen 1000] [--json benchmarks/results/calibrated.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from auditmi import difficulty as D
from auditmi import stats as S
from auditmi.datasets import fashion_mnist, mnist_digits
from auditmi.encoders.local import load_local
from auditmi.images import read_and_hash
from auditmi.measures import embed_whole_files
from auditmi.neighbours import reference_nn, suspect_nn
from auditmi.shadow_game import choose_spec
from auditmi.signals import SCORE_SIGNALS, SUMMARY_NAMES, compute_signals, summaries
from auditmi.stats import reference_threshold
from auditmi.views import ViewConfig

EX = ROOT / "examples" / "fashion"
CFG = ViewConfig()
SEED = 0


def write_pngs(x: np.ndarray, idx: np.ndarray, folder: Path, prefix: str) -> list[Path]:
    """Images as grayscale PNGs, written the way examples/fashion/build.py writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in idx:
        p = folder / f"{prefix}_{int(i):05d}.png"
        if not p.exists():
            Image.fromarray(x[int(i)]).save(p)
        out.append(p)
    return out


def signals_for(enc_dir: Path, paths: list[Path], name: str, cache: Path) -> np.ndarray:
    """(N, d) summary signals of ``paths`` under the encoder in ``enc_dir`` (cached per encoder and set)."""
    enc = load_local(enc_dir, torch.device("cpu"))
    tag = "" if CFG.n_views == 10 else f"-v{CFG.n_views}"
    f = cache / f"{enc.info['weights_sha256'][:16]}-{name}{tag}.npz"
    if f.exists():
        z = np.load(f)
        if list(z["sha"]) == shas(paths):  # same images in the same order
            return summaries(z["raw"], CFG.n_views)
    s = compute_signals(paths, enc, CFG, SEED)
    assert not s.skipped, s.skipped
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(f, raw=s.raw, sha=np.array(s.sha256))
    return summaries(s.raw, CFG.n_views)


def embeddings_for(enc_dir: Path, paths: list[Path], name: str, cache: Path) -> np.ndarray:
    """(N, D) unit-norm whole-image embeddings of ``paths`` under the encoder (the neighbourhood signal), cached."""
    enc = load_local(enc_dir, torch.device("cpu"))
    f = cache / f"{enc.info['weights_sha256'][:16]}-{name}-whole.npz"
    if f.exists():
        z = np.load(f)
        if list(z["sha"]) == shas(paths):
            return z["emb"]
    e = embed_whole_files(paths, enc, CFG)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(f, emb=e, sha=np.array(shas(paths)))
    return e


def with_nn(sig: dict[str, np.ndarray], emb: dict[str, np.ndarray], ref_shas: list[str] | None = None) -> dict[str, np.ndarray]:
    """Append the nn_ref column (auditmi.neighbours) to one encoder's summary signals of every set:
    the reference against itself (leave one out), every other set as suspects against the reference."""
    out = {}
    for s, v in sig.items():
        if s == "pool":
            out[s] = v  # the shadow game computes its own (its reference is each playing shadow's non-members)
        elif s == "reference":
            out[s] = np.c_[v, reference_nn(emb["reference"])]
        else:
            out[s] = np.c_[v, suspect_nn(emb[s], emb["reference"], SHAS[s], SEED)]
    return out


SHAS: dict[str, list[str]] = {}


def shas(paths: list[Path]) -> list[str]:
    """The images' sha256, as the scan computes them (the tie-breakers of the conformal p-values)."""
    return [read_and_hash(p)[1] for p in paths]


def metrics(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    return {"auc": round(S.rank_test(s[y == 1], s[y == 0]).auc, 4), "tpr_at_1pct_fpr": round(S.tpr_at_fpr(y, s, 0.01), 4)}


def nn_split(target: np.ndarray, shadows: np.ndarray, emb: list[np.ndarray] | None, ref: np.ndarray, sus: np.ndarray,
             sus_shas: list[str], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One split's target/shadow signals of reference and suspects, with nn_ref taken against THIS
    split's reference (``emb``: 1 + K arrays of (N, D_e) embeddings, target first; None: no nn_ref)."""
    tr, ts, sr, ss = target[ref], target[sus], shadows[ref], shadows[sus]
    if emb is None:
        return tr, ts, sr, ss
    col_r = np.stack([reference_nn(e[ref]) for e in emb], axis=1)
    col_s = np.stack([suspect_nn(e[sus], e[ref], sus_shas, seed) for e in emb], axis=1)
    return (np.c_[tr, col_r[:, 0]], np.c_[ts, col_s[:, 0]],
            np.concatenate([sr, col_r[:, 1:, None]], axis=2), np.concatenate([ss, col_s[:, 1:, None]], axis=2))


def null_splits(target: np.ndarray, shadows: np.ndarray, spec: D.ScoreSpec, splits: int, shas: list[str], n_sus: int = 40,
                n_ref: int = 200, alpha: float = 0.05, seed: int = 11, emb: list[np.ndarray] | None = None) -> dict:
    """Rejection rates of the rank test and of BH flags (any image flagged) when nothing is a member.

    BH runs on the scan's per-image p-values (conformal, tie-breakers from a scan seed (one per
    split) and each image's sha256, as auditmi.jobs.scan.statistics computes them) and, for comparison, on the
    conservative empirical p-values.
    """
    rng = np.random.default_rng(seed)
    rank_rej = bh_rej = bh_c_rej = 0
    for r in range(splits):
        pick = rng.permutation(target.shape[0])[: n_sus + n_ref]
        ref, sus = pick[:n_ref], pick[n_ref:]
        tr, ts, sr, ss = nn_split(target, shadows, emb, ref, sus, [shas[i] for i in sus], r)
        oof = D.cross_fit_scores(tr, sr, spec, seed=r)
        sc = D.score(D.fit(tr, sr, spec), ts, ss)
        rank_rej += S.rank_test(sc, oof).p_value < alpha
        bh_rej += bool(S.benjamini_hochberg(S.empirical_pvalues(sc, oof), alpha).any())
        # Each split is a separate audit with its own scan seed: the p-values' level holds over the
        # tie-breakers, which a fixed seed would freeze across splits that reuse the same 1,200 images.
        u = S.tie_breakers([shas[i] for i in sus], seed=r)
        bh_c_rej += bool(S.benjamini_hochberg(S.conformal_pvalues(sc, oof, u), alpha).any())
    se = float(np.sqrt(alpha * (1 - alpha) / splits))
    return {"splits": splits, "alpha": alpha, "n_suspects": n_sus, "n_reference": n_ref, "rank_test_rejection_rate": rank_rej / splits,
            "bh_any_flag_rate": bh_c_rej / splits, "bh_any_flag_rate_empirical_p": bh_rej / splits, "two_se": round(2 * se, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shadows-dir", default=str(ROOT / "benchmarks" / ".work" / "shadows"))
    ap.add_argument("--unseen", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--splits", type=int, default=500, help="null splits for the validity check")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "calibrated.json"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--shadow-ids", type=int, nargs="*", help="use only these shadows (e.g. 0 1 4 5, the example bundle's)")
    ap.add_argument("--no-neighbours", action="store_true", help="leave the neighbourhood signal (nn_ref) out: the summaries only")
    ap.add_argument("--views", type=int, default=10, help="augmented views per image (the scan's --views)")
    ap.add_argument("--target", default="", help="another target instead of the example's: mN-eE, a benchmarks/fmnist_setup.py "
                    "run (N members trained E epochs; its members are all scored, the example's reference and unseen test images "
                    "are its non-members)")
    a = ap.parse_args()
    global CFG
    CFG = ViewConfig(n_views=a.views)
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.time()
    work = ROOT / "benchmarks" / ".work" / "calib"
    sdir = Path(a.shadows_dir)
    pool = json.loads((sdir / "pool.json").read_text())
    shadow_dirs = sorted((p for p in sdir.glob("shadow-*") if (p / "final" / "encoder.json").exists()), key=lambda p: int(p.name.split("-")[1]))
    if a.shadow_ids:
        shadow_dirs = [p for p in shadow_dirs if int(p.name.split("-")[1]) in a.shadow_ids]
    k_idx = [int(p.name.split("-")[1]) for p in shadow_dirs]
    man = json.loads((EX / "manifest.json").read_text())
    xtr, _ = fashion_mnist("train")
    xte, _ = fashion_mnist("test")
    used_test = set(man["target_non_members_test_idx"])  # covers suspect/ non-members and reference/
    rng = np.random.default_rng(2026)
    unseen_idx = np.sort(rng.choice(np.setdiff1d(np.arange(10000), sorted(used_test)), a.unseen, replace=False))
    members_idx = np.array(man["target_members_train_idx"])
    target_dir = EX / "encoder"
    if a.target:  # a benchmarks/fmnist_setup.py target; the shadows' own training images are left out of its members
        from fmnist_setup import make_splits

        n_m = int(a.target.split("-")[0][1:])
        members_idx = make_splits(n_m).target_members
        # pool indices are Fashion-MNIST train indices, except for MNIST shadows (no overlap possible)
        shadow_train = set() if pool.get("dataset") == "mnist" else {int(i) for k in k_idx for i in pool["members"][k]}
        res_note = {"target": a.target, "members_dropped_as_shadow_training_images": int(np.isin(members_idx, sorted(shadow_train)).sum())}
        members_idx = np.setdiff1d(members_idx, sorted(shadow_train))
        target_dir = ROOT / "benchmarks" / ".work" / a.target / "target" / "final"
    sets = {
        "members": write_pngs(xtr, members_idx, work / "members", "tr"),
        "unseen": write_pngs(xte, unseen_idx, work / "unseen", "te"),
        # the shadows' public pool (the shadow game's images): Fashion-MNIST train images, or MNIST digits
        "pool": (write_pngs(mnist_digits()[0], np.array(pool["pool_train_idx"]), work / "pool-mnist", "mn")
                 if pool.get("dataset") == "mnist" else write_pngs(xtr, np.array(pool["pool_train_idx"]), work / "pool", "tr")),
        "reference": sorted((EX / "reference").glob("*.png")),
        "suspect": sorted((EX / "suspect").glob("*.png")),
    }
    encs = {"target": target_dir, **{f"shadow-{k}": d / "final" for k, d in zip(k_idx, shadow_dirs, strict=True)}}
    cache = work / ("signals-" + a.target if a.target else "signals")
    sig = {e: {s: signals_for(d, p, s, cache) for s, p in sets.items()} for e, d in encs.items()}
    shadows = [f"shadow-{k}" for k in k_idx]
    use_nn = not a.no_neighbours
    emb: dict[str, dict[str, np.ndarray]] = {}
    if use_nn:  # the neighbourhood signal (auditmi.neighbours): whole-image embeddings, nn_ref against the reference
        SHAS.update({s: shas(p) for s, p in sets.items()})
        emb = {e: {s: embeddings_for(d, p, s, cache) for s, p in sets.items()} for e, d in encs.items()}
        sig = {e: with_nn(sig[e], emb[e]) for e in encs}
    names = SCORE_SIGNALS if use_nn else SUMMARY_NAMES

    def stack(names: list[str], s: str) -> np.ndarray:
        return np.stack([sig[n][s] for n in names], axis=1)

    # 1. Choose the score on the shadows alone.
    inc = np.array([[int(i) in set(m) for i in pool["pool_train_idx"]] for m in (pool["members"][k] for k in k_idx)])
    if len(shadows) >= 2:
        spec = choose_spec(stack(shadows, "pool"), inc,
                           embeddings=np.stack([emb[n]["pool"] for n in shadows], axis=1) if use_nn else None)
    else:  # no shadow game with one shadow: the library's documented default
        from auditmi.shadow_set import DEFAULT_SPEC as spec
    y = np.r_[np.ones(len(sets["members"])), np.zeros(len(sets["unseen"]))]
    res: dict = {"n_shadows": len(shadows), "shadows": shadows, "neighbourhood_signal": use_nn, "spec": spec.to_dict(),
                 **(res_note if a.target else {}),
                 "evaluation": {"members": len(sets["members"]), "unseen_test": len(sets["unseen"]), "reference": len(sets["reference"])}}

    # 2. Raw signals of the target (no calibration).
    res["raw"] = {n: metrics(y, np.r_[sig["target"]["members"][:, j], sig["target"]["unseen"][:, j]])
                  for j, n in enumerate(SUMMARY_NAMES)}
    if use_nn:  # lower = more member-like
        res["raw"]["nn_ref"] = metrics(y, -np.r_[sig["target"]["members"][:, -1], sig["target"]["unseen"][:, -1]])

    def calibrated(names: list[str], sp: D.ScoreSpec) -> tuple[D.DifficultyFit, np.ndarray, np.ndarray]:
        f = D.fit(sig["target"]["reference"], stack(names, "reference"), sp)
        ev = np.r_[D.score(f, sig["target"]["members"], stack(names, "members")), D.score(f, sig["target"]["unseen"], stack(names, "unseen"))]
        oof = D.cross_fit_scores(sig["target"]["reference"], stack(names, "reference"), sp, seed=SEED)
        return f, ev, oof

    f, ev, oof = calibrated(shadows, spec)
    res["calibrated"] = metrics(y, ev)
    res["difficulty_r2"] = dict(zip(spec.signals, [round(float(v), 3) for v in f.r2], strict=True))
    # Per-signal calibrated (same regression, one signal at a time), for the table.
    res["calibrated_single"] = {}
    for j, n in enumerate(names):
        w = np.zeros(len(names))
        w[j] = 1.0 if n != "nn_ref" else -1.0  # members sit further from their neighbours
        _, e1, _ = calibrated(shadows, D.ScoreSpec(regression=spec.regression, weights=list(w), signals=list(names)))
        res["calibrated_single"][n] = metrics(y, e1)
    # Deployed threshold: conformal rule on the reference's out-of-fold scores.
    for fpr in (0.01, 0.05):
        rt_ = reference_threshold(oof, fpr)
        thr = rt_.threshold
        res[f"deployed_fpr{fpr:g}"] = {"threshold": float(thr), "expected_fpr": rt_.expected_fpr, "fpr_interval_95": rt_.fpr_interval, "tpr_members": round(float(np.mean(ev[y == 1] >= thr)), 4),
                                      "fpr_unseen": round(float(np.mean(ev[y == 0] >= thr)), 4)}
    # 3. AUC against the number of shadows (spec from the game with all shadows, refitted on the reference).
    res["by_n_shadows"] = {}
    for k in (1, 2, 4, 8, 16):
        if k <= len(shadows):
            _, e, _ = calibrated(shadows[:k], spec)
            res["by_n_shadows"][k] = metrics(y, e)
    # 4. README example: suspect/ vs reference/ (suspects scored by the full fit, reference out-of-fold).
    sus = D.score(f, sig["target"]["suspect"], stack(shadows, "suspect"))
    rt = S.rank_test(sus, oof)
    truth = {r.split(",")[0]: int(r.split(",")[1]) for r in (EX / "suspect" / "truth.csv").read_text().split()[1:]}
    ys = np.array([truth[p.name] for p in sets["suspect"]])
    pv = S.conformal_pvalues(sus, oof, S.tie_breakers(shas(sets["suspect"]), SEED))
    bh = S.benjamini_hochberg(pv, 0.05)
    raw_rt = S.rank_test(sig["target"]["suspect"][:, 0], sig["target"]["reference"][:, 0])
    res["readme_suspects"] = {"rank_p": rt.p_value, "auc": round(rt.auc, 4), "raw_pair_mean_rank_p": raw_rt.p_value,
                              "bh_q0.05_flags": int(bh.sum()), "bh_true_members": int((bh & (ys == 1)).sum()),
                              "suspect_auc_vs_truth": round(S.rank_test(sus[ys == 1], sus[ys == 0]).auc, 4)}
    # 5. Null draws: 40 unseen test images as suspects.
    un = ev[y == 0]
    rng = np.random.default_rng(7)
    rej = sum(S.rank_test(un[rng.choice(un.size, 40, replace=False)], oof).p_value < 0.05 for _ in range(a.draws))
    res["null_draws_40_unseen"] = {"draws": a.draws, "likely_used_rate": rej / a.draws}
    # 6. Null validity: suspects AND reference drawn from the same non-members, the whole EncoderMI-R
    # procedure (fit on the reference, cross-fitted reference scores) redone on every split.
    # nn_ref is recomputed on every split against that split's reference, from the summaries without it
    d0 = len(SUMMARY_NAMES)
    e_null = [np.r_[emb[n]["unseen"], emb[n]["reference"]] for n in ["target", *shadows]] if use_nn else None
    res["null_splits"] = null_splits(np.r_[sig["target"]["unseen"], sig["target"]["reference"]][:, :d0],
                                     np.r_[stack(shadows, "unseen"), stack(shadows, "reference")][:, :, :d0], spec, a.splits,
                                     shas(sets["unseen"]) + shas(sets["reference"]), emb=e_null)
    res["seconds"] = round(time.time() - t0, 1)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
