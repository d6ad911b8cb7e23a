#!/usr/bin/env bash
# GPU check (one GPU, under 8 minutes): R50-FPN Mask R-CNN with GroupNorm at paper resolution (800x1333) on
# generated COCO-format data, from random init and from a pretrained-from-file init, AMP, batch 2 and 8;
# img/s, peak memory, and box/mask AP evaluation on the GPU. Writes OUT/results/*.json, OUT/summary.json and
# prints a table. Exit status 0 when every run finished and evaluation gave finite AP for every val image.
#
#   benchmarks/gpu_check.sh [OUT]              # default OUT: runs/gpu_check
#   GPU_CHECK_TINY=1 benchmarks/gpu_check.sh   # tiny sizes: a dry run of the same steps on a CPU
#
# Needs the project's environment (`make install`); nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-runs/gpu_check}

if [ ! -x "$PY" ]; then
    echo "gpu_check: $PY not found; run 'make install' first (or set PY=/path/to/python)" >&2
    exit 2
fi
if [ "${GPU_CHECK_TINY:-0}" = "0" ]; then
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    fi
    if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "gpu_check: torch sees no CUDA device here (GPU_CHECK_TINY=1 runs the CPU dry run)" >&2
        exit 2
    fi
fi
# Each rethink process sets its own intra-op threads; the data loader workers do the decoding.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
exec "$PY" benchmarks/gpu_check.py --out "$OUT"
