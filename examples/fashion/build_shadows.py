"""Put the shadow encoders of benchmarks/train_shadows.py into the example's calibration bundle.

The shadows were pre-trained with the target's recipe on seeded halves of a public pool of
Fashion-MNIST TRAIN images that are not target members (the "all known" setting); the example's
suspect non-members and reference images come from the TEST split, so no shadow saw them (checked
here by sha256). The EncoderMI-R score is chosen on the shadows alone (auditmi.shadow_game), exactly
as ``auditmi calibrate --shadow-data DIR --shadows K`` does. examples/fashion/encoder is not touched.

Usage (from the repository root, after the shadows are trained):
  python examples/fashion/build_shadows.py [--shadows-dir benchmarks/.work/shadows] [--max-shadows 8] [--shadow-ids 0 1 4 5]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from auditmi.calibration import load_calibration, save_calibration
from auditmi.datasets import fashion_mnist
from auditmi.images import LoadedImage, decode
from auditmi.shadow_game import choose_spec
from auditmi.shadow_set import PublicImages, bundle_parts, load_shadows, public_embeddings, public_signals
from auditmi.views import working_side

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def png_bytes(a: np.ndarray) -> bytes:
    """The PNG file examples/fashion/build.py would write for this image."""
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shadows-dir", default=str(ROOT / "benchmarks" / ".work" / "shadows"))
    ap.add_argument("--max-shadows", type=int, default=8)
    ap.add_argument("--shadow-ids", type=int, nargs="*", help="only these shadows (the shipped bundle: 0 1 4 5)")
    ap.add_argument("--bundle", default=str(HERE / "calibration"))
    a = ap.parse_args()
    sdir = Path(a.shadows_dir)
    pool = json.loads((sdir / "pool.json").read_text())
    done = sorted((p for p in sdir.glob("shadow-*") if (p / "final" / "encoder.json").exists()), key=lambda p: int(p.name.split("-")[1]))
    if a.shadow_ids:
        done = [p for p in done if int(p.name.split("-")[1]) in a.shadow_ids]
    done = done[: a.max_shadows]
    if len(done) < 1:
        sys.exit("no finished shadow under " + str(sdir))
    ks = [int(p.name.split("-")[1]) for p in done]
    xtr, _ = fashion_mnist("train")
    cal = load_calibration(a.bundle)
    views = cal.views
    seed = 0
    side = working_side(32, views)
    imgs, shas = [], []
    for i in pool["pool_train_idx"]:
        data = png_bytes(xtr[int(i)])
        pix, size = decode(data, side)
        h = hashlib.sha256(data).hexdigest()
        imgs.append(LoadedImage(path=Path(f"fmnist-train-{int(i):05d}.png"), sha256=h, pixels=pix, original_size=size))
        shas.append(h)
    sha_of = dict(zip(pool["pool_train_idx"], shas, strict=True))
    public = PublicImages(imgs)
    inc = np.array([[int(i) in set(pool["members"][k]) for i in pool["pool_train_idx"]] for k in ks])
    finals = [p / "final" for p in done]
    spec = (choose_spec(public_signals(public, finals, views, seed), inc, seed=seed, embeddings=public_embeddings(public, finals))
            if len(finals) >= 2 else None)
    if spec is None:
        from auditmi.shadow_set import DEFAULT_SPEC as spec
    training = [[sha_of[i] for i in pool["members"][k]] for k in ks]
    # No shadow may have trained on a suspect or reference image of the example.
    example = {hashlib.sha256(p.read_bytes()).hexdigest() for d in ("suspect", "reference") for p in (HERE / d).glob("*.png")}
    clash = example & set().union(*map(set, training))
    if clash:
        sys.exit(f"{len(clash)} example images were used to train shadows; refusing")
    meta, files = bundle_parts(finals, training, spec, shas,
                               info={"training": json.loads((finals[0] / "encoder.json").read_text())["training"]["config"],
                                     "public_pool": "Fashion-MNIST train images, not target members (benchmarks/train_shadows.py)",
                                     "command": "python examples/fashion/build_shadows.py " + " ".join(sys.argv[1:])})
    cal.meta["shadows"] = meta
    save_calibration(cal, a.bundle, extra_files=files)
    ss = load_shadows(load_calibration(a.bundle).meta, Path(a.bundle))
    assert ss is not None
    print(json.dumps({"shadows": ss.k, "score": ss.spec.to_dict()}, indent=1))


if __name__ == "__main__":
    main()
