"""The black-box encoder interface every backend provides."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from auditmi.bundle import sha256_file  # noqa: F401  (re-exported: encoders hash their weight files)
from auditmi.errors import EncoderUnavailableError, InputError
from auditmi.validate import is_finite_number, is_number

#: Input sides an encoder may declare. Real encoders use 224-518 px; the upper bound keeps a
#: mistyped config (``input_size: 6000``) from allocating tens of GB for the views, the lower
#: one keeps the view crops meaningful.
MIN_INPUT_SIZE = 8
MAX_INPUT_SIZE = 1024

Triple = tuple[float, float, float]


def validate_preprocessing(input_size: Any, mean: Any, std: Any, source: str = "the encoder config") -> tuple[int, Triple, Triple]:
    """Check an encoder's declared input size and normalisation; every backend calls this.

    Args:
        input_size: side of the square input, a whole number of pixels.
        mean, std: per-channel (RGB) normalisation, three finite numbers each; ``std`` > 0.
        source: where the values came from (a file name), for the message.

    Returns:
        ``(input_size, mean, std)`` as an int and two float triples.

    Raises:
        EncoderUnavailableError: a value that cannot be right (exit 4): the problem is the
            encoder's configuration, not the images.
    """
    problems = []
    if not is_number(input_size) or not float(input_size).is_integer():
        problems.append(f"input_size must be a whole number of pixels (got {input_size!r})")
    elif not MIN_INPUT_SIZE <= int(input_size) <= MAX_INPUT_SIZE:
        problems.append(f"input_size must be between {MIN_INPUT_SIZE} and {MAX_INPUT_SIZE} pixels (got {input_size!r})")
    triples: dict[str, Triple] = {}
    for name, v in (("mean", mean), ("std", std)):
        if isinstance(v, (list, tuple)) and len(v) == 3 and all(is_finite_number(x) for x in v):
            triples[name] = (float(v[0]), float(v[1]), float(v[2]))
        else:
            problems.append(f"{name} must be three finite numbers, one per RGB channel (got {v!r})")
    if "std" in triples and min(triples["std"]) <= 0:
        problems.append(f"std must be positive in every channel (got {list(std)}): the encoder's inputs would be divided by zero")
    if problems:
        raise EncoderUnavailableError(f"{source} is invalid: " + "; ".join(problems) + ". Fix it, or re-export the encoder.")
    return int(input_size), triples["mean"], triples["std"]


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; ``cuda`` without a GPU is a clear error."""
    from auditmi._paths import check_device

    check_device(device)  # the CLI runs the same check before importing torch
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was requested but no CUDA GPU is available; use --device auto or cpu.")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise InputError(f"invalid --device {device!r}: {e}. Use auto, cpu or cuda.") from e


def sha256_state_dict(module: torch.nn.Module) -> str:
    """Content hash of a module's parameters and buffers (names, shapes, dtypes and values)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class Encoder:
    """An image encoder used as a black box: normalised images in, L2-normalised embeddings out.

    Attributes:
        spec: the specification the user gave (alias, ``backend:name@tag`` or a path).
        backend: ``open_clip``, ``local``, ``torchscript``, ``export``, ``timm``, ``hf`` or ``http``.
        input_size: side of the square input the encoder expects.
        mean, std: the encoder's own input normalisation.
        identity: a stable string that changes whenever the weights change (embedding cache key).
        source: where the weights came from, for reports.
        info: extra JSON-able facts for reports (architecture, embedding size, notes).
    """

    spec: str
    backend: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device
    identity: str
    source: str
    module: torch.nn.Module | None = None
    info: dict[str, Any] = field(default_factory=dict)
    amp: bool = True
    #: True for encoders answered by a remote service (``http:``): the pipeline embeds in its
    #: own process (one client, one rate limit) instead of in forked workers.
    remote: bool = False
    #: Views per encoder call this backend prefers (None: the pipeline's device default).
    batch_size: int | None = None
    #: Called by the pipeline before embedding with (images, views per image, views per call);
    #: raises an :class:`~auditmi.errors.AuditmiError` to refuse the work (e.g. over a query budget).
    preflight: Callable[[int, int, int], None] | None = None
    #: How another process (a Ray actor) rebuilds this encoder: a picklable object with
    #: ``load(device: str) -> Encoder`` (e.g. a calibration bundle's shadow), or None when
    #: :func:`auditmi.encoders.load_encoder` on ``spec`` does. Never the weights themselves.
    recipe: Any = None

    def __post_init__(self) -> None:
        # Every backend builds an Encoder: a config that cannot be right is refused here, as an
        # encoder problem (exit 4), before a single image is rendered with it.
        self.input_size, self.mean, self.std = validate_preprocessing(
            self.input_size, self.mean, self.std, source=f"encoder {self.spec!r}")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """bf16 autocast on GPUs that support it, fp16 on older ones, none on the CPU."""
        if self.device.type != "cuda" or not self.amp:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    @torch.inference_mode()
    def embed(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Embed a batch of normalised (B, 3, S, S) images; returns float32 (B, D), unit norm
        (``normalize=False``: the raw embeddings, whose norm is a membership signal)."""
        x = x.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        dt = self.autocast_dtype
        ctx = torch.autocast(self.device.type, dtype=dt) if dt is not None else contextlib.nullcontext()
        with ctx:
            out = self.forward(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        out = out.float().flatten(1)
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    def describe(self) -> dict[str, Any]:
        """JSON-able description for reports and bundles."""
        return {
            "spec": self.spec,
            "backend": self.backend,
            "identity": self.identity,
            "source": self.source,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "device": str(self.device),
            **self.info,
        }


def prepare_module(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Eval mode, no gradients, on the device (channels_last on GPU)."""
    module.eval()
    # Per parameter: ScriptModule (the TorchScript backend) does not support ``requires_grad_``.
    for p in module.parameters():
        p.requires_grad_(False)
    module.to(device)
    if device.type == "cuda":
        module.to(memory_format=torch.channels_last)
    return module
