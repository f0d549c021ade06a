"""torchvision's compiled ``roi_align`` kernel, without importing the torchvision package.

``from torchvision.ops import roi_align`` imports the whole package: its models and, through them,
``torch._dynamo``. That is about 2 s of CPU (measured on the benchmark machine, beside 2.5 s for
torch itself) in every new process that renders views: each Ray actor, each CLI run. The kernel
only needs torchvision's compiled extension, so :func:`roi_align` loads that library directly
(``torch.ops.load_library``, which is what torchvision does on import) and calls the registered
op ``torchvision::roi_align``, exactly what ``torchvision.ops.roi_align`` calls for a tensor of
boxes: the same kernel and the same numbers. When the extension cannot be found under a known
name (another torchvision layout), torchvision is imported the usual way.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch

_op: Callable[..., torch.Tensor] | None = None

#: Names of torchvision's compiled extension (``_C_stable`` from 0.29 on, ``_C`` before).
_EXTENSIONS = ("_C_stable", "_C")


def _registered() -> Callable[..., torch.Tensor] | None:
    try:
        return torch.ops.torchvision.roi_align  # type: ignore[no-any-return]
    except (AttributeError, RuntimeError):
        return None


def load() -> Callable[..., torch.Tensor]:
    """The ``torchvision::roi_align`` op, loaded once per process (see the module docstring)."""
    global _op
    if _op is None:
        _op = _find()
    return _op


def _find() -> Callable[..., torch.Tensor]:
    op = _registered()
    if op is not None:
        return op
    spec = importlib.util.find_spec("torchvision")  # finds the package without importing it
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        for name in _EXTENSIONS:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                lib = Path(folder) / f"{name}{suffix}"
                if lib.is_file():
                    try:
                        torch.ops.load_library(str(lib))
                    except OSError:
                        continue
                    op = _registered()
                    if op is not None:
                        return op
    import torchvision.ops  # noqa: F401  (another layout: let torchvision register its ops)

    return torch.ops.torchvision.roi_align  # type: ignore[no-any-return]


def roi_align(x: torch.Tensor, boxes: torch.Tensor, out_size: int, spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = True) -> torch.Tensor:
    """``torchvision.ops.roi_align(x, boxes, (out_size, out_size), spatial_scale, sampling_ratio, aligned)``
    for a (K, 5) tensor of boxes (batch index, x1, y1, x2, y2)."""
    return load()(x, boxes, spatial_scale, out_size, out_size, sampling_ratio, aligned)
