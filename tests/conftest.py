"""Shared pytest configuration and fixtures.

Options:
    --runslow   run tests marked ``@pytest.mark.slow`` (skipped by default).

Tests marked ``@pytest.mark.gpu`` are skipped when CUDA is unavailable (and, being expensive,
are expected to also carry ``slow``).

Fixtures (all tiny, CPU-only, offline):
    tiny_images       deterministic uint8 (3, H, W) tensors of mixed sizes, incl. extreme ones
    tiny_image_dir    the same images written as PNG files
    tiny_checkpoint   an auditmi checkpoint folder holding a randomly initialised ``resnet-tiny``
                      backbone (written with :func:`auditmi.encoders.local.save_checkpoint`);
                      session-scoped and read-only: copy it before modifying it
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

#: Input size of the tiny checkpoint (small, so CPU forward passes take milliseconds).
TINY_INPUT_SIZE = 16


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = config.getoption("--runslow")
    has_cuda = torch.cuda.is_available()
    skip_slow = pytest.mark.skip(reason="slow test: run with --runslow")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


def make_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A deterministic uint8 (3, H, W) image: smooth gradients plus noise (distinct per pixel)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack(
        [
            255 * xs / max(width - 1, 1),
            255 * ys / max(height - 1, 1),
            127.5 + 127.5 * np.sin((xs + ys) / 3.0 + seed),
        ]
    )
    noisy = base + rng.normal(0, 20, size=base.shape)
    return torch.from_numpy(np.clip(noisy, 0, 255).astype(np.uint8))


#: (height, width) of the shared tiny images: ordinary, non-square, extreme aspect ratios, 1x1.
TINY_SIZES = [(24, 24), (20, 28), (31, 17), (5, 300), (300, 5), (1, 1), (40, 40), (16, 64)]


@pytest.fixture(scope="session")
def tiny_images() -> list[torch.Tensor]:
    """Deterministic uint8 (3, H, W) images of the sizes in :data:`TINY_SIZES`."""
    return [make_image(h, w, seed=i) for i, (h, w) in enumerate(TINY_SIZES)]


@pytest.fixture(scope="session")
def tiny_image_dir(tmp_path_factory: pytest.TempPathFactory, tiny_images: list[torch.Tensor]) -> Path:
    """The tiny images as PNG files in a folder."""
    from PIL import Image

    d = tmp_path_factory.mktemp("tiny_images")
    for i, t in enumerate(tiny_images):
        Image.fromarray(t.permute(1, 2, 0).numpy()).save(d / f"img_{i:02d}.png")
    return d


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An auditmi checkpoint folder with a randomly initialised ``resnet-tiny`` backbone.

    BatchNorm running statistics are perturbed so that eval-mode outputs depend on them (a
    loader that dropped buffers would be caught).
    """
    from auditmi.encoders.local import save_checkpoint
    from auditmi.models import arch_config, build_backbone

    torch.manual_seed(1234)
    acfg = arch_config("resnet-tiny")
    model = build_backbone(acfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    model.eval()
    out = tmp_path_factory.mktemp("ckpt") / "tiny-encoder"
    save_checkpoint(out, model, acfg, TINY_INPUT_SIZE, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    return out
