#!/usr/bin/env bash
# Core job: shared/ Mamba2 + BiMamba2 against mamba-ssm's Triton SSD kernel on CUDA (tests/core/test_gpu_parity.py),
# then the pure-PyTorch SSD path vs the kernel forward+backward time at a few lengths. mamba-ssm's Python sources are
# carried in gpu_pack/core (its package __init__, which imports the compiled selective-scan extension, is replaced).
# Triton's first compilation of the kernels (one shared core) outlasts 90 s, so the parity tests get 60% of BUDGET_S,
# write straight to APP_OUT (no pipe to lose on a kill) and skip autotuning (below). device_run.sh gives this job the
# whole call (~520 s: ~310 s for the parity tests); it is light on the GPU, so the other jobs lose nothing.
set -u
export PYTHONPATH=$PWD/gpu_pack/core:${PYTHONPATH:-}
budget=${BUDGET_S:-150}
python3 -c "from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined; print('mamba-ssm SSD kernel imports')" \
  > "$APP_OUT/import.txt" 2>&1
# MAMBA_DETERMINISTIC=1: mamba-ssm's own switch that gives every Triton kernel its single cheapest config (no autotune:
# one compile per kernel, not one per config) and deterministic reductions; the numerics parity checks are unchanged.
MAMBA_DETERMINISTIC=1 timeout $((budget * 6 / 10)) python3 -m pytest tests/core/test_gpu_parity.py -m gpu -v -p no:cacheprovider -rs \
  > "$APP_OUT/parity.txt" 2>&1
echo "pytest exit $?" >> "$APP_OUT/parity.txt"
timeout $((budget * 3 / 10)) python3 benchmarks/gpu/core_speed.py > "$APP_OUT/speed.txt" 2>&1
echo "speed exit $?" >> "$APP_OUT/speed.txt"
cat "$APP_OUT"/*.txt
