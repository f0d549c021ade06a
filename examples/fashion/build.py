"""Rebuild the bundled Fashion-MNIST example from the public dataset.

The example is the "all known" setting of benchmarks/reproduce_fmnist.py:
  encoder/      the target encoder, SimCLR-pre-trained on the target members (auditmi checkpoint)
  calibration/  a bundle calibrated on a shadow encoder pre-trained on disjoint training images
  suspect/      40 target members + 40 target non-members (PNG, shuffled names) and truth.csv
  reference/    test-split images that were never used for training and are not in suspect/
  manifest.json split indices of every image used, training configurations, weights sha256

Usage (from the repository root):
  python examples/fashion/build.py [--members 64 --epochs 2500 --shadow-members 100 --shadow-epochs 1500] [--work benchmarks/.work] [--device cpu]
Encoders are trained with benchmarks/fmnist_setup.py when missing (resumable; ~40 min each on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from fmnist_setup import encoder_plan, images_for, make_splits  # noqa: E402

from auditmi.encoders.base import sha256_file  # noqa: E402
from auditmi.jobs.calibrate import CalibrateOptions, run_calibrate  # noqa: E402
from auditmi.shadow import train_encoder  # noqa: E402

N_SUSPECT = 40
N_REFERENCE = 200


def save(x, idx, folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in zip(idx, names, strict=True):
        Image.fromarray(x[i, 0].numpy()).save(folder / name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2500)
    ap.add_argument("--shadow-members", type=int, default=100, help="shadow run's member count")
    ap.add_argument("--shadow-epochs", type=int, default=1500, help="shadow run's epochs")
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / ".work"))
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    # Target non-members: the benchmark's test-split non-members plus more test images (the test
    # permutation's prefix is the same), so suspect/ and reference/ never overlap.
    splits = make_splits(a.members, n_test=max(a.members, 2 * N_SUSPECT + N_REFERENCE + 60))
    sm_n, se_n = a.shadow_members or a.members, a.shadow_epochs or a.epochs
    # Both runs use the same seeded permutation of the train split: target members are its first
    # `members` images, shadow members/non-members come after the first `shadow-members`, so they
    # are disjoint from the target members whenever shadow-members >= members.
    if sm_n < a.members:
        sys.exit("--shadow-members must be >= --members so shadow images stay disjoint from the target members")
    shadow_splits = make_splits(sm_n)
    run = Path(a.work) / f"m{a.members}-e{a.epochs}"
    shadow_run = Path(a.work) / f"m{sm_n}-e{se_n}"
    plan = encoder_plan(a.epochs)
    for name, r, sp, pl in (("target", run, splits, plan), ("shadow_same", shadow_run, shadow_splits, encoder_plan(se_n))):
        src, cfg = pl[name]
        if not (r / name / "final" / "encoder.json").exists():
            print(f"training {name} (resumable) ...", flush=True)
            train_encoder(images_for(src, sp), r / name, cfg, device=a.device, extra_meta={"data": src})

    for sub in ("encoder", "calibration", "suspect", "reference", "_shadow"):
        shutil.rmtree(HERE / sub, ignore_errors=True)
    shutil.copytree(run / "target" / "final", HERE / "encoder")

    # Shadow members/non-members as files, for calibrate --shadow-encoder (the shadow itself is not shipped).
    sm, sn = images_for("fmnist:shadow_members", shadow_splits), images_for("fmnist:shadow_non_members", shadow_splits)
    tmp = HERE / "_shadow"
    save(sm, range(len(sm)), tmp / "members", [f"sm_{i:05d}.png" for i in range(len(sm))])
    save(sn, range(len(sn)), tmp / "non_members", [f"sn_{i:05d}.png" for i in range(len(sn))])
    run_calibrate(CalibrateOptions(out=HERE / "calibration", shadow_encoder=str(shadow_run / "shadow_same" / "final"),
                                   members=[tmp / "members"], non_members=[tmp / "non_members"], seed=0, device=a.device),
                  command="examples/fashion/build.py")
    shutil.rmtree(tmp)

    tm, tn = images_for("fmnist:target_members", splits), images_for("fmnist:target_non_members", splits)
    rng = np.random.default_rng(1)
    mem_pick = np.sort(rng.choice(len(tm), N_SUSPECT, replace=False))
    non_pick = np.sort(rng.choice(len(tn), N_SUSPECT, replace=False))
    ref_pool = np.setdiff1d(np.arange(len(tn)), non_pick)
    ref_pick = np.sort(rng.choice(ref_pool, N_REFERENCE, replace=False))
    # Shuffled anonymous names so a file name never reveals membership.
    order = rng.permutation(2 * N_SUSPECT)
    names = [f"img_{k:03d}.png" for k in order]
    save(tm, mem_pick, HERE / "suspect", names[:N_SUSPECT])
    save(tn, non_pick, HERE / "suspect", names[N_SUSPECT:])
    with open(HERE / "suspect" / "truth.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "member"])
        rows = [(n, 1) for n in names[:N_SUSPECT]] + [(n, 0) for n in names[N_SUSPECT:]]
        for r in sorted(rows):
            w.writerow(r)
    save(tn, ref_pick, HERE / "reference", [f"ref_{i:03d}.png" for i in range(N_REFERENCE)])

    tgt = splits.target_members
    non = splits.target_non_members
    manifest = {
        "dataset": "Fashion-MNIST (train/test IDX files of the public release)",
        "splits_seed": 0,
        "target_members_train_idx": [int(i) for i in tgt],
        "target_non_members_test_idx": [int(i) for i in non],
        "shadow_members_train_idx": [int(i) for i in shadow_splits.shadow_members],
        "shadow_non_members_train_idx": [int(i) for i in shadow_splits.shadow_non_members],
        "suspect": {n: {"split": "train" if k < N_SUSPECT else "test",
                        "index": int(tgt[mem_pick[k]] if k < N_SUSPECT else non[non_pick[k - N_SUSPECT]]),
                        "member": int(k < N_SUSPECT)} for k, n in enumerate(names)},
        "reference_test_idx": [int(non[i]) for i in ref_pick],
        "training": {"target": plan["target"][1].to_dict(), "target_members": a.members,
                     "shadow": encoder_plan(se_n)["shadow_same"][1].to_dict(), "shadow_members": sm_n},
        "encoder_weights_sha256": sha256_file(HERE / "encoder" / "model.safetensors"),
        "command": "python examples/fashion/build.py " + " ".join(sys.argv[1:]),
    }
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print("example written to", HERE)


if __name__ == "__main__":
    main()
