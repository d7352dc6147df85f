#!/usr/bin/env bash
# Check a device call here before making it (a failed call still costs device time):
#   JOBS='core ehr:d128_p2_pre40_b1024 speech physics' EHR_PACK=gpu_pack/ehr120k \
#     bash benchmarks/gpu/preflight.sh .whl gpu_pack/core gpu_pack/ehr120k gpu_pack/physics gpu_pack/speech
# Arguments: the paths the call will `carry`. Checks that each exists, that every job finds what it reads inside them
# (wheels, packs), and that what travels (files git tracks, untracked files it does not ignore, the carried paths)
# stays under the 64 MiB a call takes. Prints the sizes; exits 1 on any problem.
set -u
cd "$(dirname "$0")/../.."
JOBS=${JOBS:-"core ehr speech physics"}
EHR_PACK=${EHR_PACK:-gpu_pack/ehr}
LIMIT=$((64 * 1024 * 1024))
bad=0
say() { echo "preflight: $*"; }
fail() { say "PROBLEM: $*"; bad=1; }
carried() {  # is $1 inside one of the carried paths?
  local p
  for p in "${CARRY[@]}"; do
    case "$1/" in "${p%/}/"*) return 0 ;; esac
  done
  return 1
}
need() {  # need <job> <path>: the path exists and travels
  [ -e "$2" ] || { fail "$1 needs $2, which does not exist here"; return; }
  carried "$2" || fail "$1 needs $2, which is not in the carried paths"
}
CARRY=("$@")
[ ${#CARRY[@]} -le 8 ] || fail "${#CARRY[@]} carried paths (at most 8)"
for p in "${CARRY[@]}"; do
  [ -e "$p" ] || fail "carried path $p does not exist"
done
for job in $JOBS; do
  app=${job%%:*}
  case $app in
    core) need core gpu_pack/core/mamba_ssm/__init__.py ;;
    ehr) need ehr "$EHR_PACK/ehr_pack.npz"; need ehr "$EHR_PACK/meta.json"
         [ "$job" = ehr ] || grep -q "^  ${job#*:})" benchmarks/gpu/ehr.sh || fail "ehr.sh has no variant ${job#*:}" ;;
    speech) need speech gpu_pack/speech/synth_test
            compgen -G ".whl/espeakng_loader-*.whl" >/dev/null || fail "speech needs the espeakng-loader wheel in .whl" ;;
    physics) need physics gpu_pack/physics/darcy_gpu.npz ;;
    *) fail "unknown job $job" ;;
  esac
done
for w in jsonargparse docstring_parser typeshed_client importlib_resources soundfile cffi pycparser; do
  compgen -G ".whl/$w-*.whl" >/dev/null || fail "wheel $w missing from .whl (see README.md here)"
done
carry_b=0
for p in "${CARRY[@]}"; do
  [ -e "$p" ] && carry_b=$((carry_b + $(du -sb "$p" | cut -f1)))
done
tree_b=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r stat -c %s 2>/dev/null \
  | awk '{s += $1} END {print s + 0}')
total=$((tree_b + carry_b))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
say "tracked + untracked-not-ignored $(mib "$tree_b"), carried $(mib "$carry_b"), total $(mib "$total") of 64 MiB"
[ "$total" -le "$LIMIT" ] || fail "what travels is over 64 MiB by $(mib $((total - LIMIT)))"
[ $bad -eq 0 ] && say "ok" || exit 1
