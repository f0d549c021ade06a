"""Wall time and views/s of the local and the Ray engine on the same images, on this machine.

Both engines compute the membership features of the same N real Fashion-MNIST test images
(PNG files, written by scan_throughput.fmnist_folder from the IDX files that
benchmarks/fmnist_setup.py reads) with the same encoder, views, seed and batch size, without a
feature cache. Runs are interleaved (local, ray, local, ray, ...) because this machine's speed
drifts, and compared by their medians. For the Ray engine it reports:

  * cold: the first run in a fresh process, including starting a local Ray (what a one-off
    `auditmi scan --engine ray` on a laptop pays);
  * warm: later runs with Ray already up (what a run against a running cluster, RAY_ADDRESS,
    pays): each run still starts its embedding actors and loads the encoder in them.

Target (issue 13): Ray's time on one machine <= 1.5x the local engine's. The features of both
engines are compared too (max absolute difference). ``--what signals`` times EncoderMI-R's raw
signal pass instead (10 views plus the whole image per image, see auditmi/measures.py), ``--what
both`` the audited encoder's pass of a scan with EncoderMI-R. The Ray figures include where the
time goes: ``ray_cold_start_s`` (starting Ray) and ``*_first_batch_s`` (from the start of the
run to the first embedded block: Ray Data's planning, the first decode tasks, the actors'
start-up).

Usage:
  python benchmarks/scale.py [--images 2000] [--repeats 3] [--encoder SPEC] [--device cpu|cuda|auto]
                             [--engines local,ray] [--actors N] [--batch-size B] [--what features|signals|both]
                             [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scan_throughput import fmnist_folder, photo_folder  # noqa: E402

from auditmi.encoders import load_encoder  # noqa: E402
from auditmi.engines import compute_features  # noqa: E402
from auditmi.views import ViewConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ENCODER = str(ROOT / "examples" / "fashion" / "encoder")


def machine() -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "gpu": gpu, "torch": torch.__version__,
            "load_average_1_5_15": list(os.getloadavg())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--encoder", default=DEFAULT_ENCODER)
    ap.add_argument("--device", default="cpu", help="device of the local engine and of the Ray actors (auto, cpu, cuda)")
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--actors", type=int, default=None, help="Ray embedding actors (default: one per GPU, else per CPU)")
    ap.add_argument("--workers", type=int, default=None, help="local engine worker processes (default: chosen for the device)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--what", default="features", choices=["features", "signals", "both"], help="what the engines compute per image")
    ap.add_argument("--json", default=None, help="write the results to FILE")
    a = ap.parse_args()
    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    enc = load_encoder(a.encoder, a.device)
    cfg = ViewConfig()
    out: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine_start": machine(), "encoder": a.encoder,
                 "device": str(enc.device), "views_per_image": cfg.n_views, "engines": engines, "what": a.what}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        paths = photo_folder(a.images, folder) if enc.input_size > 64 else fmnist_folder(a.images, folder)
        out["images"] = len(paths)
        views = len(paths) * (cfg.n_views + (a.what != "features"))
        feats: dict[str, np.ndarray] = {}
        times: dict[str, list[float]] = {e: [] for e in engines}
        timing: dict[str, dict] = {}
        if "local" in engines:  # warm-up: imports, first-touch allocations
            compute_features(paths[:50], enc, cfg, batch_size=a.batch_size, num_workers=0, what=a.what)
        if "ray" in engines:
            logging.getLogger("ray").setLevel(logging.ERROR)
            t0 = time.perf_counter()
            fs = compute_features(paths, enc, cfg, batch_size=a.batch_size, num_workers=a.actors, engine="ray", device=a.device,
                                  what=a.what)
            out["ray_cold_s"] = time.perf_counter() - t0
            # Where the cold run's seconds go: starting Ray, then (Ray Data's planning, the first
            # decode tasks, the actors' start-up: torch import and encoder load) until the first
            # embedded block reaches the driver; the rest is the streaming run itself.
            out["ray_cold_start_s"] = fs.timing.get("ray_start_seconds")
            out["ray_cold_first_batch_s"] = fs.timing.get("first_batch_seconds")
            feats["ray"] = fs.features
            print(f"ray (cold, starting Ray): {out['ray_cold_s']:.1f} s ({views / out['ray_cold_s']:.0f} views/s)", flush=True)
        for r in range(a.repeats):
            for e in engines:
                t0 = time.perf_counter()
                fs = compute_features(paths, enc, cfg, batch_size=a.batch_size, num_workers=a.actors if e == "ray" else a.workers,
                                      engine=e, device=a.device, what=a.what)
                if enc.device.type == "cuda":
                    torch.cuda.synchronize()
                times[e].append(time.perf_counter() - t0)
                feats[e], timing[e] = fs.features, fs.timing
                if e == "ray":
                    out.setdefault("ray_warm_first_batch_s", []).append(fs.timing.get("first_batch_seconds"))
                print(f"{e} run {r + 1}: {times[e][-1]:.1f} s ({views / times[e][-1]:.0f} views/s)", flush=True)
    for e in engines:
        med = float(np.median(times[e]))
        out[e] = {"seconds_each": times[e], "seconds_median": med, "views_per_s": views / med,
                  "workers": timing[e].get("workers"), "batch_size": timing[e].get("batch_size"), "gpu_actors": timing[e].get("gpu_actors")}
    if "local" in engines and "ray" in engines:
        out["ratio_ray_warm_to_local"] = out["ray"]["seconds_median"] / out["local"]["seconds_median"]
        out["ratio_ray_cold_to_local"] = out["ray_cold_s"] / out["local"]["seconds_median"]
        out["max_abs_feature_difference"] = float(np.abs(feats["ray"] - feats["local"]).max())
    out["machine_end"] = machine()
    text = json.dumps(out, indent=1)
    if a.json:
        Path(a.json).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
