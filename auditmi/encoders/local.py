"""auditmi's own checkpoint format: a folder with ``encoder.json`` + ``model.safetensors``.

Loading reads JSON and safetensors only, so a shared checkpoint can never execute code. The
weights' sha256 is recorded in the JSON and checked on load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from auditmi import __version__
from auditmi._io import atomic_write, atomic_write_text
from auditmi.encoders.base import Encoder, prepare_module, sha256_file, validate_preprocessing
from auditmi.errors import EncoderUnavailableError
from auditmi.models import build_backbone

FORMAT = "auditmi-encoder"
SCHEMA_VERSION = 1
CONFIG_NAME = "encoder.json"
WEIGHTS_NAME = "model.safetensors"
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)


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
) -> Path:
    """Write a checkpoint folder atomically (weights first, then the JSON that names them)."""
    from safetensors.torch import save_file

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in backbone.state_dict().items()}
    atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(state, tmp))
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
        "weights_sha256": sha256_file(out / WEIGHTS_NAME),
        **(extra or {}),
    }
    atomic_write_text(out / CONFIG_NAME, json.dumps(cfg, indent=2))
    return out


def read_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a checkpoint's ``encoder.json``."""
    p = Path(path) / CONFIG_NAME
    try:
        cfg = json.loads(p.read_text())
    except FileNotFoundError as e:
        raise EncoderUnavailableError(f"{path} is not an auditmi encoder folder: {CONFIG_NAME} is missing.") from e
    except (OSError, json.JSONDecodeError) as e:
        raise EncoderUnavailableError(f"cannot read {p}: {e}") from e
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise EncoderUnavailableError(f"{p} is not an auditmi encoder config (format={cfg.get('format') if isinstance(cfg, dict) else None!r}).")
    if cfg.get("schema_version") != SCHEMA_VERSION:
        raise EncoderUnavailableError(
            f"{p} has encoder schema_version {cfg.get('schema_version')} but this auditmi "
            f"({__version__}) reads version {SCHEMA_VERSION}; re-export the encoder with a matching auditmi."
        )
    # Before any model is built or image rendered: a bad value is the encoder's problem (exit 4).
    cfg["input_size"], cfg["mean"], cfg["std"] = validate_preprocessing(cfg.get("input_size"), cfg.get("mean"), cfg.get("std"), source=str(p))
    return cfg


def load_backbone(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the backbone of a checkpoint folder and load its verified weights (on the CPU)."""
    from safetensors.torch import load_file

    cfg = read_config(path)
    wpath = Path(path) / cfg.get("weights", WEIGHTS_NAME)
    if not wpath.is_file():
        raise EncoderUnavailableError(f"encoder weights {wpath} are missing.")
    digest = sha256_file(wpath)
    if not cfg.get("weights_sha256"):
        raise EncoderUnavailableError(
            f"{Path(path) / CONFIG_NAME} records no weights_sha256, so {wpath.name} cannot be checked for corruption or "
            f"tampering. Checkpoints saved by auditmi always record it; if you trust this file, add "
            f'"weights_sha256": "{digest}" (its sha256 now) to {CONFIG_NAME}.'
        )
    if digest != cfg["weights_sha256"]:
        raise EncoderUnavailableError(
            f"{wpath} does not match the sha256 recorded in {CONFIG_NAME} (file changed or corrupt); "
            "re-copy the checkpoint folder."
        )
    model = build_backbone(cfg["architecture"])
    try:
        state = load_file(str(wpath))
        model.load_state_dict(state, strict=True)
    except Exception as e:  # safetensors header errors, shape mismatches
        raise EncoderUnavailableError(f"cannot load weights from {wpath}: {e}") from e
    cfg["_weights_sha256"] = digest
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
