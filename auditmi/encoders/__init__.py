"""Encoder registry: one spec string names any encoder auditmi can audit.

Specs:
    clip-vit-b32 (and the other aliases in :data:`ALIASES`)   open_clip model + OpenAI weights
    open_clip:MODEL[@TAG]                                       any open_clip model/tag (default tag: openai)
    open_clip:MODEL@/path/to/weights                            local open_clip weights file
    open_clip:MODEL@random                                      random init (tests/benchmarks only)
    local:DIR  or  DIR                                          auditmi checkpoint folder (encoder.json)
    torchscript:FILE  or  FILE.pt / .ts / .torchscript          TorchScript export
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
    p = Path(s).expanduser()
    if p.is_dir():
        return "local", str(p), ""
    if p.is_file() and p.suffix.lower() in _TORCHSCRIPT_SUFFIXES:
        return "torchscript", str(p), ""
    valid = ", ".join(ALIASES)
    raise EncoderUnavailableError(
        f"unknown encoder {spec!r}. Use an alias ({valid}), open_clip:MODEL@TAG, open_clip:MODEL@/path/to/weights, "
        "a folder written by auditmi (encoder.json + model.safetensors), or a TorchScript file (.pt/.ts). "
        "Run `auditmi encoders` for the list."
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
    else:
        from auditmi.encoders.torchscript import load_torchscript

        enc = load_torchscript(name, dev, spec)
    enc.amp = amp
    return enc


__all__ = ["ALIASES", "Encoder", "EncoderInfo", "list_encoders", "load_encoder", "parse_spec", "resolve_device"]
