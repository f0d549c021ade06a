"""``calibrate``: shadow encoder -> membership features -> fitted classifiers -> bundle."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from auditmi import validate as V
from auditmi.calibration import Calibration, fit_calibration, save_calibration
from auditmi.discovery import Skipped
from auditmi.encoders import load_encoder, resolve_device
from auditmi.encoders.local import load_local
from auditmi.errors import InputError
from auditmi.images import ImageLoadError, read_and_hash
from auditmi.jobs.common import Progress, discover_set, environment, features
from auditmi.jobs.sets import distinct, refuse_overlap
from auditmi.shadow import TrainConfig, load_training_images, train_encoder
from auditmi.shadow_set import build_shadow_set, load_public
from auditmi.views import ViewConfig


@dataclass
class CalibrateOptions:
    """Options of ``auditmi calibrate``."""

    out: str | Path
    shadow_data: list[str | Path] = field(default_factory=list)
    arch: str = "resnet18-w16"
    epochs: int = 100
    batch_size: int = 256
    image_size: int = 32
    member_fraction: float = 0.5
    views: int = 10
    seed: int = 0
    device: str = "auto"
    shadow_encoder: str | None = None
    members: list[str | Path] = field(default_factory=list)
    non_members: list[str | Path] = field(default_factory=list)
    attacks: tuple[str, ...] = ("T", "V", "S")
    attack_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    heldout_fraction: float = 0.4
    lr: float = 0.06
    optimizer: str = "sgd"
    temperature: float = 0.5
    feature_batch_size: int | None = None
    workers: int | None = None
    shadows: int = 4  # shadow reference encoders for EncoderMI-R (with --shadow-data; 0: none)
    engine: str = "local"  # where the feature stage runs: local or ray (auditmi.engines)


@dataclass(frozen=True)
class CalibrateResult:
    """A written calibration bundle: where it is, and the fitted classifiers with their evidence."""

    bundle: Path
    calibration: Calibration

    @property
    def n_fit(self) -> int:
        """Shadow images the classifiers were fitted on."""
        return int(self.calibration.meta["n_fit"])

    @property
    def n_duplicates(self) -> int:
        """Copies of a shadow image (same sha256) dropped so that each image counts once."""
        return int(sum((self.calibration.meta.get("duplicates_dropped") or {}).values()))

    @property
    def n_heldout(self) -> int:
        """Held-out shadow images the metrics were measured on."""
        return int(self.calibration.meta["n_heldout"])

    def __iter__(self):  # type: ignore[no-untyped-def]
        """Unpacks as ``(bundle, calibration)``, as ``run_calibrate`` returned before it was typed."""
        return iter((self.bundle, self.calibration))


def _split_by_hash(paths: list[Path], fraction: float, seed: int, unreadable: list[Skipped] | None = None,
                   duplicates: list[Path] | None = None) -> tuple[list[Path], list[Path], list[str], list[str]]:
    """Seeded member/non-member split that depends only on file contents (not names or order);
    files that cannot be read (or are not images) go to ``unreadable`` with the reason, copies of
    an image already seen (same sha256) to ``duplicates``: each image counts once."""
    if not 0 < fraction < 1:
        raise InputError(f"--member-fraction must be between 0 and 1 (got {fraction}).")
    hashed = []
    seen: set[str] = set()
    for p in paths:
        try:
            _, h = read_and_hash(p)
        except ImageLoadError as e:
            if unreadable is not None:
                unreadable.append(Skipped(p, e.reason))
            continue
        if h not in seen:  # a duplicate must not land on both sides
            seen.add(h)
            hashed.append((h, p))
        elif duplicates is not None:
            duplicates.append(p)
    hashed.sort()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(hashed))
    k = int(round(len(hashed) * fraction))
    mem = sorted(order[:k].tolist())
    non = sorted(order[k:].tolist())
    return ([hashed[i][1] for i in mem], [hashed[i][1] for i in non], [hashed[i][0] for i in mem], [hashed[i][0] for i in non])


def run_calibrate(opts: CalibrateOptions, progress: Progress | None = None, command: str = "") -> CalibrateResult:
    """Build a calibration bundle (pre-training a shadow encoder unless one is given)."""
    cfg = ViewConfig(n_views=opts.views)
    out = Path(opts.out)
    shadow_meta: dict[str, Any]
    extra_meta: dict[str, Any] = {}
    extra_files: dict[str, Any] = {}
    V.int_in("--shadows", opts.shadows, 0, 64, error=InputError)
    unreadable: list[Skipped] = []  # folders not searched, files refused before the split (not images, empty, too large)
    dropped: dict[str, int] = {}  # copies of an image (same sha256) left out, by set: each image counts once
    if opts.shadow_encoder:
        if not opts.members or not opts.non_members:
            raise InputError("--shadow-encoder needs --members DIR and --non-members DIR (images you know it was / was not trained on).")
        md, nd = discover_set(opts.members, "member"), discover_set(opts.non_members, "non-member")
        mem_paths, non_paths = md.images, nd.images
        unreadable += md.unreadable + nd.unreadable
        refuse_overlap(mem_paths, non_paths, "member", "non-member")  # before any work
        enc = load_encoder(opts.shadow_encoder, opts.device)
        shadow_meta = {"trained_by_auditmi": False, "encoder": enc.describe()}
    else:
        if not opts.shadow_data:
            raise InputError("give --shadow-data DIR (public images to pre-train a shadow encoder on) or --shadow-encoder SPEC with --members/--non-members.")
        sd = discover_set(opts.shadow_data, "shadow-data")
        allp, unreadable = sd.images, list(sd.unreadable)
        copies: list[Path] = []
        mem_paths, non_paths, mem_h, non_h = _split_by_hash(allp, opts.member_fraction, opts.seed, unreadable, copies)
        dropped["shadow_data"] = len(copies)
        if len(mem_paths) < 8 or len(non_paths) < 8:
            raise InputError(f"calibration needs at least 16 distinct shadow images (found {len(mem_paths) + len(non_paths)}).")
        tensors, shas, skipped = load_training_images(mem_paths, opts.image_size, cfg)
        if len(tensors) < 8:
            raise InputError(f"only {len(tensors)} shadow member images could be read; need at least 8.")
        tcfg = TrainConfig(arch=opts.arch, image_size=opts.image_size, epochs=opts.epochs, batch_size=opts.batch_size, seed=opts.seed,
                           optimizer=opts.optimizer, lr=opts.lr, temperature=opts.temperature, checkpoint_every=max(1, min(10, opts.epochs)))
        data_digest = hashlib.sha256("".join(sorted(shas)).encode()).hexdigest()[:16]
        run_dir = out / "shadow-encoder" / f"{tcfg.digest()}-{data_digest}"
        dev = resolve_device(opts.device)
        cb = (lambda s, t, d: progress("train", s, t)) if progress else None
        final = train_encoder(tensors, run_dir, tcfg, device=dev, view_cfg=cfg, progress=cb,
                              extra_meta={"member_sha256": sorted(shas)})
        enc = load_local(final, dev, spec=str(final))
        shadow_meta = {"trained_by_auditmi": True, "encoder": enc.describe(), "training": tcfg.to_dict(), "checkpoint": str(final),
                       "member_sha256": mem_h, "non_member_sha256": non_h,
                       "skipped_members": [{"path": str(s.path), "reason": s.reason} for s in skipped]}
        if opts.shadows > 0:
            # Shadow 0 is the encoder just trained (its half is the split above); the others train on
            # further seeded halves of the same public images (auditmi.shadow_set).
            public, _ = load_public(mem_paths + non_paths, opts.image_size, cfg)
            sm, extra_files = build_shadow_set(public, opts.shadows, tcfg, cfg, opts.seed, out / "shadows", dev,
                                               progress, first=(final, shas))
            extra_meta["shadows"] = sm
    mf = features(mem_paths, enc, cfg, opts.seed, opts.feature_batch_size, None, opts.workers, progress, "members", opts.engine, opts.device)
    nf = features(non_paths, enc, cfg, opts.seed, opts.feature_batch_size, None, opts.workers, progress, "non-members",
                  opts.engine, opts.device)
    refuse_overlap(mf, nf, "member", "non-member")  # the same image under two names
    # Copies of an image count once, as in scan: twice would weigh it double in the fit and the held-out rates.
    dm, dn = distinct(mf), distinct(nf)
    if mf.n - dm.n or nf.n - dn.n:
        dropped.update(members=mf.n - dm.n, non_members=nf.n - dn.n)
    mf, nf = dm, dn
    if shadow_meta.get("trained_by_auditmi"):
        # Record only images that were actually used: the split hashes raw bytes, so an unreadable
        # file (listed under "skipped") would otherwise appear as a shadow member or non-member.
        shadow_meta["member_sha256"] = sorted({r.sha256 for r in mf.rows})
        shadow_meta["non_member_sha256"] = sorted({r.sha256 for r in nf.rows})
    cal = fit_calibration(mf.features, nf.features, cfg, kinds=opts.attacks, seed=opts.seed, heldout_fraction=opts.heldout_fraction,
                          attack_options=opts.attack_options,
                          meta={"shadow": shadow_meta, **extra_meta, "command": command, "environment": environment(),
                                "duplicates_dropped": dropped,
                                "skipped": [{"path": str(s.path), "reason": s.reason} for s in unreadable + mf.skipped + nf.skipped]})
    save_calibration(cal, out, extra_files=extra_files)
    return CalibrateResult(out, cal)
