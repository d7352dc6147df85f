#!/usr/bin/env bash
# Speech GPU job (issue 5): espeak-ng corpus synthesised on NCPU cores, then convtasnet_synth_gpu (the default
# recipe's model), convtasnet_synth_gpu_sp (the same + speed perturbation) and mamba_synth_gpu (SPEECH_CONFIGS to
# change the list) trained concurrently through linmix-speech fit,
# weights + metrics copied into APP_OUT every ~30 s, then a device test of each.  See benchmarks/gpu/speech_job.py.
# Env: ACCEL (gpu|cpu), BUDGET_S, APP_OUT, WORK, NCPU.  Rehearsal: bash benchmarks/gpu/local_check.sh speech 240
set -uo pipefail
: "${ACCEL:?}" "${BUDGET_S:?}" "${APP_OUT:?}" "${WORK:?}" "${NCPU:=2}"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
mkdir -p "$APP_OUT" "$WORK"
cd "$(dirname "$0")/../.."
timeout -k 5 "$((BUDGET_S + 10))" python3 benchmarks/gpu/speech_job.py
rc=$?
[ $rc -eq 0 ] || echo "speech job failed with rc=$rc (see $APP_OUT/speech_job.log)" | tee -a "$APP_OUT/speech_job.log" >&2
exit $rc
