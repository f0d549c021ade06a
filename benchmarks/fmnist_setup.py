"""Shared set-up of the Fashion-MNIST experiments: seeded splits and the encoders to train.

Used by ``benchmarks/reproduce_fmnist.py`` and ``examples/fashion/build.py`` so that the bundled
example is exactly the "all known" setting of the benchmark.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from auditmi.datasets import fashion_mnist, gray_to_rgb_tensor, mnist_digits
from auditmi.shadow import TrainConfig, train_encoder


@dataclass
class Splits:
    """Indices into Fashion-MNIST's train/test splits (and MNIST for the cross-distribution shadow)."""

    target_members: np.ndarray  # train split
    shadow_members: np.ndarray  # train split, disjoint
    shadow_non_members: np.ndarray  # train split, disjoint
    target_non_members: np.ndarray  # test split
    mnist_members: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    mnist_non_members: np.ndarray = field(default_factory=lambda: np.zeros(0, int))

    def to_dict(self) -> dict:
        return {k: [int(i) for i in v] for k, v in self.__dict__.items()}


def make_splits(n: int, seed: int = 0, n_test: int | None = None) -> Splits:
    """Seeded disjoint splits of ``n`` images each (target non-members from the test split)."""
    rng = np.random.default_rng(seed)
    train = rng.permutation(60000)
    test = rng.permutation(10000)
    mn = rng.permutation(5000)
    m = min(n, 2500)
    return Splits(
        target_members=np.sort(train[:n]),
        shadow_members=np.sort(train[n : 2 * n]),
        shadow_non_members=np.sort(train[2 * n : 3 * n]),
        target_non_members=np.sort(test[: (n_test or n)]),
        mnist_members=np.sort(mn[:m]),
        mnist_non_members=np.sort(mn[m : 2 * m]),
    )


def base_config(epochs: int, seed: int) -> TrainConfig:
    """The target's recipe: SimCLR, SGD lr 0.06 x bs/256, cosine, batch 250 (method.md's CIFAR recipe, scaled)."""
    return TrainConfig(arch="resnet10-w16", image_size=32, epochs=epochs, batch_size=250, optimizer="sgd", lr=0.06,
                       temperature=0.5, seed=seed, checkpoint_every=10)


def encoder_plan(epochs: int) -> dict[str, tuple[str, TrainConfig]]:
    """name -> (training data, config) for every encoder the experiments need."""
    snaps = sorted({max(1, epochs // 8), epochs // 4, epochs // 2, (3 * epochs) // 4})
    target = base_config(epochs, seed=0)
    target.snapshot_epochs = snaps
    diff_arch = base_config(epochs, seed=2)
    diff_arch.arch = "convnet-w16"
    diff_recipe = TrainConfig(arch="resnet10-w16", image_size=32, epochs=epochs, batch_size=125, optimizer="adam", lr=1e-3,
                              weight_decay=1e-6, temperature=0.2, seed=3, checkpoint_every=10)
    return {
        "target": ("fmnist:target_members", target),
        "shadow_same": ("fmnist:shadow_members", base_config(epochs, seed=1)),
        "shadow_arch": ("fmnist:shadow_members", diff_arch),
        "shadow_recipe": ("fmnist:shadow_members", diff_recipe),
        "shadow_mnist": ("mnist:mnist_members", base_config(epochs, seed=4)),
    }


def images_for(source: str, splits: Splits) -> torch.Tensor:
    """uint8 (N, 3, 28, 28) tensor of a named split."""
    ds, key = source.split(":")
    idx = getattr(splits, key)
    if ds == "mnist":
        x, _ = mnist_digits()
        return gray_to_rgb_tensor(x[idx])
    split = "test" if key == "target_non_members" else "train"
    x, _ = fashion_mnist(split)
    return gray_to_rgb_tensor(x[idx])


def main() -> None:
    ap = argparse.ArgumentParser(description="Train one encoder of the Fashion-MNIST experiments.")
    ap.add_argument("name")
    ap.add_argument("--work", default="benchmarks/.work")
    ap.add_argument("--members", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    splits = make_splits(a.members)
    src, cfg = encoder_plan(a.epochs)[a.name]
    out = Path(a.work) / f"m{a.members}-e{a.epochs}" / a.name

    def prog(step: int, total: int, d: dict) -> None:
        if step % 50 == 0 or step == total:
            print(f"{a.name} step {step}/{total} epoch {d['epoch']} loss {d['loss']:.3f} {d['images_per_s']:.0f} img/s", flush=True)

    final = train_encoder(images_for(src, splits), out, cfg, device=a.device, progress=prog,
                          extra_meta={"data": src, "splits_seed": 0, "members": a.members})
    print(json.dumps({"encoder": a.name, "checkpoint": str(final)}))


if __name__ == "__main__":
    main()
