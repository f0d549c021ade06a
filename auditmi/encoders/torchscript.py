"""TorchScript backend: any framework's encoder exported with ``torch.jit.save``.

TorchScript is deprecated in current torch; new exports should use torch.export (``.pt2``, see
:mod:`auditmi.encoders.export`). Existing TorchScript files keep working, without torch's
deprecation warning on every scan.

TorchScript archives are read by TorchScript's own loader, which only rebuilds tensors and
compiled TorchScript graphs; it does not run arbitrary Python (unlike ``torch.load`` of a
pickled module, which auditmi never does). The model must map a normalised (B, 3, S, S) batch
to (B, D) embeddings. Input size and normalisation come from a sidecar JSON next to the file
(``model.pt.json`` or ``model.json``: ``{"input_size": 224, "mean": [...], "std": [...]}``);
without one, 224 px and ImageNet statistics are assumed, recorded in the report and shown as a
warning on the terminal (:func:`missing_sidecar_note`). A sidecar with a bad value is refused.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from auditmi.encoders.base import Encoder, prepare_module, sha256_file, validate_preprocessing
from auditmi.errors import EncoderUnavailableError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


SIDECAR_KEYS = ("input_size", "mean", "std")


def sidecar_candidates(path: Path) -> tuple[Path, Path]:
    """Where a TorchScript file's sidecar may be: ``model.pt.json``, then ``model.json``."""
    return path.with_name(path.name + ".json"), path.with_suffix(".json")


def missing_sidecar_note(path: str | Path) -> str | None:
    """The warning to show when a TorchScript file has no sidecar (None when it has one)."""
    p = Path(path).expanduser()
    if any(c.is_file() for c in sidecar_candidates(p)):
        return None
    return (f"{p} has no sidecar {p.name}.json: assuming 224 px input and ImageNet normalisation "
            f"(mean {list(IMAGENET_MEAN)}, std {list(IMAGENET_STD)}). If the encoder was trained otherwise the audit is "
            f'weaker than it should be: write {p.name}.json with {{"input_size": ..., "mean": [...], "std": [...]}}.')


def _sidecar(path: Path) -> tuple[dict, str]:
    """The sidecar's validated values (``input_size``, ``mean``, ``std``) and its path."""
    for cand in sidecar_candidates(path):
        if cand.is_file():
            try:
                meta = json.loads(cand.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise EncoderUnavailableError(f"cannot read the TorchScript sidecar {cand}: {e}. It must be JSON like "
                                              '{"input_size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}.') from e
            if not isinstance(meta, dict):
                raise EncoderUnavailableError(f"the TorchScript sidecar {cand} must hold a JSON object with {', '.join(SIDECAR_KEYS)}.")
            unknown = sorted(set(meta) - set(SIDECAR_KEYS))
            if unknown:
                raise EncoderUnavailableError(f"the TorchScript sidecar {cand} has unknown keys {unknown}; it may hold {', '.join(SIDECAR_KEYS)}.")
            size, mean, std = validate_preprocessing(meta.get("input_size", 224), meta.get("mean", IMAGENET_MEAN),
                                                     meta.get("std", IMAGENET_STD), source=f"the TorchScript sidecar {cand}")
            return {"input_size": size, "mean": mean, "std": std}, str(cand)
    return {}, ""


def load_torchscript(path: str | Path, device: torch.device, spec: str) -> Encoder:
    """Load a TorchScript file as a black-box :class:`Encoder`."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise EncoderUnavailableError(f"TorchScript file {p} does not exist.")
    if not zipfile.is_zipfile(p):
        raise EncoderUnavailableError(f"{p} is not a TorchScript archive (export it with torch.jit.save).")
    with zipfile.ZipFile(p) as z:
        if not any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist()):
            raise EncoderUnavailableError(
                f"{p} looks like a pickled state_dict or module, not TorchScript. auditmi never unpickles "
                "shared files: export with torch.jit.script/trace + torch.jit.save, or write an auditmi checkpoint folder."
            )
    meta, meta_path = _sidecar(p)  # a bad sidecar fails before the model is loaded
    try:
        with warnings.catch_warnings():
            # torch.jit.load is deprecated ("switch to torch.export"): the advice is for the file's
            # author, not for the auditor, and auditmi's README recommends .pt2 programs already.
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
            module = torch.jit.load(str(p), map_location="cpu")
    except Exception as e:
        raise EncoderUnavailableError(f"cannot load TorchScript {p}: {e}") from e
    prepare_module(module, device)
    return sidecar_encoder(p, spec, "torchscript", module, device, meta, meta_path)


def sidecar_encoder(p: Path, spec: str, backend: str, module: Any, device: torch.device,
                    meta: dict[str, Any], meta_path: str | None) -> Encoder:
    """The :class:`Encoder` of a single-file model (TorchScript or torch.export) and its sidecar JSON.

    Without a sidecar the input is assumed to be 224 px with ImageNet normalisation, and the
    encoder's info says so (the CLI warns before the scan).
    """
    note = {} if meta_path else {"note": "no sidecar JSON: assumed 224 px input and ImageNet normalisation"}
    digest = sha256_file(p)
    return Encoder(
        spec=spec,
        backend=backend,
        forward=module,
        input_size=int(meta.get("input_size", 224)),
        mean=tuple(meta.get("mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
        std=tuple(meta.get("std", IMAGENET_STD)),  # type: ignore[arg-type]
        device=device,
        identity=f"{backend}:sha256:{digest}",
        source=str(p.resolve()),
        module=module,
        info={"weights_sha256": digest, "sidecar": meta_path or None, **note},
    )
