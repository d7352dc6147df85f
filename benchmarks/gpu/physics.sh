#!/usr/bin/env bash
# Physics GPU job (contract: benchmarks/gpu/device_run.sh): PhysGTO on steady Darcy via `linmix-physics fit`, time-boxed
# to BUDGET_S; weights, learning curve, logs and the device's test metrics land in APP_OUT. Needs
# gpu_pack/physics/darcy_gpu.npz (benchmarks/gpu/pack_physics.py pack). Details: benchmarks/gpu/physics_job.py.
# Rehearsal here: bash benchmarks/gpu/local_check.sh physics 240
set -uo pipefail
export JOB_T0=$(date +%s) PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
: "${ACCEL:?} ${BUDGET_S:?} ${APP_OUT:?} ${WORK:?}"
export NCPU=${NCPU:-3}
mkdir -p "$APP_OUT" "$WORK"
PY=python3
command -v "$PY" >/dev/null || PY=python
timeout $((BUDGET_S + 10)) "$PY" benchmarks/gpu/physics_job.py
rc=$?
echo "physics job exit $rc" | tee -a "$APP_OUT/physics_job.log"
exit $rc
