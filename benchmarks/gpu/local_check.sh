#!/usr/bin/env bash
# Rehearse one app's GPU job on this CPU machine: tiny budget, accelerator cpu, packages the device lacks blocked.
#   bash benchmarks/gpu/local_check.sh <app> [budget_s]
# Output lands in /tmp/gpu_local/<app>/{out,work}; out/ is what would come back from the device.
set -euo pipefail
app=$1; budget=${2:-120}
root=$(cd "$(dirname "$0")/../.." && pwd)
base=/tmp/gpu_local/$app
rm -rf "$base"; mkdir -p "$base/out" "$base/work"
cd "$root"
PATH="$root/.venv/bin:$PATH" PYTHONPATH="$root/benchmarks/gpu/blocker:$root" ACCEL=cpu BUDGET_S=$budget \
  APP_OUT=$base/out WORK=$base/work NCPU=2 python3 -c "import polars" 2>/dev/null \
  && { echo "blocker not active"; exit 1; } || true
PATH="$root/.venv/bin:$PATH" PYTHONPATH="$root/benchmarks/gpu/blocker:$root" ACCEL=cpu BUDGET_S=$budget \
  APP_OUT=$base/out WORK=$base/work NCPU=2 timeout $((budget + 60)) bash "benchmarks/gpu/$app.sh"
echo "rc=$? ; files that would come back:"; (cd "$base/out" && find . -type f | head -50 && du -sh .)
