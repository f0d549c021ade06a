"""torch.export backend: ``.pt2`` programs, the recommended way to hand over any local model.

The program must map a normalised (B, 3, S, S) batch to (B, D) embeddings (or a tuple whose
first element is that), exported in eval mode with a dynamic batch dimension::

    model.eval()
    x = torch.randn(2, 3, 224, 224)
    prog = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(prog, "encoder.pt2")

Input size and normalisation come from a sidecar JSON next to the file (``encoder.pt2.json`` or
``encoder.json``: ``{"input_size": 224, "mean": [...], "std": [...]}``), as for TorchScript.

Safety: ``torch.export.load`` unpickles parts of an archive (pickled tensors, example inputs,
custom objects) and falls back to an unrestricted ``torch.load`` when the restricted one fails.
auditmi checks the archive first (no native libraries, no custom or opaque objects) and loads it
with every ``torch.load`` forced to ``weights_only=True`` and every other unpickler refused, so a
shared ``.pt2`` file cannot execute code while it loads.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from auditmi.encoders.base import Encoder
from auditmi.encoders.torchscript import _sidecar, sidecar_encoder
from auditmi.errors import EncoderUnavailableError

_NATIVE = (".so", ".dll", ".dylib", ".pyd")


class _UnpicklingRefused(RuntimeError):
    pass


def _refuse(*_: Any, **__: Any) -> Any:
    raise _UnpicklingRefused("auditmi refuses to unpickle objects from a shared .pt2 file")


@contextlib.contextmanager
def _weights_only() -> Iterator[None]:
    """Force ``torch.load(weights_only=True)`` and refuse the other unpicklers during a load."""
    import torch.export.pt2_archive._package as pkg

    orig_load, orig_obj, orig_pickle = torch.load, torch._C._pickle_load_obj, pkg.pickle

    def safe_load(f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return orig_load(f, *args, **kwargs)

    class _NoPickle:
        loads = staticmethod(_refuse)
        load = staticmethod(_refuse)

    torch.load = safe_load  # type: ignore[assignment]
    torch._C._pickle_load_obj = _refuse
    pkg.pickle = _NoPickle  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.load = orig_load  # type: ignore[assignment]
        torch._C._pickle_load_obj = orig_obj
        pkg.pickle = orig_pickle


def _check_archive(p: Path) -> None:
    """Refuse files that are not torch.export archives or that carry code or arbitrary objects."""
    if not zipfile.is_zipfile(p):
        raise EncoderUnavailableError(f"{p} is not a torch.export archive (write it with torch.export.save).")
    with zipfile.ZipFile(p) as z:
        names = z.namelist()
        if not any(n.endswith("archive_format") for n in names) or not any("/models/" in n and n.endswith(".json") for n in names):
            raise EncoderUnavailableError(
                f"{p} is not a torch.export program (no archive_format/models/*.json). Export the model with "
                "torch.export.export(model.eval(), (x,)) and save it with torch.export.save(program, 'encoder.pt2')."
            )
        native = [n for n in names if n.lower().endswith(_NATIVE)]
        if native:
            raise EncoderUnavailableError(
                f"{p} contains native code ({native[0]}), e.g. an AOTInductor package; auditmi loads only portable "
                "torch.export programs (torch.export.save), which cannot run code on load."
            )
        for n in names:
            if n.endswith("_constants_config.json"):
                try:
                    cfg = json.loads(z.read(n))
                except (ValueError, OSError) as e:
                    raise EncoderUnavailableError(f"cannot read {n} in {p}: {e}") from e
                for fqn, meta in (cfg.get("config") or {}).items():
                    path_name = str(meta.get("path_name", ""))
                    if not path_name.startswith("tensor_"):
                        raise EncoderUnavailableError(
                            f"{p} stores a non-tensor constant ({fqn}: {path_name}), which would have to be unpickled; "
                            "auditmi never unpickles shared files. Export a model whose constants are tensors."
                        )


def _training_ops(gm: torch.nn.Module) -> list[str]:
    """Batch-norm or dropout nodes that run in training mode (the model was exported without .eval())."""
    bad = []
    graph = getattr(gm, "graph", None)
    for n in getattr(graph, "nodes", []):
        if n.op != "call_function":
            continue
        t = str(n.target)
        if ("_native_batch_norm_legit_functional" in t or t == "aten._native_batch_norm_legit.default"
                or (t.startswith("aten.batch_norm") and len(n.args) > 5 and n.args[5] is True)
                or (t.startswith("aten.dropout") and len(n.args) > 2 and n.args[2] is True)):
            bad.append(t)
    return bad


def load_export(path: str | Path, device: torch.device, spec: str) -> Encoder:
    """Load a ``.pt2`` torch.export program as a black-box :class:`Encoder`."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise EncoderUnavailableError(f"torch.export file {p} does not exist.")
    _check_archive(p)
    try:
        with _weights_only():
            prog = torch.export.load(str(p))
    except (_UnpicklingRefused, pickle.UnpicklingError) as e:
        raise EncoderUnavailableError(
            f"{p} needs unrestricted unpickling to load (pickled objects that are not plain tensors); auditmi never "
            "unpickles shared files. Re-export the model so that its weights and inputs are plain tensors."
        ) from e
    except Exception as e:
        raise EncoderUnavailableError(f"cannot load torch.export program {p}: {type(e).__name__}: {str(e)[:400]}") from e
    module = prog.module()
    bad = _training_ops(module)
    if bad:
        raise EncoderUnavailableError(
            f"{p} was exported in training mode ({bad[0]}): its embeddings would depend on the batch and on chance. "
            "Call model.eval() before torch.export.export and save it again."
        )
    for prm in module.parameters():
        prm.requires_grad_(False)
    module.to(device)
    meta, meta_path = _sidecar(p)
    return sidecar_encoder(p, spec, "export", module, device, meta, meta_path)


def save_export(model: torch.nn.Module, path: str | Path, input_size: int, mean: tuple[float, float, float],
                std: tuple[float, float, float], extra: dict[str, Any] | None = None) -> Path:
    """Export ``model`` (eval mode, dynamic batch) to ``path`` with its sidecar JSON; returns the path.

    A convenience for users and examples: ``auditmi scan --encoder path.pt2`` then loads it.
    """
    from auditmi._io import write_bytes, write_text

    out = Path(path)
    model = model.eval()
    x = torch.randn(2, 3, input_size, input_size)
    prog = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},))
    buf = io.BytesIO()  # torch.export.save wants a .pt2 name or a buffer; the atomic writer's temp file has neither
    torch.export.save(prog, buf)
    write_bytes(out, buf.getvalue())
    meta = {"input_size": int(input_size), "mean": [float(m) for m in mean], "std": [float(s) for s in std], **(extra or {})}
    write_text(out.with_name(out.name + ".json"), json.dumps(meta, indent=2))
    return out
