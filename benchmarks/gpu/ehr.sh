#!/usr/bin/env bash
# EHR GPU job (called by benchmarks/gpu/device_run.sh from the repo root; rehearse: bash benchmarks/gpu/local_check.sh ehr 240).
# Env: ACCEL (gpu|cpu), BUDGET_S, APP_OUT (what comes back), WORK (scratch), NCPU. Needs gpu_pack/ehr/ (made here by
# benchmarks/gpu/pack_ehr.py, ~10 MiB). Trains EHRMamba (pretrain -> multitask prompted finetuning) on the packed 20k-patient
# cohort, sized from a timed warm-up; APP_OUT gets log.txt, results.json, finetuned_{best,last}.ckpt,
# predictions_held_out.npz, logs/ (CSV). Evaluate here afterwards: python benchmarks/gpu/eval_ehr.py --from <APP_OUT copy>.
set -euo pipefail
: "${ACCEL:?}" "${BUDGET_S:?}" "${APP_OUT:?}" "${WORK:?}"
NCPU=${NCPU:-3}
export LINMIX_BACKEND=torch PYTHONUNBUFFERED=1 OMP_NUM_THREADS=$NCPU PYTHONPATH="${PYTHONPATH:-}:$(pwd)"
mkdir -p "$APP_OUT" "$WORK"
if [ ! -f "${EHR_PACK:-gpu_pack/ehr}/ehr_pack.npz" ] || [ ! -f "${EHR_PACK:-gpu_pack/ehr}/meta.json" ]; then
  echo "EHR job: gpu_pack/ehr/{ehr_pack.npz,meta.json} missing (make them with: python benchmarks/gpu/pack_ehr.py)" >&2
  exit 2
fi
extra=()
case "${VARIANT:-}" in  # device_run.sh JOBS="ehr:<variant>": regularisation variants (README.md here)
  "") ;;
  d128_p1) extra+=(--dropout 0.1 --lr 2e-3) ;;
  d128_p3) extra+=(--dropout 0.3 --lr 1e-3) ;;
  d128_p2_pre40) extra+=(--dropout 0.2 --lr 2e-3 --pre-frac 0.4) ;;
  # 4x the batch: on the H200 a step of this small model costs kernel launches, not arithmetic (~50 ms at
  # batch 256), so samples/s should grow ~4x; lr between constant and square-root scaling (a guess, untested on GPU);
  # the cosine is sized to end by 10 epochs (the 20k run peaked on tuning at ~4 epochs and then overfitted)
  d128_p2_pre40_b1024) extra+=(--dropout 0.2 --lr 3e-3 --pre-frac 0.4 --batch-size 1024 --ft-max-epochs 10) ;;
  *) echo "EHR job: unknown VARIANT=$VARIANT" >&2; exit 2 ;;
esac
if [ "$ACCEL" = cpu ]; then  # rehearsal: small batches, short warm-up, subsets for validation and held-out scoring
  extra+=(--batch-size 32 --warmup-steps 4 --eval-limit 300 --test-limit 400 --val-every-s 40 --reserve-s 45)
fi
pack=${EHR_PACK:-gpu_pack/ehr}
status=0
timeout --signal=TERM --kill-after=5 $((BUDGET_S + 8)) python3 benchmarks/gpu/train_ehr.py --pack "$pack" \
  --out "$APP_OUT" --work "$WORK" --budget "$BUDGET_S" --accel "$ACCEL" --ncpu "$NCPU" "${extra[@]}" || status=$?
if [ "$status" -ne 0 ]; then
  echo "EHR job FAILED (exit $status); see the job's stdout (job.log) and $APP_OUT/log.txt" | tee -a "$APP_OUT/log.txt" >&2
fi
exit "$status"
