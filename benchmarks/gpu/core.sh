#!/usr/bin/env bash
# Core job: shared/ Mamba2 + BiMamba2 against mamba-ssm's Triton SSD kernel on CUDA (tests/core/test_gpu_parity.py),
# then the pure-PyTorch SSD path vs the kernel forward+backward time at a few lengths. mamba-ssm's Python sources are
# carried in gpu_pack/core (its package __init__, which imports the compiled selective-scan extension, is replaced).
set -u
export PYTHONPATH=$PWD/gpu_pack/core:${PYTHONPATH:-}
python3 -c "from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined; print('mamba-ssm SSD kernel imports')" \
  2>&1 | tail -3 | tee "$APP_OUT/import.txt"
timeout 90 python3 -m pytest tests/core/test_gpu_parity.py -m gpu -q -p no:cacheprovider -rs 2>&1 | tail -30 \
  | tee "$APP_OUT/parity.txt"
timeout 50 python3 benchmarks/gpu/core_speed.py 2>&1 | tail -30 | tee "$APP_OUT/speed.txt"
