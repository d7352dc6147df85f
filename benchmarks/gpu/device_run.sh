#!/usr/bin/env bash
# One device call, every app's GPU job at once (see README.md here). On the device machine, from the repo root:
#   bash benchmarks/gpu/device_run.sh            # needs $OUT (the folder that comes back); TOTAL_S (default 560)
# Carried: .whl (wheels the image lacks), gpu_pack (data the machine cannot make itself: pack_*.py).
# Each job is benchmarks/gpu/<app>.sh with ACCEL, BUDGET_S, APP_OUT, WORK, NCPU; its APP_OUT comes back as $OUT/<app>.tgz.
set -u
T0=$(date +%s)
TOTAL=${TOTAL_S:-560}
JOBS=${JOBS:-"core ehr speech physics"}
: "${OUT:?set OUT to the folder that comes back}"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/run.log"; }
ACCEL=${ACCEL:-gpu}   # cpu: rehearsal here (with SKIP_WHEELS=1 and benchmarks/gpu/blocker first on PYTHONPATH)
if [ -z "${SKIP_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { log "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
  log "wheels installed"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv; nproc; free -g | head -2
  python3 -c "import sys, torch, pytorch_lightning as pl, torchaudio, torch_geometric, numpy;
print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0),
      'pl', pl.__version__, 'torchaudio', torchaudio.__version__, 'pyg', torch_geometric.__version__, 'numpy', numpy.__version__)"
} > "$OUT/device.txt" 2>&1
log "$(tail -1 "$OUT/device.txt")"
# A job is <app> or <app>:<variant> (script benchmarks/gpu/<app>.sh with VARIANT set; output <app>_<variant>.tgz).
# Cores, core counts and budgets default to the layout below (one H200, 16 cores); J_CPUS_<name> etc. in the environment override.
declare -A J_CPUS=([core]=15 [ehr]=9-11 [physics]=12-14 [speech]=0-8)
declare -A J_NCPU=([core]=1 [ehr]=3 [physics]=3 [speech]=9)
# core: the whole call too (it was 150 s: 90 s of parity tests never outlasted Triton's first compile on its one core)
declare -A J_BUDGET=()
pids=(); names=()
for job in $JOBS; do
  app=${job%%:*}; variant=""; [ "$app" = "$job" ] || variant=${job#*:}
  name=$app${variant:+_$variant}; names+=("$name")
  [ -f "benchmarks/gpu/$app.sh" ] || { log "$job: no job script, skipped"; continue; }
  ao=/tmp/gpu_out/$name; mkdir -p "$ao" "/tmp/gpu_work/$name"
  v=J_CPUS_$name; cpus=${!v:-${J_CPUS[$app]:-0-15}}
  v=J_NCPU_$name; ncpu=${!v:-${J_NCPU[$app]:-4}}
  v=J_BUDGET_$name; budget=${!v:-${J_BUDGET[$app]:-$((TOTAL - 40))}}
  pin=(); taskset -c "$cpus" true 2>/dev/null && pin=(taskset -c "$cpus")
  ( ACCEL=$ACCEL VARIANT=$variant BUDGET_S=$budget APP_OUT=$ao WORK=/tmp/gpu_work/$name NCPU=$ncpu \
    OMP_NUM_THREADS=$ncpu timeout -k 5 $((budget + 15)) "${pin[@]}" bash "benchmarks/gpu/$app.sh" \
    > "$ao/job.log" 2>&1; echo "exit status $?" >> "$ao/job.log" ) &
  pids+=($!)
  log "$name started (budget $budget s, cpus ${pin[*]:-not pinned})"
done
( while sleep 60; do log "gpu: $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)"; done ) &
mon=$!
wait "${pids[@]}"
kill $mon 2>/dev/null
for app in "${names[@]}"; do
  ao=/tmp/gpu_out/$app; [ -d "$ao" ] || continue
  log "$app: $(tail -1 "$ao/job.log" 2>/dev/null || echo "no job.log: the job did not start")"
  tar czf "$OUT/$app.tgz" -C "$ao" .
  # at most 16 MiB a file comes back: drop the largest files until it fits, and say so
  while [ "$(stat -c %s "$OUT/$app.tgz")" -gt 16000000 ]; do
    big=$(find "$ao" -type f -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
    log "$app: dropping $big ($(stat -c %s "$big") bytes) to fit"; rm -f "$big"; tar czf "$OUT/$app.tgz" -C "$ao" .
  done
  log "$app.tgz $(stat -c %s "$OUT/$app.tgz") bytes"
done
log "done"
