"""Augmented views of images, generated as batched tensor operations on the encoder's device.

The augmentation is the SimCLR/MoCo pre-training augmentation that EncoderMI queries the encoder
with (method.md, "Membership features"): RandomResizedCrop(scale 0.2-1, ratio 3/4-4/3),
horizontal flip p=0.5, ColorJitter(0.4, 0.4, 0.4, 0.1) with p=0.8 (the four adjustments in a
random order, as torchvision does), RandomGrayscale p=0.2, then the encoder's normalisation.

Random parameters are drawn per image and per view on the CPU from a generator seeded by
``(seed, image content hash)``: an image's views therefore do not depend on which batch it
lands in, on the device, or on the other images in the folder, which is what makes the
embedding cache and resumed scans reproducible. The pixel work (crop-and-resize with
``roi_align``, flips, colour jitter, grayscale, normalisation) runs batched on the device.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from auditmi.errors import InputError
from auditmi.validate import is_finite_number

# View-drawing algorithms this version reproduces exactly (stored in bundles and cache keys).
KNOWN_ALGORITHMS = ("auditmi-views-v1",)

# ITU-R 601-2 luma, the weights PIL and torchvision use for grayscale.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ViewConfig:
    """How views are drawn. Calibration and scan must use the same configuration."""

    n_views: int = 10
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    algorithm: str = "auditmi-views-v1"

    def __post_init__(self) -> None:
        from auditmi._paths import check_views

        check_views(self.n_views)  # the CLI runs the same check before importing torch
        if self.algorithm not in KNOWN_ALGORITHMS:
            raise InputError(
                f"views drawn with algorithm {self.algorithm!r} cannot be reproduced by this auditmi "
                f"(it knows {', '.join(KNOWN_ALGORITHMS)}); use the auditmi version that made the bundle, or calibrate again."
            )
        problems = []
        nums = {"scale": self.scale, "ratio": self.ratio, "jitter": self.jitter}
        for name, vals in nums.items():
            if not all(is_finite_number(v) for v in vals):
                problems.append(f"{name} must hold finite numbers (got {list(vals)})")
        if not problems:
            if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1] <= 1:
                problems.append(f"scale must be (low, high) with 0 < low <= high <= 1 (got {list(self.scale)})")
            if len(self.ratio) != 2 or not 0 < self.ratio[0] <= self.ratio[1]:
                problems.append(f"ratio must be (low, high) with 0 < low <= high (got {list(self.ratio)})")
            if len(self.jitter) != 4 or min(self.jitter) < 0 or self.jitter[3] > 0.5:
                problems.append(f"jitter must be (brightness, contrast, saturation, hue) >= 0 with hue <= 0.5 (got {list(self.jitter)})")
        for name in ("flip_p", "jitter_p", "gray_p"):
            v = getattr(self, name)
            if not is_finite_number(v) or not 0 <= v <= 1:
                problems.append(f"{name} must be a probability between 0 and 1 (got {v!r})")
        if problems:
            raise InputError("invalid view configuration: " + "; ".join(problems) + ".")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, stored in calibration bundles and reports."""
        d = asdict(self)
        for k in ("scale", "ratio", "jitter"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViewConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(
            n_views=d["n_views"],
            scale=tuple(d["scale"]),  # type: ignore[arg-type]
            ratio=tuple(d["ratio"]),  # type: ignore[arg-type]
            flip_p=float(d["flip_p"]),
            jitter=tuple(d["jitter"]),  # type: ignore[arg-type]
            jitter_p=float(d["jitter_p"]),
            gray_p=float(d["gray_p"]),
            algorithm=str(d.get("algorithm", "auditmi-views-v1")),
        )

    def differences(self, other: ViewConfig) -> list[str]:
        """Human-readable list of fields that differ from ``other`` (empty if compatible)."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]} vs {b[k]}" for k in a if a[k] != b[k]]


@dataclass
class ViewParams:
    """Per-view random parameters for K views (K = images x views), on the CPU.

    Boxes are in pixel coordinates of each source image (x1, y1, x2, y2).
    """

    boxes: torch.Tensor  # (K, 4) float
    flip: torch.Tensor  # (K,) bool
    jitter_on: torch.Tensor  # (K,) bool
    factors: torch.Tensor  # (K, 4): brightness, contrast, saturation, hue
    order: torch.Tensor  # (K, 4) permutation of 0..3
    gray: torch.Tensor  # (K,) bool
    source: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # (K,) image index

    @staticmethod
    def cat(parts: Sequence[ViewParams]) -> ViewParams:
        """Concatenate parameters of several images, renumbering ``source`` per part."""
        srcs = [torch.full((p.boxes.shape[0],), i, dtype=torch.long) for i, p in enumerate(parts)]
        return ViewParams(
            boxes=torch.cat([p.boxes for p in parts]),
            flip=torch.cat([p.flip for p in parts]),
            jitter_on=torch.cat([p.jitter_on for p in parts]),
            factors=torch.cat([p.factors for p in parts]),
            order=torch.cat([p.order for p in parts]),
            gray=torch.cat([p.gray for p in parts]),
            source=torch.cat(srcs),
        )


def image_seed(seed: int, sha256: str) -> int:
    """Seed of one image's view generator: depends only on the run seed and the image content."""
    h = hashlib.sha256(f"{int(seed)}:{sha256}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def sample_params(
    heights: torch.Tensor, widths: torch.Tensor, cfg: ViewConfig, n_views: int, generator: torch.Generator
) -> ViewParams:
    """Draw ``n_views`` views for each image of the given sizes (vectorised).

    RandomResizedCrop follows torchvision's algorithm: up to 10 attempts at a random area
    fraction in ``scale`` and log-uniform aspect ratio in ``ratio``; if none fits, a centre crop
    with the aspect ratio clamped to ``ratio``.
    """
    h = heights.repeat_interleave(n_views).double()
    w = widths.repeat_interleave(n_views).double()
    k = h.shape[0]
    g = generator
    attempts = 10
    area = (h * w).unsqueeze(1) * (cfg.scale[0] + (cfg.scale[1] - cfg.scale[0]) * torch.rand(k, attempts, generator=g, dtype=torch.float64))
    logr = (math.log(cfg.ratio[0]), math.log(cfg.ratio[1]))
    ar = torch.exp(logr[0] + (logr[1] - logr[0]) * torch.rand(k, attempts, generator=g, dtype=torch.float64))
    cw = torch.round(torch.sqrt(area * ar))
    ch = torch.round(torch.sqrt(area / ar))
    ok = (cw > 0) & (ch > 0) & (cw <= w.unsqueeze(1)) & (ch <= h.unsqueeze(1))
    first = torch.argmax(ok.int(), dim=1)
    any_ok = ok.any(dim=1)
    cw_sel = cw.gather(1, first[:, None]).squeeze(1)
    ch_sel = ch.gather(1, first[:, None]).squeeze(1)
    # Fallback: centre crop with the aspect ratio clamped to the allowed range.
    in_ratio = w / h
    fb_w = torch.where(in_ratio < cfg.ratio[0], w, torch.where(in_ratio > cfg.ratio[1], torch.round(h * cfg.ratio[1]), w))
    fb_h = torch.where(in_ratio < cfg.ratio[0], torch.round(w / cfg.ratio[0]), h)
    cw_sel = torch.where(any_ok, cw_sel, fb_w)
    ch_sel = torch.where(any_ok, ch_sel, fb_h)
    u = torch.rand(k, 2, generator=g, dtype=torch.float64)
    # Random integer offset in [0, size - crop] (inclusive), as torchvision draws it.
    x0 = torch.floor(u[:, 0] * (w - cw_sel + 1)).clamp(min=0)
    y0 = torch.floor(u[:, 1] * (h - ch_sel + 1)).clamp(min=0)
    x0 = torch.where(any_ok, x0, torch.floor((w - cw_sel) / 2))
    y0 = torch.where(any_ok, y0, torch.floor((h - ch_sel) / 2))
    boxes = torch.stack([x0, y0, x0 + cw_sel, y0 + ch_sel], dim=1).float()

    flip = torch.rand(k, generator=g) < cfg.flip_p
    jitter_on = torch.rand(k, generator=g) < cfg.jitter_p
    b, c, s, hue = cfg.jitter
    lo = torch.tensor([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -hue])
    hi = torch.tensor([1 + b, 1 + c, 1 + s, hue])
    factors = lo + (hi - lo) * torch.rand(k, 4, generator=g)
    order = torch.argsort(torch.rand(k, 4, generator=g), dim=1)
    gray = torch.rand(k, generator=g) < cfg.gray_p
    return ViewParams(boxes=boxes, flip=flip, jitter_on=jitter_on, factors=factors, order=order, gray=gray)


def params_for_image(height: int, width: int, sha256: str, seed: int, cfg: ViewConfig) -> ViewParams:
    """The ``cfg.n_views`` view parameters of one image, reproducible from (seed, content)."""
    g = torch.Generator().manual_seed(image_seed(seed, sha256))
    return sample_params(torch.tensor([height]), torch.tensor([width]), cfg, cfg.n_views, g)


def _gray(x: torch.Tensor) -> torch.Tensor:
    # (L0 * r + L1 * g) + L2 * b, evaluated with one temporary instead of four.
    g = x[:, 0] * _LUMA[0]
    tmp = torch.mul(x[:, 1], _LUMA[1])
    g.add_(tmp)
    g.add_(torch.mul(x[:, 2], _LUMA[2], out=tmp))
    return g.unsqueeze(1)


# Which of (v, q, p, t) each RGB channel takes in each of the six hue sectors (torchvision's table).
_SECTOR_PICK = ((0, 1, 2, 2, 3, 0), (3, 0, 0, 1, 2, 2), (2, 2, 3, 0, 0, 1))


def _hue_shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Hue shift as torchvision's ``adjust_hue`` formulates it on tensors (RGB -> HSV, hue + shift
    mod 1, HSV -> RGB), with the same operations on the same operands, but in place on a few
    buffers instead of ~50 fresh tensors; tests/test_views.py checks it against the
    straightforward formulation bit for bit."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc = x.amax(dim=1)
    minc = x.amin(dim=1)
    eqc = maxc == minc
    cr = maxc.sub(minc)
    s = torch.where(eqc, 1.0, maxc)
    torch.div(cr, s, out=s)  # s = cr / where(eqc, 1, maxc)
    cr_div = cr.masked_fill_(eqc, 1.0)
    rc = torch.sub(maxc, r).div_(cr_div)
    gc = torch.sub(maxc, g).div_(cr_div)
    bc = torch.sub(maxc, b).div_(cr_div)
    mr = maxc == r
    mg = maxc == g
    h = torch.sub(bc, gc).mul_(mr)  # hr
    h.add_(torch.add(rc, 2.0).sub_(bc).mul_(mg & ~mr))  # + hg
    h.add_(gc.add_(4.0).sub_(rc).mul_(~(mg | mr)))  # + hb
    h.div_(6.0).add_(1.0).fmod_(1.0)
    h.add_(shift[:, None, None]).add_(1.0).fmod_(1.0)
    # HSV -> RGB with v = maxc.
    h6 = h.mul_(6.0)
    i = torch.floor(h6)
    f = h6.sub_(i)
    idx = i.to(torch.int64).remainder_(6)
    one_minus_f = torch.neg(f).add_(1.0)
    p = torch.neg(s).add_(1.0).mul_(maxc).clamp_(0, 1)  # (v * (1 - s)).clamp(0, 1)
    q = f.mul_(s).neg_().add_(1.0).mul_(maxc).clamp_(0, 1)  # (v * (1 - s * f)).clamp(0, 1)
    t = one_minus_f.mul_(s).neg_().add_(1.0).mul_(maxc).clamp_(0, 1)  # (v * (1 - s * (1 - f))).clamp(0, 1)
    cand = torch.stack((maxc, q, p, t), dim=1)
    table = torch.tensor(_SECTOR_PICK, device=x.device)
    return cand.gather(1, table[:, idx].permute(1, 0, 2, 3))


def _jitter(v: torch.Tensor, on: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """ColorJitter on the views where ``on``: at each of the 4 steps, each view gets the
    adjustment ``order[:, step]`` with its factor.

    Brightness, contrast and saturation are the same blend ``f * x + (1 - f) * target`` (target
    black, the mean gray level or the grayscale image), so one step applies all three to every
    view at once; a view whose step is hue, or that is not jittered, gets ``f = 1``, which leaves
    it unchanged exactly. Only hue, a per-pixel HSV round trip, runs on the subset that needs it.
    The arithmetic per view is that of one masked adjustment at a time (tests/test_views.py
    checks the two agree bit for bit).
    """
    ones = torch.ones_like(factors[:, 0])
    zeros = torch.zeros_like(ones)
    for step in range(4):
        op = order[:, step]
        blend = on & (op != 3)
        if blend.any():
            f = torch.where(blend, factors.gather(1, op[:, None]).squeeze(1), ones)
            # Per-view weights of the two blend targets: (1 - f) on the mean gray level for
            # contrast, on the grayscale image for saturation, 0 otherwise (brightness: x * f).
            w_mean = torch.where(blend & (op == 1), 1 - f, zeros)[:, None, None, None]
            w_gray = torch.where(blend & (op == 2), 1 - f, zeros)[:, None, None, None]
            g = _gray(v)  # (K, 1, H, W): a third of the pixels of v
            mean = g.mean(dim=(1, 2, 3), keepdim=True)
            target = g.mul_(w_gray).add_(w_mean * mean)
            # In place (v is this function's own tensor): the same products and sums as
            # f * x + (1 - f) * target, without allocating a view-sized tensor per step.
            v.mul_(f[:, None, None, None]).add_(target).clamp_(0, 1)
        hue = on & (op == 3)
        if hue.any():
            v[hue] = _hue_shift(v[hue], factors[hue, 3])
    return v


def render_views(
    images: torch.Tensor,
    params: ViewParams,
    out_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Render views from a padded batch of source images.

    Args:
        images: uint8 or float (B, 3, H, W) on the target device; each source image occupies the
            top-left corner of its slot. Bilinear sampling near a box edge reads one pixel past
            the image, so a padded slot must repeat the image's last row and column there, as
            :func:`pad_batch` does (zero padding would make views depend on the batch).
        params: parameters of K views; ``params.source`` maps each view to its image in the batch.
        out_size: side of the square views (the encoder's input size).
        mean, std: the encoder's normalisation.

    Returns:
        float32 (K, 3, out_size, out_size) normalised views, on ``images.device``.
    """
    from auditmi._roi_align import roi_align

    dev = images.device
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    boxes = torch.cat([params.source.to(dev, torch.float32)[:, None], params.boxes.to(dev)], dim=1)
    # roi_align with adaptive sampling averages several samples per output pixel when a crop is
    # shrunk, which antialiases like PIL's resize; aligned=True uses pixel-centre coordinates.
    v = roi_align(x, boxes, out_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    flip = params.flip.to(dev)
    if flip.any():
        v[flip] = v[flip].flip(-1)
    jit = params.jitter_on.to(dev)
    if jit.any():
        v = _jitter(v, jit, params.factors.to(dev), params.order.to(dev))
    gray = params.gray.to(dev)
    if gray.any():
        v[gray] = _gray(v[gray]).expand(-1, 3, -1, -1).contiguous()
    m = torch.tensor(mean, device=dev, dtype=v.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=dev, dtype=v.dtype).view(1, 3, 1, 1)
    return (v - m) / s


def pad_batch(arrays: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (3, H_i, W_i) uint8 tensors into a padded (B, 3, Hmax, Wmax) batch.

    The first padding row and column repeat the image's last row and column. ``roi_align``
    samples up to half a pixel inside the box edge and interpolates bilinearly with the next
    pixel; on a lone image that neighbour is clamped to the edge pixel, so replicating the edge
    makes an image's views independent of the larger images it is batched with (zero padding
    darkened its right and bottom borders). Pixels further out are never read.

    Returns the batch and a (B, 2) tensor of (height, width).
    """
    hmax = max(int(a.shape[1]) for a in arrays)
    wmax = max(int(a.shape[2]) for a in arrays)
    out = torch.zeros((len(arrays), 3, hmax, wmax), dtype=arrays[0].dtype)
    sizes = torch.zeros((len(arrays), 2), dtype=torch.long)
    for i, a in enumerate(arrays):
        h, w = int(a.shape[1]), int(a.shape[2])
        out[i, :, :h, :w] = a
        if w < wmax:
            out[i, :, :h, w] = a[:, :, w - 1]
        if h < hmax:
            out[i, :, h, : min(w + 1, wmax)] = out[i, :, h - 1, : min(w + 1, wmax)]
        sizes[i, 0], sizes[i, 1] = h, w
    return out, sizes


def working_side(input_size: int, cfg: ViewConfig) -> int:
    """Shorter side images are downscaled to before views are cut.

    The smallest crop covers ``scale[0]`` of the area, i.e. sqrt(scale[0]) of the side; keeping
    input_size / sqrt(scale[0]) pixels means even the smallest crop is never upsampled from a
    downscaled copy, so views match those cut from the full-resolution file.
    """
    return int(math.ceil(input_size / math.sqrt(max(cfg.scale[0], 1e-3))))
