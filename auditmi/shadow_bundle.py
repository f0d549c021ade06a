"""Shadow (reference) encoders carried inside a calibration bundle.

Layout inside the bundle folder::

    shadows/shadows.json        index: each shadow's weights sha256, architecture, input size,
                                the sha256 of every image it trained on, and the EncoderMI-R
                                score specification chosen on the shadows
    shadows/shadow-<k>/         each shadow in auditmi's encoder checkpoint format
                                (encoder.json + model.safetensors; JSON and safetensors only,
                                never pickle)

Loading checks every shadow's weights against the sha256 recorded in the index AND in its own
encoder.json, so a swapped or corrupted file is refused. Bundles written before shadows existed
have no ``shadows/`` folder: :func:`load_shadows` then returns ``None`` and
:data:`NO_SHADOWS_REASON` says why such a bundle cannot calibrate per image.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditmi._io import atomic_write_text
from auditmi.difficulty import ScoreSpec
from auditmi.encoders.base import sha256_file
from auditmi.encoders.local import CONFIG_NAME, WEIGHTS_NAME, read_config
from auditmi.errors import CalibrationError

FORMAT = "auditmi-shadows"
SCHEMA_VERSION = 1
DIRNAME = "shadows"
INDEX = "shadows.json"

NO_SHADOWS_REASON = (
    "this calibration bundle carries no shadow encoders (it predates them or was built without "
    "--shadow-data), so scores cannot be calibrated per image against reference models; rebuild it with "
    "`auditmi calibrate --shadow-data DIR --shadows K` for EncoderMI-R."
)


@dataclass
class ShadowEntry:
    """One shadow encoder of a bundle."""

    name: str
    path: Path
    weights_sha256: str
    architecture: dict[str, Any]
    input_size: int
    training_sha256: list[str]


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


def save_shadows(bundle: str | Path, checkpoints: Sequence[str | Path], training_sha256: Sequence[Sequence[str]],
                 spec: ScoreSpec, public_sha256: Sequence[str] = (), info: dict[str, Any] | None = None) -> Path:
    """Copy shadow checkpoints into ``bundle/shadows`` and write the index (last, atomically)."""
    if len(checkpoints) != len(training_sha256):
        raise ValueError("one training-image list per shadow checkpoint is needed")
    root = Path(bundle) / DIRNAME
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for k, ck in enumerate(checkpoints):
        cfg = read_config(ck)
        dst = root / f"shadow-{k}"
        dst.mkdir(exist_ok=True)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            shutil.copyfile(Path(ck) / name, dst / name)
        entries.append({"name": f"shadow-{k}", "dir": f"shadow-{k}", "weights_sha256": sha256_file(dst / WEIGHTS_NAME),
                        "architecture": cfg["architecture"], "input_size": int(cfg["input_size"]),
                        "training_sha256": sorted(set(training_sha256[k]))})
    index = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "shadows": entries, "score": spec.to_dict(),
             "public_sha256": sorted(set(public_sha256)), "info": info or {}}
    atomic_write_text(root / INDEX, json.dumps(index, indent=1))
    return root


def has_shadows(bundle: str | Path) -> bool:
    """True if the bundle carries shadow encoders."""
    return (Path(bundle) / DIRNAME / INDEX).is_file()


def load_shadows(bundle: str | Path) -> ShadowSet | None:
    """The bundle's shadows (weights verified), or None for a bundle without shadows."""
    root = Path(bundle) / DIRNAME
    if not (root / INDEX).is_file():
        return None
    try:
        idx = json.loads((root / INDEX).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CalibrationError(f"cannot read {root / INDEX}: {e}; rebuild the bundle with auditmi calibrate.") from e
    if idx.get("format") != FORMAT or idx.get("schema_version") != SCHEMA_VERSION:
        raise CalibrationError(f"{root / INDEX} is not a shadow index this auditmi reads (format {idx.get('format')!r}, "
                               f"schema {idx.get('schema_version')!r}); rebuild the bundle with this auditmi.")
    out = []
    for e in idx["shadows"]:
        d = (root / e["dir"]).resolve()
        if root.resolve() not in d.parents:
            raise CalibrationError(f"{root / INDEX} names a shadow outside the bundle ({e['dir']!r}); refusing to load it.")
        w = d / WEIGHTS_NAME
        if not w.is_file():
            raise CalibrationError(f"shadow weights {w} are missing; re-copy the whole calibration folder.")
        got = sha256_file(w)
        if got != e["weights_sha256"] or read_config(d).get("weights_sha256") != got:
            raise CalibrationError(f"shadow weights {w} do not match the sha256 pinned in {INDEX} (changed or corrupt); "
                                   "re-copy the whole calibration folder.")
        out.append(ShadowEntry(e["name"], d, got, e["architecture"], int(e["input_size"]), list(e["training_sha256"])))
    try:
        spec = ScoreSpec.from_dict(idx["score"])
    except (KeyError, ValueError) as e:
        raise CalibrationError(f"{root / INDEX} has an invalid score specification ({e}); rebuild the bundle.") from e
    return ShadowSet(out, spec, list(idx.get("public_sha256", [])), dict(idx.get("info", {})))
