"""How many images does the encoder-free shift check need? Its detection rate by set size.

Simulated descriptors (the same number as auditmi.descriptors computes, independent standard
normals) for 100 suspects and n reference images; the reference is shifted in one descriptor by
d standard deviations (a single-descriptor AUC of Phi(d / sqrt(2))). The fraction of runs in
which ``shift_check`` (defaults: alpha 0.01, AUC >= 0.6, 200 permutations) says
"distinguishable" is its power; with d = 0 it is its false-alarm rate. The figures back the
minimum set size in auditmi.verdict.MIN_SHIFT_CHECK_SET (docs/method.md).

Usage:
  python benchmarks/shift_min_size.py [--runs 25] [--json benchmarks/results/shift_min_size.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

from auditmi.descriptors import STAT_NAMES
from auditmi.shift import shift_check


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=25)
    ap.add_argument("--n-suspects", type=int, default=100)
    ap.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20, 40])
    ap.add_argument("--shifts", type=float, nargs="+", default=[4.0, 1.8, 0.0])
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "shift_min_size.json"))
    a = ap.parse_args()
    t0 = time.time()
    rng = np.random.default_rng(0)
    rows = []
    for d in a.shifts:
        for n_r in a.sizes:
            hits = 0
            for r in range(a.runs):
                xs = rng.normal(size=(a.n_suspects, len(STAT_NAMES)))
                xr = rng.normal(size=(n_r, len(STAT_NAMES)))
                xr[:, 0] += d
                hits += shift_check(xs, xr, seed=r).distinguishable
            row = {"shift_sd": d, "single_descriptor_auc": float(norm.cdf(d / np.sqrt(2))), "n_reference": n_r,
                   "n_suspects": a.n_suspects, "runs": a.runs, "detected": hits / a.runs}
            rows.append(row)
            print(json.dumps(row), flush=True)
    res = {"command": "python " + " ".join(sys.argv), "rows": rows, "seconds": time.time() - t0}
    Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
