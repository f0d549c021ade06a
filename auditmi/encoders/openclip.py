"""open_clip backend: CLIP image towers with their own preprocessing.

``open_clip:MODEL@TAG`` downloads the tagged weights through open_clip exactly as a user of
open_clip gets them (Hugging Face hub or the original URLs, checksummed by open_clip);
``open_clip:MODEL@/path/to/weights`` loads a local file (safetensors, or a torch file read with
``weights_only=True``); ``open_clip:MODEL@random`` builds the architecture with random weights
(for tests and throughput benchmarks; never a meaningful audit).
"""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from auditmi.encoders.base import Encoder, prepare_module, sha256_file, sha256_state_dict
from auditmi.errors import EncoderUnavailableError

RANDOM_TAG = "random"

#: Seconds to wait for a TCP connection to the weights host before treating the machine as
#: offline. Without this probe, huggingface_hub retries each candidate file with back-off and an
#: offline ``clip-vit-b32`` took about a minute to fail.
PROBE_TIMEOUT_S = 3.0

OFFLINE_HELP = (
    "If this machine is offline, fetch the weights once on a connected machine "
    "(python -c \"import open_clip; open_clip.create_model('{model}', pretrained='{tag}')\"), then either "
    "copy its Hugging Face cache (the folder HF_HOME points to, default ~/.cache/huggingface) to this machine "
    "and set HF_HUB_OFFLINE=1, or pass the weights file directly: --encoder open_clip:{path_model}@/path/to/open_clip_model.safetensors"
)


def _offline_help(oc: Any, model: str, tag: str, tag_cfg: dict[str, Any]) -> str:
    # A weights file carries no activation setting: OpenAI-trained towers need the -quickgelu
    # model definition, or they load silently with nn.GELU and give wrong features.
    path_model = model
    if tag_cfg.get("quick_gelu") and not model.endswith("-quickgelu") and f"{model}-quickgelu" in oc.list_models():
        path_model = f"{model}-quickgelu"
    return OFFLINE_HELP.format(model=model, tag=tag, path_model=path_model)


def _env_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _download_endpoint(oc: Any, tag_cfg: dict[str, Any]) -> tuple[str, str]:
    """(kind, URL) open_clip will download a tag's weights from: kind is ``hf_hub``, ``url`` or ``""``."""
    if tag_cfg.get("file"):
        return "", ""
    if tag_cfg.get("hf_hub") and oc.pretrained.has_hf_hub():
        from huggingface_hub import constants

        return "hf_hub", str(constants.ENDPOINT)
    if tag_cfg.get("url"):
        return "url", str(tag_cfg["url"])
    return "", ""


def _probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None if a TCP connection to ``url``'s host (or the configured proxy) opens, else why not."""
    u = urlparse(url)
    host, port = u.hostname or "", u.port or (443 if u.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(u.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(host):
        pu = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = pu.hostname or host, pu.port or 80
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"cannot connect to {host}:{port} ({type(e).__name__}: {e})"


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """huggingface_hub offline mode for one call: cached weights load, missing ones fail at once."""
    from huggingface_hub import constants

    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


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


def _create(oc: Any, model: str, pretrained: str | None, tag_cfg: dict[str, Any], offline: str | None) -> Any:
    """open_clip.create_model with auditmi's choices (seeded random init, the tag's activation)."""
    if pretrained is None:
        # Seeded so that @random names one fixed set of weights (tests, benchmarks, cache keys).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return oc.create_model(model, pretrained=None)
    # open_clip >= 3 no longer forces QuickGELU for OpenAI weights (it only warns): apply the
    # activation the tag was trained with, or the features are those of a different network.
    quick = bool(tag_cfg.get("quick_gelu", False))
    ctx = _hub_offline() if offline else contextlib.nullcontext()
    with ctx:
        return oc.create_model(model, pretrained=pretrained, weights_only=True, force_quick_gelu=quick)


@contextlib.contextmanager
def _swallow_root_log() -> Iterator[list[str]]:
    """Keep open_clip's root-logger messages ("No pretrained weights loaded", download errors)
    off the user's terminal; auditmi reports the outcome itself. Yields the swallowed messages."""
    import logging

    seen: list[str] = []

    class _Keep(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            seen.append(record.getMessage())
            return False

    root = logging.getLogger()
    f = _Keep()
    root.addFilter(f)
    try:
        yield seen
    finally:
        root.removeFilter(f)


def load_open_clip(model: str, tag: str, device: torch.device, spec: str) -> Encoder:
    """Build an open_clip model's image tower and wrap it as an :class:`Encoder`."""
    oc = _import()
    if model not in oc.list_models():
        raise EncoderUnavailableError(
            f"open_clip has no model {model!r}. Known models include: "
            + ", ".join(m for m in oc.list_models() if m.startswith(("ViT-B", "ViT-L", "RN")))[:600]
        )
    is_path = tag != RANDOM_TAG and (Path(tag).expanduser().exists() or "/" in tag or tag.endswith((".safetensors", ".bin", ".pt", ".pth")))
    weights_file: Path | None = None
    if is_path:
        weights_file = Path(tag).expanduser()
        if not weights_file.is_file():
            raise EncoderUnavailableError(f"weights file {weights_file} does not exist (from --encoder {spec}).")
        pretrained: str | None = str(weights_file)
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
    tag_cfg: dict[str, Any] = oc.get_pretrained_cfg(model, tag) if (pretrained is not None and not is_path) else {}
    offline: str | None = None
    if tag_cfg:
        kind, endpoint = _download_endpoint(oc, tag_cfg)
        if kind:
            offline = "HF_HUB_OFFLINE is set" if _env_offline() else _probe(endpoint)
        if offline and kind == "url":
            cached = Path("~/.cache/clip").expanduser() / os.path.basename(urlparse(endpoint).path)
            if not cached.is_file():  # open_clip's urlopen has no timeout: do not let it hang
                raise EncoderUnavailableError(
                    f"cannot load open_clip {model} weights {tag!r}: offline ({offline}) and the weights are not in "
                    f"the local cache ({cached}). " + _offline_help(oc, model, tag, tag_cfg)
                )
    try:
        with _swallow_root_log() as logged:
            clip = _create(oc, model, pretrained, tag_cfg, offline)
    except Exception as e:  # network errors, checksum errors, bad files: all mean "unavailable"
        detail = f" (open_clip said: {logged[-1][:300]})" if logged else ""
        msg = f"cannot load open_clip {model} weights {tag!r}: {type(e).__name__}: {str(e)[:400]}.{detail}"
        if offline:
            msg = (
                f"cannot load open_clip {model} weights {tag!r}: offline ({offline}) and they could not be loaded "
                f"from the local cache ({type(e).__name__}: {str(e)[:200]})."
            )
        if not is_path and pretrained is not None:
            msg += " " + _offline_help(oc, model, tag, tag_cfg)
        raise EncoderUnavailableError(msg) from e
    visual = clip.visual
    pcfg = oc.get_model_preprocess_cfg(clip)
    size = pcfg.get("size", 224)
    size = int(size if isinstance(size, int) else size[0])
    # Only the image tower is used: the text tower is released with ``clip`` (and never moved to
    # the GPU). ``visual(x)`` is what ``clip.encode_image(x)`` computes without normalisation.
    prepare_module(visual, device)
    del clip
    if weights_file is not None:
        identity = f"open_clip:{model}@sha256:{sha256_file(weights_file)}"
        source = str(weights_file.resolve())
    elif pretrained is None:
        identity = f"open_clip:{model}@random:sha256:{sha256_state_dict(visual)}"
        source = "random initialisation (seed 0): NOT a pretrained model"
    else:
        identity = f"open_clip:{model}@{tag}"
        source = f"open_clip pretrained tag {tag!r}"
    return Encoder(
        spec=spec,
        backend="open_clip",
        forward=visual,
        input_size=size,
        mean=tuple(pcfg.get("mean", oc.OPENAI_DATASET_MEAN)),  # type: ignore[arg-type]
        std=tuple(pcfg.get("std", oc.OPENAI_DATASET_STD)),  # type: ignore[arg-type]
        device=device,
        identity=identity,
        source=source,
        module=visual,
        info={"architecture": f"open_clip {model}", "pretrained": tag, "embedding_dim": int(getattr(visual, "output_dim", 0) or 0)},
    )
