"""open_clip backend: CLIP image towers with their own preprocessing.

``open_clip:MODEL@TAG`` downloads the tagged weights through open_clip exactly as a user of
open_clip gets them (Hugging Face hub or the original URLs, checksummed by open_clip);
``open_clip:MODEL@/path/to/weights`` loads a local file (safetensors, or a torch file read with
``weights_only=True``); ``open_clip:MODEL@random`` builds the architecture with random weights
(for tests and throughput benchmarks; never a meaningful audit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from auditmi.encoders.base import Encoder, prepare_module, sha256_file, sha256_state_dict
from auditmi.errors import EncoderUnavailableError

RANDOM_TAG = "random"

OFFLINE_HELP = (
    "If this machine is offline, fetch the weights once on a connected machine "
    "(python -c \"import open_clip; open_clip.create_model('{model}', pretrained='{tag}')\"), then either "
    "copy its Hugging Face cache (the folder HF_HOME points to, default ~/.cache/huggingface) to this machine "
    "and set HF_HUB_OFFLINE=1, or pass the weights file directly: --encoder open_clip:{model}@/path/to/open_clip_model.safetensors"
)


def _import() -> Any:
    try:
        import open_clip
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise EncoderUnavailableError("open_clip is not installed: pip install open_clip_torch") from e
    return open_clip


def model_info(model: str, tag: str | None) -> dict[str, Any]:
    """Input size and normalisation of an open_clip model/tag without building it."""
    oc = _import()
    cfg = oc.get_model_config(model)
    if cfg is None:
        raise EncoderUnavailableError(f"open_clip has no model {model!r}; see `auditmi encoders --all`.")
    size = cfg.get("vision_cfg", {}).get("image_size", 224)
    pcfg = oc.get_pretrained_cfg(model, tag) if tag and tag != RANDOM_TAG and not Path(tag).exists() else {}
    return {
        "input_size": int(size if isinstance(size, int) else size[0]),
        "mean": tuple(pcfg.get("mean", oc.OPENAI_DATASET_MEAN)),
        "std": tuple(pcfg.get("std", oc.OPENAI_DATASET_STD)),
    }


def load_open_clip(model: str, tag: str, device: torch.device, spec: str) -> Encoder:
    """Build an open_clip model's image tower and wrap it as an :class:`Encoder`."""
    oc = _import()
    if model not in oc.list_models():
        raise EncoderUnavailableError(
            f"open_clip has no model {model!r}. Known models include: "
            + ", ".join(m for m in oc.list_models() if m.startswith(("ViT-B", "ViT-L", "RN")))[:600]
        )
    is_path = tag != RANDOM_TAG and (Path(tag).expanduser().exists() or "/" in tag or tag.endswith((".safetensors", ".bin", ".pt", ".pth")))
    if is_path:
        p = Path(tag).expanduser()
        if not p.is_file():
            raise EncoderUnavailableError(f"weights file {p} does not exist (from --encoder {spec}).")
        pretrained: str | None = str(p)
    elif tag == RANDOM_TAG:
        pretrained = None
    else:
        tags = oc.list_pretrained_tags_by_model(model)
        if tag not in tags:
            raise EncoderUnavailableError(
                f"open_clip has no pretrained tag {tag!r} for {model}; available: {', '.join(tags) or 'none'} "
                f"(or use open_clip:{model}@/path/to/weights, or @random for an untrained model)."
            )
        pretrained = tag
    try:
        if pretrained is None:
            # Seeded so that @random names one fixed set of weights (tests, benchmarks, cache keys).
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                clip = oc.create_model(model, pretrained=None)
        else:
            clip = oc.create_model(model, pretrained=pretrained, weights_only=True)
    except Exception as e:  # network errors, checksum errors, bad files: all mean "unavailable"
        msg = f"cannot load open_clip {model} weights {tag!r}: {type(e).__name__}: {str(e)[:400]}."
        if not is_path and pretrained is not None:
            msg += " " + OFFLINE_HELP.format(model=model, tag=tag)
        raise EncoderUnavailableError(msg) from e
    visual = clip.visual
    pcfg = oc.get_model_preprocess_cfg(clip)
    size = pcfg.get("size", 224)
    size = int(size if isinstance(size, int) else size[0])
    # The text tower is never used: drop it to save memory.
    prepare_module(clip, device)
    if is_path:
        identity = f"open_clip:{model}@sha256:{sha256_file(tag)}"
        source = str(Path(tag).resolve())
    elif pretrained is None:
        identity = f"open_clip:{model}@random:sha256:{sha256_state_dict(visual)}"
        source = "random initialisation (seed 0): NOT a pretrained model"
    else:
        identity = f"open_clip:{model}@{tag}"
        source = f"open_clip pretrained tag {tag!r}"
    return Encoder(
        spec=spec,
        backend="open_clip",
        forward=clip.encode_image,
        input_size=size,
        mean=tuple(pcfg.get("mean", oc.OPENAI_DATASET_MEAN)),  # type: ignore[arg-type]
        std=tuple(pcfg.get("std", oc.OPENAI_DATASET_STD)),  # type: ignore[arg-type]
        device=device,
        identity=identity,
        source=source,
        module=visual,
        info={"architecture": f"open_clip {model}", "pretrained": tag, "embedding_dim": int(getattr(visual, "output_dim", 0) or 0)},
    )
