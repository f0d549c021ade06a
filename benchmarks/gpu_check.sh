#!/usr/bin/env bash
# GPU check of issue 13, one script, at most 8 minutes: run it when a GPU machine is lent.
#
#   benchmarks/gpu_check.sh OUTDIR          # on a CUDA machine
#   benchmarks/gpu_check.sh OUTDIR --cpu    # CPU fallback with few images: checks the script itself
#
# Writes into OUTDIR:
#   environment.json      versions, GPU, which packages were missing
#   scan_throughput.json  benchmarks/scan_throughput.py: ViT-B-32 (open_clip, random init), bf16
#                         autocast (the default on GPUs with bf16), --device cuda: scan vs the
#                         encoder's ceiling vs a naive DataLoader pipeline, and the cached re-scan
#   ray_gpu.json          benchmarks/scale.py: the same images through the local engine and the
#                         Ray engine with ONE GPU embedding actor (views/s, Ray's cold start)
#   *.log                 stderr of each step
# A step that cannot run (missing package, time limit) is recorded in status.json, never fatal.
# Needs: torch with CUDA, open_clip_torch, scikit-image (photos), ray[data] and pyarrow (Ray step),
# and this repository on PYTHONPATH (set below). Wheels in $AUDITMI_WHEELS (a folder) are
# installed into /tmp/site first, for machines where packages cannot be fetched.
set -u
OUT=${1:?usage: benchmarks/gpu_check.sh OUTDIR [--cpu]}
MODE=${2:-}
mkdir -p "$OUT"
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "${AUDITMI_WHEELS:-}" ] && ls "$AUDITMI_WHEELS"/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$AUDITMI_WHEELS"/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
if [ "$MODE" = "--cpu" ]; then
  DEVICE=cpu; N_SCAN=16; N_RAY=24; REPEATS=1; T_SCAN=300; T_RAY=300
else
  DEVICE=cuda; N_SCAN=1000; N_RAY=1000; REPEATS=2; T_SCAN=270; T_RAY=150   # 270 + 150 + set-up < 8 min
fi
ENC="open_clip:ViT-B-32@random"
START=$(date +%s)

timeout 30 $PY - "$OUT/environment.json" "$DEVICE" <<'EOF' 2>"$OUT/environment.log"
import importlib, json, platform, sys
out = {"python": sys.version.split()[0], "platform": platform.platform(), "device": sys.argv[2], "missing": []}
for name in ("torch", "open_clip", "skimage", "ray", "ray.data", "pyarrow", "auditmi"):
    try:
        m = importlib.import_module(name)
        out[name] = getattr(m, "__version__", "present")
    except Exception as e:  # report, do not fail: the steps below say what they skipped
        out["missing"].append(f"{name}: {type(e).__name__}: {e}")
try:
    import torch
    out["cuda"] = torch.version.cuda
    out["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    out["bf16"] = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
except Exception:
    pass
json.dump(out, open(sys.argv[1], "w"), indent=1)
EOF

status() {  # name rc seconds
  echo "{\"step\": \"$1\", \"exit_code\": $2, \"seconds\": $3, \"timed_out\": $([ "$2" = 124 ] && echo true || echo false)}"
}

t=$(date +%s)
timeout "$T_SCAN" $PY benchmarks/scan_throughput.py --encoder "$ENC" --device "$DEVICE" --images "$N_SCAN" --repeats "$REPEATS" --json \
  >"$OUT/scan_throughput.json" 2>"$OUT/scan_throughput.log"
S1=$(status scan_throughput $? $(( $(date +%s) - t )))

t=$(date +%s)
timeout "$T_RAY" $PY benchmarks/scale.py --encoder "$ENC" --device "$DEVICE" --engines local,ray --actors 1 --images "$N_RAY" \
  --repeats 1 --json "$OUT/ray_gpu.json" >"$OUT/ray_gpu.log" 2>&1
S2=$(status ray_one_gpu_actor $? $(( $(date +%s) - t )))

echo "{\"mode\": \"${MODE:-gpu}\", \"total_seconds\": $(( $(date +%s) - START )), \"steps\": [$S1, $S2]}" >"$OUT/status.json"
cat "$OUT/status.json"
