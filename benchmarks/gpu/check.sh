#!/usr/bin/env bash
# The GPU check of the W4A8 kernels (benchmarks/gpu/check.py): correctness, timing and end to end in
# at most 8 minutes on one H100 / H200, compiles included. Writes OUT_DIR/check.json and check.md.
#   benchmarks/gpu/check.sh OUT_DIR
# Runs from a plain checkout with the machine's own torch and Triton (no install: the repository root
# goes on PYTHONPATH); a fresh Triton cache makes every compile count inside the budget.
set -uo pipefail
out="${1:?usage: benchmarks/gpu/check.sh OUT_DIR}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
mkdir -p "$out"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-$(mktemp -d)}"
unset TRITON_INTERPRET
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv 2>/dev/null || echo "no nvidia-smi"
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)' || exit 2
exec timeout 540 python3 "$root/benchmarks/gpu/check.py" "$out"
