"""auditmi's own checkpoint format: a folder with ``encoder.json`` + ``model.safetensors``.

Loading reads JSON and safetensors only, so a shared checkpoint can never execute code. The folder
is written, pinned and committed as a whole by :mod:`auditmi.bundle`: the JSON records the sha256
of the weights and of itself, so an edited ``encoder.json`` or weight file is refused (exit 4), and
every field is validated on load (architecture, input size, normalisation, the weights' file name).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from auditmi import __version__
from auditmi import validate as V
from auditmi.bundle import (
    PIN_KEY,
    load_arrays,
    read_metadata,
    recover,
    safe_member,
    verify,
    write_bundle,
)
from auditmi.encoders.base import Encoder, prepare_module, validate_preprocessing
from auditmi.errors import EncoderUnavailableError
from auditmi.models import build_backbone

FORMAT = "auditmi-encoder"
SCHEMA_VERSION = 1
CONFIG_NAME = "encoder.json"
WEIGHTS_NAME = "model.safetensors"
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)
#: Largest width/depth value an architecture may declare (ResNet-18 at width 64 uses 64 and 2).
MAX_ARCH_VALUE = 4096


def is_checkpoint_dir(path: str | Path) -> bool:
    """True if ``path`` is a folder holding an auditmi encoder checkpoint."""
    p = Path(path)
    return p.is_dir() and (p / CONFIG_NAME).is_file()


def save_checkpoint(
    path: str | Path,
    backbone: torch.nn.Module,
    architecture: dict[str, Any],
    input_size: int,
    mean: tuple[float, ...] = DEFAULT_MEAN,
    std: tuple[float, ...] = DEFAULT_STD,
    extra: dict[str, Any] | None = None,
    extra_files: Mapping[str, Callable[[str], None]] | None = None,
) -> Path:
    """Write a checkpoint folder as one atomic commit, pinned as a whole (:mod:`auditmi.bundle`).

    ``extra_files`` (name -> writer of a path) are committed and pinned with it (e.g. the training
    state of a resumable pre-training run, so weights and state can never disagree).
    """
    from safetensors.torch import save as to_bytes

    state = {k: v.detach().to("cpu").contiguous() for k, v in backbone.state_dict().items()}
    blob = to_bytes(state)
    cfg = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "auditmi_version": __version__,
        "architecture": architecture,
        "input_size": int(input_size),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "embedding_dim": int(getattr(backbone, "out_dim", 0)),
        "weights": WEIGHTS_NAME,
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        **(extra or {}),
    }

    def write_weights(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(blob)

    write_bundle(path, CONFIG_NAME, cfg, {WEIGHTS_NAME: write_weights, **(extra_files or {})}, what="encoder checkpoint")
    return Path(path)


_FIX = "Re-copy the checkpoint folder from its source, or re-create it."


def _legacy(root: Path) -> Callable[[dict[str, Any]], str]:
    def reason(cfg: dict[str, Any]) -> str:
        return (
            f"{root / CONFIG_NAME} was written by auditmi {cfg.get('auditmi_version')} without a {PIN_KEY}: edits to it "
            f"could not be detected, so this auditmi refuses it. Re-create the checkpoint (e.g. `auditmi pretrain`), or, "
            f"if you trust this copy, pin it with `python -m auditmi.bundle repin {root}`."
        )

    return reason


def _check_architecture(arch: Any) -> dict[str, Any]:
    err = EncoderUnavailableError
    V.mapping("architecture", arch, error=err)
    if not isinstance(arch.get("arch"), str):
        raise err(f"architecture.arch must be a name, got {arch.get('arch')!r}.")
    for k, v in arch.items():
        if k == "arch":
            continue
        items = v if isinstance(v, list) else [v]
        if not items or len(items) > 16 or not all(V.is_int(x) and 1 <= x <= MAX_ARCH_VALUE for x in items):
            raise err(f"architecture.{k} must be an integer (or a list of up to 16) from 1 to {MAX_ARCH_VALUE}, got {v!r}.")
    return arch


def read_config(path: str | Path) -> dict[str, Any]:
    """Read, verify (pin, files) and validate a checkpoint's ``encoder.json``; errors exit 4 with the reason."""
    root = Path(path)
    recover(root)
    p = root / CONFIG_NAME
    if not p.is_file():
        raise EncoderUnavailableError(f"{path} is not an auditmi encoder folder: {CONFIG_NAME} is missing.")
    err = EncoderUnavailableError
    cfg = read_metadata(p, err, _FIX, what="encoder config")
    files = verify(root, CONFIG_NAME, cfg, fmt=FORMAT, schema_version=SCHEMA_VERSION, error=err, fix=_FIX,
                   legacy=_legacy(root), what="encoder config")
    weights = cfg.get("weights", WEIGHTS_NAME)
    safe_member(root, weights, err, _FIX)
    if weights not in files:
        raise err(f"{p} names weights {weights!r} that its 'files' list does not pin. {_FIX}")
    if cfg.get("weights_sha256", files[weights]) != files[weights]:
        raise err(f"{p} records two different hashes for {weights}. {_FIX}")
    _check_architecture(cfg.get("architecture"))
    # The one check of preprocessing values, shared by every backend (exit 4, before any model is built).
    cfg["input_size"], cfg["mean"], cfg["std"] = validate_preprocessing(cfg.get("input_size"), cfg.get("mean"), cfg.get("std"), source=str(p))
    if cfg.get("embedding_dim") is not None and (not V.is_int(cfg["embedding_dim"]) or cfg["embedding_dim"] < 0):
        raise err(f"embedding_dim must be an integer >= 0, got {cfg['embedding_dim']!r}.")
    cfg["_weights_sha256"] = files[weights]
    return cfg


def load_backbone(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the backbone of a checkpoint folder and load its verified weights (on the CPU)."""
    cfg = read_config(path)
    wpath = Path(path) / cfg.get("weights", WEIGHTS_NAME)
    model = build_backbone(cfg["architecture"])
    state = load_arrays(wpath, EncoderUnavailableError, _FIX, framework="torch")
    try:
        model.load_state_dict(state, strict=True)
    except Exception as e:  # shape or name mismatches
        raise EncoderUnavailableError(f"cannot load weights from {wpath}: {e}") from e
    return model, cfg


def load_local(path: str | Path, device: torch.device, spec: str | None = None) -> Encoder:
    """Load a checkpoint folder as a black-box :class:`Encoder`."""
    model, cfg = load_backbone(path)
    prepare_module(model, device)
    return Encoder(
        spec=spec or str(path),
        backend="local",
        forward=model,
        input_size=int(cfg["input_size"]),
        mean=tuple(cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(cfg["std"]),  # type: ignore[arg-type]
        device=device,
        identity=f"local:sha256:{cfg['_weights_sha256']}",
        source=str(Path(path).resolve()),
        module=model,
        info={"architecture": cfg["architecture"], "embedding_dim": cfg.get("embedding_dim"), "weights_sha256": cfg["_weights_sha256"]},
    )
