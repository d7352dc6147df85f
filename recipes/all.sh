#!/usr/bin/env bash
# Train every app's quality recipe at once on one CUDA machine (the three share the GPU). Score the results
# afterwards, on any machine with the project installed: python recipes/eval_<app>.py --from OUT/<app>.
#   bash recipes/all.sh [OUT] [BUDGET_S]        # defaults: runs/recipes, 600 s of training per recipe
# Each recipe gets a third of the CPU cores for its data processes; its output is OUT/<app>/ (log.txt, run.json,
# checkpoints) and OUT/<app>.stdout. Extra flags for one recipe: EHR_ARGS, SPEECH_ARGS, PHYSICS_ARGS (word-split).
set -u
cd "$(dirname "$0")/.."
out=${1:-runs/recipes}
budget=${2:-600}
py=${PYTHON:-python}
workers=$(( $(nproc) / 3 > 1 ? $(nproc) / 3 : 1 ))
mkdir -p "$out"
declare -A extra=([ehr]="${EHR_ARGS:-}" [speech]="${SPEECH_ARGS:-}" [physics]="${PHYSICS_ARGS:-}")
pids=()
for app in ehr speech physics; do
  # shellcheck disable=SC2086
  "$py" "recipes/$app.py" --out "$out/$app" --budget "$budget" --workers "$workers" ${extra[$app]} \
    > "$out/$app.stdout" 2>&1 &
  pids+=($!)
  echo "$app: started (pid $!), log $out/$app/log.txt"
done
rc=0
for i in 0 1 2; do
  wait "${pids[$i]}" || rc=1
done
for app in ehr speech physics; do
  echo "== $app: $(tail -1 "$out/$app/log.txt" 2>/dev/null || echo 'no log: see '"$out/$app.stdout")"
done
exit $rc
