"""Train K shadow (reference) encoders on seeded halves of public images and pick EncoderMI-R's score.

Each shadow pre-trains on a seeded random half of the public images (LiRA style), so every public
image is a member of some shadows and a non-member of the others. Halves depend only on the
images' contents and the seed, never on file names or order. Shadow 0's half is the split the
reference-free classifiers (EncoderMI-T/V/S) are calibrated on, so a K-shadow bundle extends a
one-shadow bundle instead of replacing it.

After training, the public images' signals under every shadow feed the shadow game
(:mod:`auditmi.shadow_game`), which chooses the regression and combination; with a single shadow
there is no game and the documented default is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from auditmi.difficulty import ScoreSpec
from auditmi.encoders.local import load_local
from auditmi.errors import InputError
from auditmi.images import LoadedImage, load_many
from auditmi.shadow import TrainConfig, train_encoder
from auditmi.shadow_bundle import ShadowSet, load_shadows, save_shadows
from auditmi.shadow_game import choose_spec
from auditmi.signal_features import signals_of_pixels
from auditmi.signals import SUMMARY_NAMES, summaries
from auditmi.views import ViewConfig, working_side

ProgressFn = Callable[[str, int, int], None]

#: Used when there are too few shadows or public images to choose on them: the view-to-whole and pairwise
#: alignments (the two signals with the largest effects in benchmarks/RESULTS.md), regressed on
#: every shadow signal, equally weighted.
DEFAULT_SPEC = ScoreSpec(regression="ols_all", weights=[0.5 if s in ("pair_mean", "whole_mean") else 0.0 for s in SUMMARY_NAMES],
                         chosen_by={"method": "default (one shadow: no shadow game)"})


@dataclass
class PublicImages:
    """Distinct readable public images (sorted by sha256)."""

    images: list[LoadedImage]

    @property
    def sha256(self) -> list[str]:
        return [li.sha256 for li in self.images]


def load_public(paths: Sequence[Path], image_size: int, view_cfg: ViewConfig) -> tuple[PublicImages, list]:
    """Read the public images at the working side; duplicates (same content) are kept once."""
    loaded, skipped = load_many(list(paths), max_side=working_side(image_size, view_cfg))
    uniq: dict[str, LoadedImage] = {}
    for li in loaded:
        uniq.setdefault(li.sha256, li)
    return PublicImages([uniq[h] for h in sorted(uniq)]), skipped


def halves(n: int, k: int, seed: int, fraction: float = 0.5) -> np.ndarray:
    """(k, n) membership of images sorted by sha256: shadow 0 uses ``default_rng(seed)`` (the
    reference-free calibration's split), shadow i > 0 ``default_rng([seed, i])``."""
    m = round(n * fraction)
    inc = np.zeros((k, n), bool)
    for i in range(k):
        rng = np.random.default_rng(seed if i == 0 else [seed, i])
        inc[i, rng.permutation(n)[:m]] = True
    return inc


def _tensor(li: LoadedImage) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(li.pixels)).permute(2, 0, 1).contiguous()


def train_shadow_set(public: PublicImages, k: int, cfg: TrainConfig, view_cfg: ViewConfig, seed: int, run_root: Path,
                     device: torch.device | str = "cpu", progress: ProgressFn | None = None,
                     fraction: float = 0.5) -> tuple[list[Path], np.ndarray]:
    """Train (or resume) the K shadows; returns their final checkpoints and the (K, P) membership."""
    if k < 1:
        raise InputError(f"--shadows must be at least 1 (got {k}).")
    n = len(public.images)
    if n < 16:
        raise InputError(f"training shadow encoders needs at least 16 distinct public images (found {n}).")
    inc = halves(n, k, seed, fraction)
    finals = []
    for i in range(k):
        imgs = [_tensor(public.images[j]) for j in np.flatnonzero(inc[i])]
        cb = (lambda s, t, d, i=i: progress(f"train shadow {i + 1}/{k}", s, t)) if progress else None
        finals.append(train_encoder(imgs, run_root / f"shadow-{i}", replace(cfg, seed=cfg.seed + i), device=device, view_cfg=view_cfg,
                                    progress=cb, extra_meta={"member_sha256": sorted(public.sha256[j] for j in np.flatnonzero(inc[i]))}))
    return finals, inc


def public_signals(public: PublicImages, checkpoints: Sequence[Path], view_cfg: ViewConfig, seed: int,
                   device: torch.device | str = "cpu", batch: int = 64) -> np.ndarray:
    """(P, K, d) summary signals of the public images under each shadow (same views for all)."""
    out = []
    for ck in checkpoints:
        enc = load_local(ck, torch.device(device))
        raw = [signals_of_pixels(enc, [_tensor(li) for li in public.images[s:s + batch]], public.sha256[s:s + batch], view_cfg, seed)
               for s in range(0, len(public.images), batch)]
        out.append(summaries(np.concatenate(raw), view_cfg.n_views))
    return np.stack(out, axis=1)


def build_shadow_set(public: PublicImages, bundle: Path, k: int, cfg: TrainConfig, view_cfg: ViewConfig, seed: int,
                     run_root: Path, device: torch.device | str = "cpu", progress: ProgressFn | None = None) -> ShadowSet:
    """Train the shadows, choose the score on them, and write them into ``bundle`` (see :mod:`auditmi.shadow_bundle`)."""
    finals, inc = train_shadow_set(public, k, cfg, view_cfg, seed, run_root, device, progress)
    spec = DEFAULT_SPEC
    if k >= 2:
        try:
            spec = choose_spec(public_signals(public, finals, view_cfg, seed, device), inc, seed=seed)
        except ValueError as e:  # too few public images for the game: keep the default, say why
            spec = replace(DEFAULT_SPEC, chosen_by={"method": f"default ({e})"})
    training = [[public.sha256[j] for j in np.flatnonzero(row)] for row in inc]
    save_shadows(bundle, finals, training, spec, public.sha256,
                 info={"training": cfg.to_dict(), "seed": seed, "halves": "seeded halves of the public images sorted by sha256"})
    ss = load_shadows(bundle)
    assert ss is not None
    return ss
