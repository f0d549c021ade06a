"""timm backend: any timm image model as an embedding encoder (``pip install auditmi[timm]``).

``timm:NAME[@TAG]`` (e.g. ``timm:vit_small_patch14_dinov2@lvd142m`` or
``timm:vit_small_patch14_dinov2.lvd142m``) loads pretrained weights through timm's own hub
cache; ``timm:DIR`` loads a folder saved for the hub (``config.json`` + ``model.safetensors``,
written by ``timm.models.push_to_hf_hub`` or ``save_for_hf(..., safe_serialization=True)``).

The embedding is timm's pooled pre-logits feature (``num_classes=0``), and the input size and
normalisation come from timm's data config for the model. timm reads ``.bin``/``.pth`` weights
only with ``torch.load(weights_only=True)``; anything that needs full unpickling is refused.
auditmi renders views with its own resampling, so timm's interpolation
setting is reported but not used.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from auditmi.encoders.base import Encoder, prepare_module, sha256_state_dict
from auditmi.errors import EncoderUnavailableError

#: Pickled weight files: loaded by timm/transformers only with ``weights_only=True``.
PICKLED_SUFFIXES = (".bin", ".pth", ".pt", ".pth.tar", ".ckpt", ".pkl")


def _import() -> Any:
    try:
        import timm
    except ImportError as e:
        raise EncoderUnavailableError("the timm backend needs timm: pip install 'auditmi[timm]'") from e
    return timm


def square_side(input_size: Any, what: str) -> int:
    """The side of a square input; a non-square input size is refused with what to do."""
    dims = [int(d) for d in (input_size if isinstance(input_size, (list, tuple)) else (input_size,))]
    hw = dims[-2:] if len(dims) >= 2 else dims * 2
    if hw[0] != hw[1] or hw[0] < 1:
        raise EncoderUnavailableError(
            f"{what} expects {hw[0]}x{hw[1]} inputs; auditmi renders square views. Use a model with a square input size."
        )
    return hw[0]


def check_stats(mean: Any, std: Any, what: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Three finite means and three positive standard deviations (one value is broadcast), or a clear error."""
    from auditmi.validate import finite_list

    vals = []
    for name, v in (("mean", mean), ("std", std)):
        lst = finite_list(f"{what}: {name}", list(v) if isinstance(v, (list, tuple)) else [v], error=EncoderUnavailableError)
        lst = lst * 3 if len(lst) == 1 else lst
        if len(lst) != 3:
            raise EncoderUnavailableError(f"{what}: {name} must hold 3 numbers (one per RGB channel), got {v!r}.")
        vals.append(tuple(lst))
    if min(vals[1]) <= 0:
        raise EncoderUnavailableError(f"{what}: std must be positive, got {std!r}.")
    return vals[0], vals[1]  # type: ignore[return-value]


def _hub_name(name: str, tag: str) -> str:
    return f"{name}.{tag}" if tag else name


def _offline_reason(timm: Any, full: str) -> tuple[str | None, str]:
    """(why the hub is unreachable or None, where timm would download from)."""
    from auditmi.encoders.openclip import _env_offline, _probe

    try:
        cfg = timm.models.get_pretrained_cfg(full, allow_unregistered=True) if not full.startswith("hf-hub:") else None
    except Exception:
        cfg = None
    if full.startswith("hf-hub:") or (cfg is not None and getattr(cfg, "hf_hub_id", None)):
        from huggingface_hub import constants

        endpoint = str(constants.ENDPOINT)
        return ("HF_HUB_OFFLINE is set" if _env_offline() else _probe(endpoint)), endpoint
    url = getattr(cfg, "url", "") if cfg is not None else ""
    return (_probe(url) if url else None), url


def load_timm(name: str, tag: str, device: torch.device, spec: str) -> Encoder:
    """Build a timm model (hub weights or a saved folder) with pooled features, as an :class:`Encoder`."""
    timm = _import()
    p = Path(name)
    from_dir = p.is_dir()
    if from_dir:
        if not (p / "config.json").is_file():
            raise EncoderUnavailableError(
                f"{p} is not a timm model folder: config.json is missing (save one with "
                "timm.models.save_for_hf(model, DIR, safe_serialization=True))."
            )
        weights = [f for f in sorted(p.iterdir()) if f.name.endswith((".safetensors", *PICKLED_SUFFIXES))]
        if not weights:
            raise EncoderUnavailableError(f"{p} holds no weights file (model.safetensors expected).")
        target = f"local-dir:{p.resolve()}"
        offline: str | None = None
    else:
        full = name if name.startswith("hf-hub:") else _hub_name(name, tag)
        base = full.split(":", 1)[-1] if full.startswith("hf-hub:") else full.split(".", 1)[0]
        if not full.startswith("hf-hub:") and not timm.is_model(base):
            close = ", ".join(timm.list_models(f"*{base[:12]}*")[:8])
            raise EncoderUnavailableError(
                f"timm has no model {base!r}" + (f" (similar: {close})" if close else "") + ". `timm.list_models('*dino*')` lists names."
            )
        target = full
        offline, endpoint = _offline_reason(timm, full)
    from auditmi.encoders.openclip import _hub_offline

    try:
        with (_hub_offline() if offline else contextlib.nullcontext()):
            model = timm.create_model(target, pretrained=True, num_classes=0)
    except Exception as e:  # network, missing tag, unsafe pickles (weights_only refused), bad files
        msg = f"cannot load timm model {target!r}: {type(e).__name__}: {str(e)[:400]}"
        if "weights_only" in str(e):
            msg += " auditmi never unpickles shared weights: convert them to model.safetensors."
        if offline:
            msg = (
                f"cannot load timm model {target!r}: offline ({offline}) and the weights are not in the local cache. "
                f"Fetch them once on a connected machine (python -c \"import timm; timm.create_model('{target}', pretrained=True)\"), "
                "then copy the Hugging Face cache (HF_HOME, default ~/.cache/huggingface) here and set HF_HUB_OFFLINE=1, "
                "or save the model with timm.models.save_for_hf(model, DIR, safe_serialization=True) and pass --encoder timm:DIR."
            )
        raise EncoderUnavailableError(msg) from e
    dc = timm.data.resolve_model_data_config(model)
    size = square_side(dc.get("input_size", (3, 224, 224)), f"timm model {target}")
    mean, std = check_stats(dc.get("mean", (0.485, 0.456, 0.406)), dc.get("std", (0.229, 0.224, 0.225)), f"timm model {target}")
    prepare_module(model, device)
    digest = sha256_state_dict(model)
    arch = getattr(model, "pretrained_cfg", {}).get("architecture") or name
    return Encoder(
        spec=spec,
        backend="timm",
        forward=model,
        input_size=size,
        mean=mean,
        std=std,
        device=device,
        identity=f"timm:{arch}:sha256:{digest}",
        source=str(p.resolve()) if from_dir else f"timm hub {target}",
        module=model,
        info={
            "architecture": f"timm {arch}",
            "embedding_dim": int(getattr(model, "num_features", 0) or 0),
            "weights_sha256": digest,
            "timm_interpolation": dc.get("interpolation"),
            "note": "views are rendered by auditmi's own resampling; timm's crop_pct and interpolation are not applied",
        },
    )
