"""Tests for auditmi.views: view parameters, batched rendering and the view configuration."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from auditmi.errors import InputError
from auditmi.views import (
    ViewConfig,
    ViewParams,
    image_seed,
    pad_batch,
    params_for_image,
    render_views,
    sample_params,
    working_side,
)

from conftest import make_image

ZERO = (0.0, 0.0, 0.0)
ONE = (1.0, 1.0, 1.0)
SHA_A = "a" * 64
SHA_B = "b" * 64


def _plain_params(k: int, height: int, width: int, **overrides: torch.Tensor) -> ViewParams:
    """K views of the full image with no flip, no jitter, no grayscale (overridable)."""
    p = ViewParams(
        boxes=torch.tensor([[0.0, 0.0, float(width), float(height)]]).repeat(k, 1),
        flip=torch.zeros(k, dtype=torch.bool),
        jitter_on=torch.zeros(k, dtype=torch.bool),
        factors=torch.tensor([[1.0, 1.0, 1.0, 0.0]]).repeat(k, 1),
        order=torch.arange(4).repeat(k, 1),
        gray=torch.zeros(k, dtype=torch.bool),
        source=torch.zeros(k, dtype=torch.long),
    )
    for name, value in overrides.items():
        setattr(p, name, value)
    return p


def _render_one(img: torch.Tensor, params: ViewParams, size: int, mean=ZERO, std=ONE) -> torch.Tensor:
    batch, _ = pad_batch([img])
    return render_views(batch, params, size, mean, std)


# --------------------------------------------------------------------------------------------
# Rendering: shape, normalisation, determinism, batch independence
# --------------------------------------------------------------------------------------------


def test_render_views_shape_dtype_and_normalisation() -> None:
    cfg = ViewConfig(n_views=5)
    img = make_image(30, 22)
    p = ViewParams.cat([params_for_image(30, 22, SHA_A, 0, cfg)])
    batch, _ = pad_batch([img])
    v = render_views(batch, p, 16, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    assert v.shape == (5, 3, 16, 16)
    assert v.dtype == torch.float32
    assert torch.isfinite(v).all()
    # Un-normalised values are pixel intensities in [0, 1].
    raw = v * torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1) + torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


def test_constant_image_normalises_to_encoder_statistics() -> None:
    """A flat colour, with no colour augmentation, must come out as (c - mean) / std exactly."""
    img = torch.empty(3, 12, 20, dtype=torch.uint8)
    img[0], img[1], img[2] = 200, 100, 50
    cfg = ViewConfig(n_views=4, jitter_p=0.0, gray_p=0.0)
    p = ViewParams.cat([params_for_image(12, 20, SHA_A, 3, cfg)])
    mean, std = (0.48, 0.45, 0.40), (0.27, 0.26, 0.28)
    v = _render_one(img, p, 8, mean, std)
    expected = (torch.tensor([200, 100, 50]) / 255.0 - torch.tensor(mean)) / torch.tensor(std)
    assert torch.allclose(v, expected.view(1, 3, 1, 1).expand_as(v), atol=1e-5)


def test_uint8_and_float_inputs_render_the_same() -> None:
    img = make_image(18, 25, seed=2)
    cfg = ViewConfig(n_views=6)
    p = ViewParams.cat([params_for_image(18, 25, SHA_A, 0, cfg)])
    a = render_views(img[None], p, 12, ZERO, ONE)
    b = render_views(img[None].float() / 255.0, p, 12, ZERO, ONE)
    assert torch.allclose(a, b, atol=1e-6)


def test_params_reproducible_from_seed_and_content_hash() -> None:
    cfg = ViewConfig()
    a1 = params_for_image(40, 30, SHA_A, 7, cfg)
    a2 = params_for_image(40, 30, SHA_A, 7, cfg)
    for name in ("boxes", "flip", "jitter_on", "factors", "order", "gray"):
        assert torch.equal(getattr(a1, name), getattr(a2, name)), name
    other_sha = params_for_image(40, 30, SHA_B, 7, cfg)
    other_seed = params_for_image(40, 30, SHA_A, 8, cfg)
    assert not torch.equal(a1.factors, other_sha.factors)
    assert not torch.equal(a1.factors, other_seed.factors)
    assert image_seed(7, SHA_A) == image_seed(7, SHA_A) != image_seed(8, SHA_A)
    assert 0 <= image_seed(7, SHA_A) < 2**63


@pytest.mark.parametrize(
    "size_a,size_b",
    [((13, 17), (40, 50)), ((7, 40), (30, 44)), ((24, 9), (24, 60)), ((9, 24), (60, 24)), ((1, 1), (8, 8))],
)
@pytest.mark.parametrize("a_first", [True, False])
def test_views_do_not_depend_on_batch_composition(size_a, size_b, a_first) -> None:
    """An image's views are the same alone and in a padded batch next to a larger image.

    Regression: zero padding used to leak into the right/bottom border of the smaller image
    (bilinear sampling reads one pixel past the edge), changing its features with its batch.
    """
    cfg = ViewConfig(n_views=8)
    a, b = make_image(*size_a, seed=1), make_image(*size_b, seed=2)
    pa = params_for_image(*size_a, SHA_A, 0, cfg)
    pb = params_for_image(*size_b, SHA_B, 0, cfg)
    alone = render_views(pad_batch([a])[0], ViewParams.cat([pa]), 32, (0.5,) * 3, (0.5,) * 3)
    if a_first:
        batch, sizes = pad_batch([a, b])
        mixed = render_views(batch, ViewParams.cat([pa, pb]), 32, (0.5,) * 3, (0.5,) * 3)[:8]
    else:
        batch, sizes = pad_batch([b, a])
        mixed = render_views(batch, ViewParams.cat([pb, pa]), 32, (0.5,) * 3, (0.5,) * 3)[8:]
    assert sizes.tolist() == ([list(size_a), list(size_b)] if a_first else [list(size_b), list(size_a)])
    assert torch.allclose(alone, mixed, atol=1e-5), float((alone - mixed).abs().max())


@pytest.mark.gpu
@pytest.mark.slow
def test_rendering_on_gpu_matches_cpu() -> None:
    cfg = ViewConfig(n_views=8)
    imgs = [make_image(13, 17, seed=1), make_image(40, 50, seed=2)]
    p = ViewParams.cat([params_for_image(13, 17, SHA_A, 0, cfg), params_for_image(40, 50, SHA_B, 0, cfg)])
    batch, _ = pad_batch(imgs)
    cpu = render_views(batch, p, 32, (0.5,) * 3, (0.5,) * 3)
    gpu = render_views(batch.cuda(), p, 32, (0.5,) * 3, (0.5,) * 3)
    assert gpu.is_cuda
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)


def test_pad_batch_keeps_images_top_left() -> None:
    a, b = make_image(5, 7, seed=3), make_image(9, 4, seed=4)
    batch, sizes = pad_batch([a, b])
    assert batch.shape == (2, 3, 9, 7) and batch.dtype == torch.uint8
    assert torch.equal(batch[0, :, :5, :7], a) and torch.equal(batch[1, :, :9, :4], b)
    assert sizes.tolist() == [[5, 7], [9, 4]]


# --------------------------------------------------------------------------------------------
# Crop boxes
# --------------------------------------------------------------------------------------------


def test_boxes_always_inside_the_image_for_any_size() -> None:
    gen = torch.Generator().manual_seed(0)
    rand_h = torch.randint(1, 400, (300,), generator=gen)
    rand_w = torch.randint(1, 400, (300,), generator=gen)
    extreme = torch.tensor([[5, 300], [300, 5], [1, 1], [1, 500], [500, 1], [2, 3], [3, 2], [1, 2], [2, 1], [4000, 3]])
    h = torch.cat([rand_h, extreme[:, 0]])
    w = torch.cat([rand_w, extreme[:, 1]])
    cfg = ViewConfig()
    n = 20
    p = sample_params(h, w, cfg, n, gen)
    hh, ww = h.repeat_interleave(n).float(), w.repeat_interleave(n).float()
    x0, y0, x1, y1 = p.boxes.unbind(1)
    assert p.boxes.shape == (h.numel() * n, 4)
    assert (x0 >= 0).all() and (y0 >= 0).all()
    assert (x1 <= ww).all() and (y1 <= hh).all()
    assert (x1 - x0 >= 1).all() and (y1 - y0 >= 1).all()
    # Integer pixel boxes, as torchvision's RandomResizedCrop draws them.
    assert torch.equal(p.boxes, p.boxes.round())


def test_boxes_follow_random_resized_crop_scale_and_ratio() -> None:
    gen = torch.Generator().manual_seed(1)
    cfg = ViewConfig()
    p = sample_params(torch.tensor([200]), torch.tensor([200]), cfg, 4000, gen)
    cw, ch = p.boxes[:, 2] - p.boxes[:, 0], p.boxes[:, 3] - p.boxes[:, 1]
    frac = cw * ch / (200 * 200)
    ratio = cw / ch
    # Rounding to whole pixels moves area and ratio slightly past the nominal bounds.
    assert frac.min() >= 0.2 * 0.98 and frac.max() <= 1.0
    assert ratio.min() >= 0.75 * 0.98 and ratio.max() <= (4 / 3) * 1.02
    # Both ends of the scale range are used.
    assert frac.min() < 0.25 and frac.max() > 0.9


def test_extreme_aspect_ratio_falls_back_to_clamped_centre_crop() -> None:
    gen = torch.Generator().manual_seed(2)
    p = sample_params(torch.tensor([5]), torch.tensor([300]), ViewConfig(), 50, gen)
    cw, ch = p.boxes[:, 2] - p.boxes[:, 0], p.boxes[:, 3] - p.boxes[:, 1]
    assert (ch == 5).all() and (cw == round(5 * 4 / 3)).all()
    assert torch.allclose(p.boxes[:, 0], torch.full((50,), float((300 - 7) // 2)))


# --------------------------------------------------------------------------------------------
# Statistics of the random choices
# --------------------------------------------------------------------------------------------


def test_augmentation_probabilities_match_configuration() -> None:
    gen = torch.Generator().manual_seed(3)
    cfg = ViewConfig()
    n = 20000
    p = sample_params(torch.tensor([32]), torch.tensor([32]), cfg, n, gen)
    # 5 sigma for n = 20000 is about 0.018 at p = 0.5.
    assert abs(p.flip.float().mean().item() - 0.5) < 0.02
    assert abs(p.jitter_on.float().mean().item() - 0.8) < 0.02
    assert abs(p.gray.float().mean().item() - 0.2) < 0.02
    lo = torch.tensor([0.6, 0.6, 0.6, -0.1])
    hi = torch.tensor([1.4, 1.4, 1.4, 0.1])
    assert (p.factors >= lo).all() and (p.factors <= hi).all()
    assert torch.allclose(p.factors.mean(0), (lo + hi) / 2, atol=0.01)
    # Every row of ``order`` is a permutation of the four colour operations, all orders occur.
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(n, 4))
    assert len({tuple(r) for r in p.order.tolist()}) == 24


def test_custom_probabilities_are_respected() -> None:
    gen = torch.Generator().manual_seed(4)
    cfg = ViewConfig(flip_p=0.0, jitter_p=1.0, gray_p=0.0)
    p = sample_params(torch.tensor([16]), torch.tensor([16]), cfg, 2000, gen)
    assert not p.flip.any() and p.jitter_on.all() and not p.gray.any()


# --------------------------------------------------------------------------------------------
# Pixel operations against torchvision
# --------------------------------------------------------------------------------------------

_TV_OPS = {
    0: TF.adjust_brightness,
    1: TF.adjust_contrast,
    2: TF.adjust_saturation,
    3: TF.adjust_hue,
}


@pytest.mark.parametrize(
    "op,factor",
    [(0, 0.6), (0, 1.37), (1, 0.65), (1, 1.4), (2, 0.6), (2, 1.35), (3, -0.1), (3, 0.04), (3, 0.1)],
)
def test_colour_ops_agree_with_torchvision_functional(op: int, factor: float) -> None:
    """Each ColorJitter adjustment alone (order forced) equals torchvision's, within 1e-3."""
    side = 24
    img = make_image(side, side, seed=5)
    x = img.float() / 255.0
    factors = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    factors[0, op] = factor
    order = torch.tensor([[op] + [o for o in range(4) if o != op]])
    p = _plain_params(1, side, side, jitter_on=torch.tensor([True]), factors=factors, order=order)
    ours = _render_one(img, p, side)[0]
    ref = _TV_OPS[op](x, factor)
    diff = (ours - ref).abs().max().item()
    assert diff <= 1e-3, diff


def test_full_box_at_native_size_is_identity() -> None:
    img = make_image(20, 20, seed=6)
    v = _render_one(img, _plain_params(1, 20, 20), 20)[0]
    assert torch.allclose(v, img.float() / 255.0, atol=1e-6)


def test_flip_mirrors_and_grayscale_equalises_channels() -> None:
    img = make_image(16, 16, seed=7)
    x = img.float() / 255.0
    flipped = _render_one(img, _plain_params(1, 16, 16, flip=torch.tensor([True])), 16)[0]
    assert torch.allclose(flipped, x.flip(-1), atol=1e-6)
    gray = _render_one(img, _plain_params(1, 16, 16, gray=torch.tensor([True])), 16)[0]
    assert torch.allclose(gray[0], gray[1]) and torch.allclose(gray[1], gray[2])
    ref = TF.rgb_to_grayscale(x, num_output_channels=3)
    assert (gray - ref).abs().max() <= 1e-3


@pytest.mark.parametrize("src,out", [((64, 64), 16), ((48, 40), 32), ((37, 53), 20)])
def test_full_box_downscale_approximates_antialiased_resize(src, out) -> None:
    """roi_align's averaging behaves like an antialiased resize (not like nearest/aliasing)."""
    img = make_image(*src, seed=8)
    x = img.float()[None] / 255.0
    ours = _render_one(img, _plain_params(1, *src), out)
    ref = F.interpolate(x, size=(out, out), mode="bilinear", antialias=True, align_corners=False)
    err = (ours - ref).abs()
    assert err.mean() < 0.03, float(err.mean())
    assert err.max() < 0.2, float(err.max())
    # And it is clearly closer to the antialiased resize than a plain (aliasing) bilinear one is.
    aliased = F.interpolate(x, size=(out, out), mode="bilinear", antialias=False, align_corners=False)
    assert err.mean() < 0.75 * (aliased - ref).abs().mean()


def test_full_box_upscale_equals_bilinear_interpolation() -> None:
    img = make_image(12, 10, seed=9)
    x = img.float()[None] / 255.0
    ours = _render_one(img, _plain_params(1, 12, 10), 24)
    ref = F.interpolate(x, size=(24, 24), mode="bilinear", align_corners=False)
    assert torch.allclose(ours, ref, atol=1e-5)


# --------------------------------------------------------------------------------------------
# ViewConfig
# --------------------------------------------------------------------------------------------


def test_view_config_round_trip_through_json() -> None:
    cfg = ViewConfig(n_views=6, scale=(0.3, 0.9), flip_p=0.25, jitter=(0.1, 0.2, 0.3, 0.05), gray_p=0.1)
    d = json.loads(json.dumps(cfg.to_dict()))
    back = ViewConfig.from_dict(d)
    assert back == cfg
    assert back.differences(cfg) == []
    assert ViewConfig.from_dict(ViewConfig().to_dict()) == ViewConfig()


def test_view_config_differences_name_the_changed_fields() -> None:
    diffs = ViewConfig().differences(ViewConfig(n_views=12, gray_p=0.5))
    assert len(diffs) == 2
    assert any(d.startswith("n_views: 10 vs 12") for d in diffs)
    assert any(d.startswith("gray_p") for d in diffs)


@pytest.mark.parametrize("n", [1, 0, -3])
def test_fewer_than_two_views_is_an_input_error(n: int) -> None:
    with pytest.raises(InputError, match="at least 2"):
        ViewConfig(n_views=n)


def test_working_side_keeps_smallest_crop_at_full_resolution() -> None:
    cfg = ViewConfig()
    assert working_side(32, cfg) == 72  # ceil(32 / sqrt(0.2))
    assert working_side(224, cfg) == 501
    assert working_side(32, ViewConfig(scale=(1.0, 1.0))) == 32
    for size in (16, 32, 96, 224, 336):
        side = working_side(size, cfg)
        assert side * math.sqrt(cfg.scale[0]) >= size


# --------------------------------------------------------------------------------------------
# The fast colour-jitter path equals the straightforward one bit for bit
# --------------------------------------------------------------------------------------------


def _reference_rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """torchvision's formulation, one fresh tensor per operation."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_div = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_div, (maxc - g) / cr_div, (maxc - b) / cr_div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=1)


def _reference_hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x[:, 0], x[:, 1], x[:, 2]
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * f)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    mask = i.unsqueeze(1) == torch.arange(6).view(1, -1, 1, 1)
    a1 = torch.stack((v, q, p, p, t, v), dim=1)
    a2 = torch.stack((t, v, v, q, p, p), dim=1)
    a3 = torch.stack((p, p, t, v, v, q), dim=1)
    return torch.einsum("...ijk,...xijk->...xjk", mask.to(x.dtype), torch.stack((a1, a2, a3), dim=1))


def _reference_adjust(x: torch.Tensor, op: int, f: torch.Tensor) -> torch.Tensor:
    f4 = f[:, None, None, None]
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    if op == 0:
        return (x * f4).clamp(0, 1)
    if op == 1:
        return (f4 * x + (1 - f4) * gray.mean(dim=(1, 2, 3), keepdim=True).expand_as(x)).clamp(0, 1)
    if op == 2:
        return (f4 * x + (1 - f4) * gray.expand_as(x)).clamp(0, 1)
    hsv = _reference_rgb_to_hsv(x)
    hsv[:, 0] = torch.fmod(hsv[:, 0] + f[:, None, None] + 1.0, 1.0)
    return _reference_hsv_to_rgb(hsv)


def _reference_jitter(v: torch.Tensor, on: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """One masked adjustment per (step, operation), as ColorJitter applies them."""
    v = v.clone()
    sub, fac, ordr = v[on], factors[on], order[on]
    for step in range(4):
        for op in range(4):
            m = ordr[:, step] == op
            if m.any():
                sub[m] = _reference_adjust(sub[m], op, fac[m, op])
    v[on] = sub
    return v


def _colour_test_views(n: int, side: int, seed: int) -> torch.Tensor:
    """Views with every hue sector, gray pixels (max == min), pure black and white, 0/1 channels."""
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(n, 3, side, side, generator=g)
    v[:, :, :2] = v[:, :1, :2]  # gray rows
    v[:, :, 2, :3] = 0.0
    v[:, :, 3, :3] = 1.0
    v[:, 0, 4] = 1.0  # saturated channel
    v[:, 2, 5] = 0.0
    v[: n // 4] = (v[: n // 4] * 255).round() / 255  # 8-bit levels, where ties between channels are common
    return v


def test_hue_shift_equals_the_reference_hsv_round_trip_exactly() -> None:
    from auditmi.views import _hue_shift

    x = _colour_test_views(24, 16, seed=3)
    shift = torch.linspace(-0.5, 0.5, 24)
    assert torch.equal(_hue_shift(x.clone(), shift), _reference_adjust(x, 3, shift))


def test_jitter_equals_the_per_operation_reference_exactly() -> None:
    from auditmi.views import _jitter

    n = 64
    v = _colour_test_views(n, 12, seed=4)
    p = sample_params(torch.full((n,), 12), torch.full((n,), 12), ViewConfig(), 1, torch.Generator().manual_seed(9))
    assert p.jitter_on.any() and not p.jitter_on.all()
    assert torch.equal(_jitter(v.clone(), p.jitter_on, p.factors, p.order), _reference_jitter(v, p.jitter_on, p.factors, p.order))


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"scale": (0.0, 1.0)}, "scale must be"),
        ({"scale": (0.8, 0.2)}, "scale must be"),
        ({"scale": (0.2, 1.5)}, "scale must be"),
        ({"ratio": (4 / 3, 3 / 4)}, "ratio must be"),
        ({"ratio": (0.0, 1.0)}, "ratio must be"),
        ({"flip_p": 1.2}, "flip_p must be a probability"),
        ({"jitter_p": -0.1}, "jitter_p must be a probability"),
        ({"gray_p": float("nan")}, "gray_p must be a probability"),
        ({"jitter": (0.4, 0.4, 0.4, 0.7)}, "hue <= 0.5"),
        ({"jitter": (-0.1, 0.4, 0.4, 0.1)}, "jitter must be"),
        ({"jitter": (0.4, float("inf"), 0.4, 0.1)}, "finite numbers"),
        ({"algorithm": "auditmi-views-v2"}, "cannot be reproduced by this auditmi"),
        ({"n_views": 3.0}, "must be an integer"),
        ({"scale": (0.2,)}, "scale must be"),
        ({"jitter": (0.4, 0.4, 0.4)}, "jitter must be"),
    ],
)
def test_invalid_view_configurations_are_refused_with_the_reason(kwargs, needle) -> None:
    with pytest.raises(InputError, match=needle):
        ViewConfig(**kwargs)


def test_boundary_view_configurations_are_accepted() -> None:
    ViewConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0, jitter_p=1, gray_p=0.0, jitter=(0, 0, 0, 0.5))


_ROI_CHECK = """
import sys, torch
from auditmi._roi_align import roi_align
g = torch.Generator().manual_seed(0)
x = torch.rand(3, 3, 40, 50, generator=g)
xy = torch.rand(12, 2, generator=g) * 30
wh = 1 + torch.rand(12, 2, generator=g) * 18
boxes = torch.cat([torch.randint(0, 3, (12, 1), generator=g).float(), xy, xy + wh], dim=1)
ours = [roi_align(x, boxes, 7, sampling_ratio=r, aligned=a) for r, a in ((-1, True), (2, False))]
assert "torchvision" not in sys.modules, "the kernel was loaded by importing torchvision"
from torchvision.ops import roi_align as tv
theirs = [tv(x, boxes, output_size=(7, 7), sampling_ratio=r, aligned=a) for r, a in ((-1, True), (2, False))]
assert all(torch.equal(o, t) for o, t in zip(ours, theirs))
"""


def test_roi_align_kernel_is_torchvisions_without_importing_torchvision() -> None:
    """auditmi._roi_align loads torchvision's compiled kernel directly (no torchvision import): same numbers."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", _ROI_CHECK], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr
