"""Encoder registry: one spec string names any encoder auditmi can audit.

Specs:
    clip-vit-b32 (and the other aliases in :data:`ALIASES`)   open_clip model + OpenAI weights
    open_clip:MODEL[@TAG]                                       any open_clip model/tag (default tag: openai)
    open_clip:MODEL@/path/to/weights                            local open_clip weights file
    open_clip:MODEL@random                                      random init (tests/benchmarks only)
    local:DIR  or  DIR                                          auditmi checkpoint folder (encoder.json)
    export:FILE  or  FILE.pt2                                   torch.export program (recommended for any local model)
    torchscript:FILE  or  FILE.pt / .ts / .torchscript          TorchScript export (deprecated by torch; still read)
    timm:NAME[@TAG]  or  timm:DIR                               timm model (hub, or a folder saved for the hub)
    hf:REPO_ID[@REVISION]  or  hf:DIR                           Hugging Face transformers vision encoder
    http:CONFIG.toml  or  http:URL                              any image-embedding HTTP API, as a black box
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from auditmi.encoders.base import Encoder, resolve_device
from auditmi.errors import EncoderUnavailableError

#: Short names for the common CLIP encoders (open_clip model, pretrained tag).
ALIASES: dict[str, tuple[str, str]] = {
    "clip-vit-b32": ("ViT-B-32", "openai"),
    "clip-vit-b16": ("ViT-B-16", "openai"),
    "clip-vit-l14": ("ViT-L-14", "openai"),
    "clip-vit-l14-336": ("ViT-L-14-336", "openai"),
    "clip-rn50": ("RN50", "openai"),
    "clip-rn101": ("RN101", "openai"),
}

_TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit")
_EXPORT_SUFFIXES = (".pt2",)

#: Every backend with a description, the extra that installs it, and example specs
#: (``auditmi encoders --all``).
BACKEND_EXAMPLES: dict[str, tuple[str, str, str]] = {
    "open_clip": ("open_clip:ViT-B-32@openai", "open_clip models and tags (download), or open_clip:MODEL@/path/to/weights", "(core)"),
    "timm": ("timm:vit_small_patch14_dinov2.lvd142m", "timm models from the hub, or timm:DIR saved for the hub (config.json + model.safetensors)", "auditmi[timm]"),
    "hf": ("hf:facebook/dinov2-small", "Hugging Face transformers vision encoders (CLIP, SigLIP, DINOv2, ...), or hf:DIR", "auditmi[hf]"),
    "http": ("http:api.toml", "any image-embedding HTTP API (OpenAI-compatible, Cohere, Jina presets), or http:https://host/v1/embeddings", "auditmi[http]"),
    "export": ("encoder.pt2", "torch.export program + optional encoder.pt2.json sidecar (recommended for any local model)", "(core)"),
    "local": ("./my-encoder", "auditmi checkpoint folder (encoder.json + model.safetensors)", "(core)"),
    "torchscript": ("encoder.pt", "TorchScript export + optional encoder.pt.json sidecar (deprecated by torch)", "(core)"),
}


@dataclass(frozen=True)
class EncoderInfo:
    """A row of ``auditmi encoders``."""

    name: str
    spec: str
    input_size: int | None
    source: str


def list_encoders() -> list[EncoderInfo]:
    """The built-in aliases with their input size and weights source (no download)."""
    from auditmi.encoders.openclip import model_info

    rows = []
    for alias, (model, tag) in ALIASES.items():
        try:
            size: int | None = model_info(model, tag)["input_size"]
        except EncoderUnavailableError:
            size = None
        rows.append(EncoderInfo(alias, f"open_clip:{model}@{tag}", size, f"open_clip download ({tag} weights)"))
    return rows


def parse_spec(spec: str) -> tuple[str, str, str]:
    """Split a spec into (backend, name, tag). Raises with the list of valid forms if unknown."""
    s = spec.strip()
    if s in ALIASES:
        model, tag = ALIASES[s]
        return "open_clip", model, tag
    if s.startswith("open_clip:"):
        rest = s[len("open_clip:") :]
        model, _, tag = rest.partition("@")
        return "open_clip", model, tag or "openai"
    # Paths are returned with ``~`` expanded: the loaders do not expand it themselves.
    if s.startswith("local:"):
        return "local", str(Path(s[len("local:") :]).expanduser()), ""
    if s.startswith("torchscript:"):
        return "torchscript", str(Path(s[len("torchscript:") :]).expanduser()), ""
    if s.startswith("export:"):
        return "export", str(Path(s[len("export:") :]).expanduser()), ""
    for backend in ("timm", "hf"):
        if s.startswith(backend + ":"):
            rest = s[len(backend) + 1 :]
            if not rest:
                raise EncoderUnavailableError(f"{spec!r} names no model: use {BACKEND_EXAMPLES[backend][0]}.")
            if Path(rest).expanduser().is_dir():
                return backend, str(Path(rest).expanduser()), ""
            name, _, tag = rest.partition("@")
            return backend, name, tag
    if s.startswith(("http://", "https://")):
        return "http", s, "url"
    if s.startswith("http:"):
        rest = s[len("http:") :]
        if rest.startswith(("http://", "https://")):
            return "http", rest, "url"
        return "http", str(Path(rest).expanduser()), "config"
    p = Path(s).expanduser()
    if p.is_dir():
        return "local", str(p), ""
    if p.is_file() and p.suffix.lower() in _EXPORT_SUFFIXES:
        return "export", str(p), ""
    if p.is_file() and p.suffix.lower() in _TORCHSCRIPT_SUFFIXES:
        return "torchscript", str(p), ""
    valid = ", ".join(ALIASES)
    raise EncoderUnavailableError(
        f"unknown encoder {spec!r}. Use an alias ({valid}), open_clip:MODEL@TAG, open_clip:MODEL@/path/to/weights, "
        "timm:NAME[@TAG] or timm:DIR, hf:REPO_ID or hf:DIR, http:CONFIG.toml or http:URL, "
        "a folder written by auditmi (encoder.json + model.safetensors), a torch.export program (.pt2) or a TorchScript file (.pt/.ts). "
        "Run `auditmi encoders --all` for the list with examples."
    )


def load_encoder(spec: str, device: str = "auto", amp: bool = True) -> Encoder:
    """Resolve ``spec`` and load the encoder on ``device`` (``auto``: GPU when present)."""
    dev = resolve_device(device)
    backend, name, tag = parse_spec(spec)
    if backend == "open_clip":
        from auditmi.encoders.openclip import load_open_clip

        enc = load_open_clip(name, tag, dev, spec)
    elif backend == "local":
        from auditmi.encoders.local import is_checkpoint_dir, load_local

        if not is_checkpoint_dir(name):
            raise EncoderUnavailableError(
                f"{name} is not an auditmi encoder folder (no encoder.json). Train one with `auditmi pretrain` "
                "or pass a TorchScript file or an open_clip spec."
            )
        enc = load_local(name, dev, spec)
    elif backend == "export":
        from auditmi.encoders.export import load_export

        enc = load_export(name, dev, spec)
    elif backend == "timm":
        from auditmi.encoders.timm import load_timm

        enc = load_timm(name, tag, dev, spec)
    elif backend == "hf":
        from auditmi.encoders.hf import load_hf

        enc = load_hf(name, tag, dev, spec)
    elif backend == "http":
        from auditmi.encoders.http import load_http

        enc = load_http(name, is_url=(tag == "url"), spec=spec)
    else:
        from auditmi.encoders.torchscript import load_torchscript

        enc = load_torchscript(name, dev, spec)
    enc.amp = amp
    return enc


__all__ = ["ALIASES", "BACKEND_EXAMPLES", "Encoder", "EncoderInfo", "list_encoders", "load_encoder", "parse_spec", "resolve_device"]
