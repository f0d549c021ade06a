"""Hugging Face transformers backend: vision encoders from the hub or a folder (``pip install auditmi[hf]``).

``hf:REPO_ID[@REVISION]`` loads through the Hugging Face cache; ``hf:DIR`` loads a folder written
by ``save_pretrained`` (``config.json``, ``model.safetensors`` and ``preprocessor_config.json``).

The model class comes from ``config.architectures[0]``, never from ``AutoModel``, which builds a
``CLIPVisionModel`` from a ``CLIPVisionModelWithProjection`` checkpoint and silently drops the
projection (the embedding would then live in the wrong space). The embedding is:

* ``image_embeds`` for ``*WithProjection`` classes (CLIP);
* the projected image features for dual encoders (``CLIPModel``, ``SiglipModel``, ...);
* ``pooler_output`` otherwise (DINOv2, SigLIP and SigLIP 2 vision towers, ViT, ...), or the
  first token of ``last_hidden_state`` for models without a pooler.

Preprocessing: input size, mean and std are read from ``preprocessor_config.json``. The image
processor itself is never run: auditmi renders every view with its own resampling, which pins
the preprocessing backend (transformers' PIL and torchvision processors differ by up to ~0.015).

Weights: safetensors when present; otherwise transformers reads ``.bin`` files only with
``torch.load(weights_only=True)``, and files that need full unpickling are refused. Remote code
(``trust_remote_code``) is never run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from auditmi.encoders.base import Encoder, prepare_module, sha256_state_dict
from auditmi.encoders.timm import check_stats
from auditmi.errors import EncoderUnavailableError

#: Dual (image + text) models: the image features come from ``get_image_features``.
DUAL_MODELS = ("CLIPModel", "SiglipModel", "Siglip2Model", "AltCLIPModel", "ChineseCLIPModel", "BlipModel")


def _import() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise EncoderUnavailableError("the hf backend needs transformers: pip install 'auditmi[hf]'") from e
    return transformers


def _side(v: Any) -> int | None:
    if isinstance(v, int):
        return v
    if isinstance(v, dict):
        if "height" in v and "width" in v:
            if int(v["height"]) != int(v["width"]):
                raise EncoderUnavailableError(f"the model expects {v['height']}x{v['width']} inputs; auditmi renders square views.")
            return int(v["height"])
        if "shortest_edge" in v:
            return int(v["shortest_edge"])
    if isinstance(v, (list, tuple)) and v:
        return int(v[-1])
    return None


def preprocessing(pp: dict[str, Any], what: str) -> tuple[int, tuple[float, float, float], tuple[float, float, float]]:
    """(input size, mean, std) from a ``preprocessor_config.json`` dictionary."""
    size = _side(pp.get("crop_size")) if pp.get("do_center_crop", "crop_size" in pp) else None
    size = size or _side(pp.get("size"))
    if not size:
        raise EncoderUnavailableError(f"{what} gives no input size (size / crop_size).")
    if pp.get("do_normalize", True):
        mean, std = check_stats(pp.get("image_mean", (0.5, 0.5, 0.5)), pp.get("image_std", (0.5, 0.5, 0.5)), what)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    rescale = float(pp.get("rescale_factor", 1 / 255)) if pp.get("do_rescale", True) else 1.0
    if abs(rescale * 255 - 1) > 1e-6:
        raise EncoderUnavailableError(
            f"{what} rescales pixels by {rescale} (not 1/255); auditmi renders views in [0, 1] and cannot reproduce it."
        )
    return size, mean, std


def _select_output(cls_name: str, model: torch.nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """The forward function returning one embedding per image, and what it returns."""
    if cls_name in DUAL_MODELS or (hasattr(model, "get_image_features") and hasattr(model, "text_model")):

        def dual(x: torch.Tensor) -> torch.Tensor:
            out = getattr(model, "get_image_features")(pixel_values=x)  # noqa: B009 (typed nn.Module has no such attribute)
            return out if isinstance(out, torch.Tensor) else out.pooler_output

        return dual, "get_image_features (projected)"

    def single(x: torch.Tensor) -> torch.Tensor:
        out = model(pixel_values=x)
        emb = getattr(out, "image_embeds", None)
        if emb is None:
            emb = getattr(out, "pooler_output", None)
        if emb is None:
            emb = out.last_hidden_state[:, 0]
        return emb

    if cls_name.endswith("WithProjection"):
        return single, "image_embeds"
    return single, "pooler_output (or first token)"


def _hub_files(repo: str, revision: str | None) -> tuple[Path, str | None]:
    """Folder of a repo's config and preprocessor in the hub cache (downloaded unless offline)."""
    from huggingface_hub import constants, snapshot_download

    from auditmi.encoders.openclip import _env_offline, _probe

    offline = "HF_HUB_OFFLINE is set" if _env_offline() else _probe(str(constants.ENDPOINT))
    try:
        folder = snapshot_download(
            repo, revision=revision or None, local_files_only=bool(offline),
            allow_patterns=["config.json", "preprocessor_config.json", "*.safetensors", "*.safetensors.index.json"],
        )
    except Exception as e:
        if offline:
            raise EncoderUnavailableError(
                f"cannot load hf:{repo}: offline ({offline}) and it is not in the Hugging Face cache. Fetch it once on a "
                f"connected machine (huggingface-cli download {repo}), then copy the cache (HF_HOME, default "
                "~/.cache/huggingface) here and set HF_HUB_OFFLINE=1, or copy the downloaded folder and pass --encoder hf:DIR."
            ) from e
        raise EncoderUnavailableError(f"cannot download hf:{repo}: {type(e).__name__}: {str(e)[:300]}") from e
    return Path(folder), offline


def load_hf(name: str, revision: str, device: torch.device, spec: str) -> Encoder:
    """Load a transformers vision encoder (hub repo or folder) as a black-box :class:`Encoder`."""
    transformers = _import()
    p = Path(name)
    folder, source = (p, str(p.resolve())) if p.is_dir() else (_hub_files(name, revision)[0], f"Hugging Face hub {name}" + (f"@{revision}" if revision else ""))
    cfg_path, pp_path = folder / "config.json", folder / "preprocessor_config.json"
    for f, hint in ((cfg_path, "model.save_pretrained(DIR)"), (pp_path, "the image processor's save_pretrained(DIR)")):
        if not f.is_file():
            raise EncoderUnavailableError(f"{folder} has no {f.name}; write it with {hint}.")
    try:
        cfg = json.loads(cfg_path.read_text())
        pp = json.loads(pp_path.read_text())
    except (OSError, ValueError) as e:
        raise EncoderUnavailableError(f"cannot read the model configuration in {folder}: {e}") from e
    archs = cfg.get("architectures") or []
    if not archs:
        raise EncoderUnavailableError(
            f"{cfg_path} names no architecture (config.architectures); auditmi picks the model class from it "
            "(AutoModel would drop CLIP's projection). Save the model with save_pretrained, which records it."
        )
    cls_name = str(archs[0])
    cls = getattr(transformers, cls_name, None)
    if cls is None or not cls_name.replace("_", "").isalnum():
        raise EncoderUnavailableError(f"transformers {transformers.__version__} has no model class {cls_name!r} (from {cfg_path}).")
    if not list(folder.glob("*.safetensors")):
        pickled = [f.name for f in folder.iterdir() if f.suffix in {".bin", ".pth", ".pt", ".ckpt"}]
        if not pickled:
            raise EncoderUnavailableError(f"{folder} holds no weights (model.safetensors expected).")
    size, mean, std = preprocessing(pp, str(pp_path))
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the CLI draws its own progress; keep "Loading weights" bars off stderr
    try:
        model = cls.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False, weights_only=True)
    except Exception as e:  # unsafe pickles refused by weights_only, shape mismatches, missing files
        msg = f"cannot load {cls_name} from {folder}: {type(e).__name__}: {str(e)[:400]}"
        if "weights_only" in str(e) or "pickle" in str(e).lower():
            msg += " auditmi never unpickles shared weights: convert them to model.safetensors (save_pretrained does)."
        raise EncoderUnavailableError(msg) from e
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    prepare_module(model, device)
    forward, output = _select_output(cls_name, model)
    digest = sha256_state_dict(model)
    return Encoder(
        spec=spec,
        backend="hf",
        forward=forward,
        input_size=size,
        mean=mean,
        std=std,
        device=device,
        identity=f"hf:{cls_name}:sha256:{digest}",
        source=source,
        module=model,
        info={"architecture": f"transformers {cls_name}", "embedding": output, "weights_sha256": digest,
              "note": "preprocessing numbers from preprocessor_config.json; views rendered by auditmi, not by the image processor"},
    )
