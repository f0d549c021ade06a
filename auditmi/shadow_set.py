"""Shadow (reference) encoders for EncoderMI-R: training K of them on seeded halves of public
images, choosing the score on them, and carrying them in the calibration bundle.

Each shadow pre-trains on a seeded random half of the public images (LiRA style), so every public
image is a member of some shadows and a non-member of the others. Halves depend only on the
images' contents and the seed, never on file names or order. Shadow 0's half is the split the
reference-free classifiers (EncoderMI-T/V/S) are calibrated on, so a K-shadow bundle extends a
one-shadow bundle instead of replacing it.

After training, the public images' signals under every shadow feed the shadow game
(:mod:`auditmi.shadow_game`), which chooses the regression and combination; with a single shadow
there is no game and the documented default is used.

In the bundle, shadow k's weights are the data file ``shadow-k.safetensors`` (safetensors, never
pickle) and its description (architecture, input size, normalisation, the sha256 of every image it
trained on) sits under ``shadows`` in ``calibration.json``, together with the chosen score. Both
are covered by the calibration bundle's whole-bundle pin (:mod:`auditmi.bundle`). A bundle without
``shadows`` (built before EncoderMI-R) still scans with T/V/S; :data:`NO_SHADOWS_REASON` says why
it cannot calibrate per image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auditmi.bundle import load_arrays, safe_member, sha256_file
from auditmi.difficulty import ScoreSpec
from auditmi.encoders.base import Encoder, prepare_module
from auditmi.encoders.local import WEIGHTS_NAME, load_local, read_config
from auditmi.errors import CalibrationError, InputError
from auditmi.images import LoadedImage, load_many
from auditmi.measures import embed_whole, measure_pixels, pixels_chw
from auditmi.models import build_backbone
from auditmi.shadow import TrainConfig, train_encoder
from auditmi.shadow_game import choose_spec
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
    return pixels_chw(li.pixels)


def train_shadow_set(public: PublicImages, k: int, cfg: TrainConfig, view_cfg: ViewConfig, seed: int, run_root: Path,
                     device: torch.device | str = "cpu", progress: ProgressFn | None = None,
                     fraction: float = 0.5, first: tuple[Path, Sequence[str]] | None = None) -> tuple[list[Path], np.ndarray]:
    """Train (or resume) the K shadows; returns their final checkpoints and the (K, P) membership.

    ``first``: an already trained shadow 0 (checkpoint, sha256 of its training images), e.g. the
    shadow the reference-free classifiers were calibrated on; it is reused, not retrained.
    """
    if k < 1:
        raise InputError(f"--shadows must be at least 1 (got {k}).")
    n = len(public.images)
    if n < 16:
        raise InputError(f"training shadow encoders needs at least 16 distinct public images (found {n}).")
    inc = halves(n, k, seed, fraction)
    finals: list[Path] = []
    if first is not None:
        mem = set(first[1])
        inc[0] = [h in mem for h in public.sha256]
        finals.append(Path(first[0]))
    for i in range(len(finals), k):
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
        raw = [measure_pixels(enc, [_tensor(li) for li in public.images[s:s + batch]], public.sha256[s:s + batch], view_cfg, seed)
               for s in range(0, len(public.images), batch)]
        out.append(summaries(np.concatenate(raw), view_cfg.n_views))
    return np.stack(out, axis=1)


def public_embeddings(public: PublicImages, checkpoints: Sequence[Path], device: torch.device | str = "cpu") -> np.ndarray:
    """(P, K, D) unit-norm whole-image embeddings of the public images under each shadow (the
    shadow game's neighbourhood signal, :mod:`auditmi.neighbours`)."""
    pix = [_tensor(li) for li in public.images]
    return np.stack([embed_whole(load_local(ck, torch.device(device)), pix) for ck in checkpoints], axis=1)


NO_SHADOWS_REASON = (
    "this calibration bundle carries no shadow encoders (it predates them, or was calibrated with --shadow-encoder), so "
    "scores cannot be calibrated per image against reference models; rebuild it with "
    "`auditmi calibrate --shadow-data DIR --shadows K` for EncoderMI-R."
)


@dataclass
class ShadowEntry:
    """One shadow encoder of a bundle."""

    name: str
    weights: Path
    weights_sha256: str
    architecture: dict[str, Any]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    training_sha256: list[str]

    def describe(self) -> dict[str, Any]:
        """JSON-able description for reports (without the training-image list)."""
        return {"name": self.name, "weights_sha256": self.weights_sha256, "architecture": self.architecture,
                "input_size": self.input_size, "n_training_images": len(self.training_sha256)}


@dataclass
class ShadowSet:
    """The bundle's shadows and the score chosen on them."""

    shadows: list[ShadowEntry]
    spec: ScoreSpec
    public_sha256: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return len(self.shadows)

    def overlap(self, sha256s: Sequence[str]) -> dict[str, list[int]]:
        """Images (by sha256) that some shadow trained on -> indices of those shadows."""
        want = set(sha256s)
        out: dict[str, list[int]] = {}
        for i, s in enumerate(self.shadows):
            for h in want.intersection(s.training_sha256):
                out.setdefault(h, []).append(i)
        return out


def bundle_parts(checkpoints: Sequence[Path], training_sha256: Sequence[Sequence[str]], spec: ScoreSpec,
                 public_sha256: Sequence[str] = (), info: dict[str, Any] | None = None
                 ) -> tuple[dict[str, Any], dict[str, Callable[[str], None]]]:
    """The ``shadows`` metadata and the data files (name -> writer) to add to a calibration bundle."""
    if len(checkpoints) != len(training_sha256):
        raise ValueError("one training-image list per shadow checkpoint is needed")
    entries: list[dict[str, Any]] = []
    files: dict[str, Callable[[str], None]] = {}
    for k, ck in enumerate(checkpoints):
        cfg = read_config(ck)  # verifies the checkpoint's own pin
        name = f"shadow-{k}.safetensors"
        src = Path(ck) / cfg.get("weights", WEIGHTS_NAME)
        data = src.read_bytes()

        def write(tmp: str, data: bytes = data) -> None:
            Path(tmp).write_bytes(data)

        files[name] = write
        entries.append({"name": f"shadow-{k}", "weights": name, "weights_sha256": cfg["_weights_sha256"],
                        "architecture": cfg["architecture"], "input_size": int(cfg["input_size"]), "mean": list(cfg["mean"]),
                        "std": list(cfg["std"]), "embedding_dim": cfg.get("embedding_dim"),
                        "training": (cfg.get("training") or {}).get("config"), "training_sha256": sorted(set(training_sha256[k]))})
    meta = {"encoders": entries, "score": spec.to_dict(), "public_sha256": sorted(set(public_sha256)), "info": info or {}}
    return meta, files


def load_shadows(meta: dict[str, Any], root: Path | None) -> ShadowSet | None:
    """The shadows of a loaded calibration bundle (``cal.meta``, ``cal.path``), or None if it has none.

    The bundle's pin was verified when it was loaded; each weights file is checked again here
    against its recorded sha256, so a file swapped after loading is refused too.
    """
    sh = meta.get("shadows")
    if not sh:
        return None
    fix = "Re-copy the calibration bundle from its source, or re-run `auditmi calibrate`."
    if root is None:
        raise CalibrationError(f"the calibration's shadows have no folder to load weights from. {fix}")
    try:
        out = []
        for e in sh["encoders"]:
            w = safe_member(root, e["weights"], CalibrationError, fix)
            if not w.is_file() or sha256_file(w) != e["weights_sha256"]:
                raise CalibrationError(f"shadow weights {w} are missing or do not match their recorded sha256. {fix}")
            out.append(ShadowEntry(str(e["name"]), w, str(e["weights_sha256"]), dict(e["architecture"]), int(e["input_size"]),
                                   tuple(e["mean"]), tuple(e["std"]), [str(h) for h in e["training_sha256"]]))  # type: ignore[arg-type]
        spec = ScoreSpec.from_dict(sh["score"])
    except CalibrationError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise CalibrationError(f"the calibration's shadows are malformed ({type(e).__name__}: {e}). {fix}") from e
    return ShadowSet(out, spec, list(sh.get("public_sha256", [])), dict(sh.get("info", {})))


@dataclass(frozen=True)
class ShadowRecipe:
    """How a Ray actor loads a bundle's shadow (:attr:`Encoder.recipe`): the entry's weights file,
    checked against the sha256 the pinned ``calibration.json`` records, as :func:`load_shadows`
    does. Only this description travels to the actor; the weights never leave the bundle."""

    entry: ShadowEntry

    def load(self, device: str) -> Encoder:
        """The shadow on ``device``, refused when its weights file differs from the recorded sha256."""
        w = self.entry.weights
        if not w.is_file() or sha256_file(w) != self.entry.weights_sha256:
            raise CalibrationError(f"shadow weights {w} are missing on this node or do not match their recorded sha256: "
                                   "every node must see the same calibration bundle at the same path.")
        return shadow_encoder(self.entry, torch.device(device))


def shadow_encoder(entry: ShadowEntry, device: torch.device) -> Encoder:
    """A bundle shadow as a black-box :class:`Encoder` (same identity as its checkpoint folder)."""
    model = build_backbone(entry.architecture)
    model.load_state_dict(load_arrays(entry.weights, CalibrationError, "Re-copy the calibration bundle.", framework="torch"), strict=True)
    prepare_module(model, device)
    return Encoder(spec=f"shadow:{entry.name}", backend="local", forward=model, input_size=entry.input_size, mean=entry.mean,
                   std=entry.std, device=device, identity=f"local:sha256:{entry.weights_sha256}", source=str(entry.weights),
                   module=model, info={"architecture": entry.architecture, "weights_sha256": entry.weights_sha256},
                   recipe=ShadowRecipe(entry))


def build_shadow_set(public: PublicImages, k: int, cfg: TrainConfig, view_cfg: ViewConfig, seed: int, run_root: Path,
                     device: torch.device | str = "cpu", progress: ProgressFn | None = None,
                     first: tuple[Path, Sequence[str]] | None = None) -> tuple[dict[str, Any], dict[str, Callable[[str], None]]]:
    """Train the shadows and choose the score on them; returns the bundle parts (see :func:`bundle_parts`)."""
    finals, inc = train_shadow_set(public, k, cfg, view_cfg, seed, run_root, device, progress, first=first)
    spec = DEFAULT_SPEC
    if k >= 2:
        try:
            spec = choose_spec(public_signals(public, finals, view_cfg, seed, device), inc, seed=seed,
                               embeddings=public_embeddings(public, finals, device))
        except ValueError as e:  # too few public images for the game: keep the default, say why
            spec = replace(DEFAULT_SPEC, chosen_by={"method": f"default ({e})"})
    training = [[public.sha256[j] for j in np.flatnonzero(row)] for row in inc]
    return bundle_parts(finals, training, spec, public.sha256,
                        info={"training": cfg.to_dict(), "seed": seed, "halves": "seeded halves of the public images sorted by sha256"})
