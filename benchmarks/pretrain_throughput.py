"""Shadow pre-training throughput: images/s per epoch of SimCLR pre-training (auditmi.shadow).

Usage: python benchmarks/pretrain_throughput.py [--arch resnet10-w16 --arch resnet18-w16 ...] [--device auto] [--images 512] [--epochs 3]
Uses real Fashion-MNIST images at 32 px; on CUDA, training runs with bf16 autocast (mixed precision).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile

import torch

from auditmi.datasets import fashion_mnist, gray_to_rgb_tensor
from auditmi.encoders import resolve_device
from auditmi.shadow import TrainConfig, train_encoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", action="append")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    a = ap.parse_args()
    dev = resolve_device(a.device)
    x, _ = fashion_mnist("train")
    imgs = gray_to_rgb_tensor(x[: a.images])
    rows = []
    for arch in a.arch or ["resnet10-w16", "resnet18-w16", "resnet18"]:
        cfg = TrainConfig(arch=arch, image_size=32, epochs=a.epochs, batch_size=a.batch_size, checkpoint_every=a.epochs)
        with tempfile.TemporaryDirectory() as tmp:
            train_encoder(imgs, tmp, cfg, device=dev)
            with open(os.path.join(tmp, "history.json")) as f:
                hist = json.load(f)
        steady = hist[1:] or hist  # the first epoch includes warm-up
        ips = sum(h["images_per_s"] for h in steady) / len(steady)
        rows.append({"arch": arch, "device": str(dev), "amp": dev.type == "cuda", "images": a.images, "batch_size": a.batch_size,
                     "images_per_s": ips, "seconds_per_epoch": a.images / ips})
        print(f"{arch} on {dev}{' (bf16 autocast)' if dev.type == 'cuda' else ''}: {ips:.0f} images/s per epoch "
              f"({a.images / ips:.1f} s per epoch of {a.images} images, batch {a.batch_size})", flush=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
