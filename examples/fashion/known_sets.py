"""Write the example encoder's known members and non-members (outside suspect/) as PNG folders.

For `auditmi evaluate`, the mode for model builders who know their training set:
  python examples/fashion/known_sets.py /tmp/fashion-known
  auditmi evaluate --encoder examples/fashion/encoder --calibration examples/fashion/calibration \
      --members /tmp/fashion-known/members --non-members /tmp/fashion-known/non_members
Images come from Fashion-MNIST (Debian package dataset-fashion-mnist, or $AUDITMI_FASHION_MNIST)
at the indices recorded in manifest.json; the suspect/ and reference/ images are left out.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image

from auditmi.datasets import fashion_mnist

HERE = Path(__file__).resolve().parent


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    man = json.loads((HERE / "manifest.json").read_text())
    used = {(v["split"], v["index"]) for v in man["suspect"].values()} | {("test", i) for i in man["reference_test_idx"]}
    xtr, _ = fashion_mnist("train")
    xte, _ = fashion_mnist("test")
    counts = {}
    for name, split, idx, x in (("members", "train", man["target_members_train_idx"], xtr),
                                ("non_members", "test", man["target_non_members_test_idx"], xte)):
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        n = 0
        for i in idx:
            if (split, i) in used:
                continue
            Image.fromarray(x[i]).save(d / f"{split}_{i:05d}.png")
            n += 1
        counts[name] = n
    print(json.dumps({"out": str(out), **counts}))


if __name__ == "__main__":
    main()
