"""Architectures auditmi trains itself (shadow and experimental target encoders).

Each architecture is built from a small JSON-able config (``{"arch": ..., **kwargs}``) so that a
checkpoint folder can describe its model without any code: the local-checkpoint format stores
this config next to safetensors weights and loading never unpickles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from auditmi.errors import EncoderUnavailableError


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.short(x))


class CifarResNet(nn.Module):
    """CIFAR-variant ResNet backbone: 3x3 stem, no max-pool (the paper's target encoder).

    ``blocks=(2, 2, 2, 2), width=64`` is ResNet-18; smaller widths/depths train on a CPU.
    The forward pass returns the pooled backbone feature (projection head excluded).
    """

    def __init__(self, blocks: tuple[int, ...] = (2, 2, 2, 2), width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        layers = []
        cin = width
        for i, nb in enumerate(blocks):
            cout = width * (2**i)
            for j in range(nb):
                layers.append(BasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.out_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


class SmallConvNet(nn.Module):
    """A plain VGG-style CNN: a second architecture family for "different architecture" settings."""

    def __init__(self, width: int = 32, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i in range(depth):
            cout = width * (2**i)
            layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            layers += [nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            if i < depth - 1:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.out_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)


def _resnet(blocks: list[int] | tuple[int, ...] = (2, 2, 2, 2), width: int = 64) -> nn.Module:
    return CifarResNet(tuple(int(b) for b in blocks), int(width))


def _convnet(width: int = 32, depth: int = 3) -> nn.Module:
    return SmallConvNet(int(width), int(depth))


_BUILDERS: dict[str, Callable[..., nn.Module]] = {"cifar_resnet": _resnet, "convnet": _convnet}

#: Named architectures for ``--arch``: the paper's ResNet-18 and smaller variants for CPUs.
ARCH_PRESETS: dict[str, dict[str, Any]] = {
    "resnet18": {"arch": "cifar_resnet", "blocks": [2, 2, 2, 2], "width": 64},
    "resnet18-w32": {"arch": "cifar_resnet", "blocks": [2, 2, 2, 2], "width": 32},
    "resnet18-w16": {"arch": "cifar_resnet", "blocks": [2, 2, 2, 2], "width": 16},
    "resnet10-w16": {"arch": "cifar_resnet", "blocks": [1, 1, 1, 1], "width": 16},
    "resnet-tiny": {"arch": "cifar_resnet", "blocks": [1, 1, 1], "width": 8},
    "convnet-w32": {"arch": "convnet", "width": 32, "depth": 3},
    "convnet-w16": {"arch": "convnet", "width": 16, "depth": 3},
}


def arch_config(name_or_config: str | dict[str, Any]) -> dict[str, Any]:
    """Resolve a preset name (or pass through a config dict) to an architecture config."""
    if isinstance(name_or_config, dict):
        return dict(name_or_config)
    if name_or_config not in ARCH_PRESETS:
        raise EncoderUnavailableError(
            f"unknown architecture {name_or_config!r}; choose one of: {', '.join(ARCH_PRESETS)}"
        )
    return dict(ARCH_PRESETS[name_or_config])


def build_backbone(config: dict[str, Any]) -> nn.Module:
    """Build a backbone from its config; the module has an ``out_dim`` attribute."""
    cfg = dict(config)
    arch = cfg.pop("arch", None)
    if arch not in _BUILDERS:
        raise EncoderUnavailableError(
            f"unknown architecture {arch!r} in encoder config; known: {', '.join(_BUILDERS)}"
        )
    try:
        return _BUILDERS[arch](**cfg)
    except TypeError as e:
        raise EncoderUnavailableError(f"invalid options for architecture {arch!r}: {e}") from e


class ProjectionHead(nn.Module):
    """SimCLR's 2-layer MLP projection head (dropped after pre-training; method.md)."""

    def __init__(self, in_dim: int, hidden: int = 512, out_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
