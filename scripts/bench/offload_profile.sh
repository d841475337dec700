#!/usr/bin/env bash
# offload_profile.sh: issue 5's offload-engine profile on the GPU machine, as GPU_CI_EXTRA of
# scripts/gpu_ci.sh (which has built build-gpu and set up the environment): the CUDA offload spec,
# then scripts/bench/streamed_mlp.lua with --profile (per-phase breakdown: stream busy times, GEMMs,
# host worker, host syncs) in several engine modes, each printed as one RESULT line in a table at the
# end. OFFLOAD_PROFILE_SET=full (default) adds the measurement modes (reference host pass, no host
# pass, f32 over the bus, 8 threads) to the two gradient paths (host, auto) at T=1024/4096, budget 0.5
# and f32 autocast; any other value runs only the latter.
#   GPU_CI_EXTRA=scripts/bench/offload_profile.sh bash scripts/gpu_ci.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu_ci_out}
RTLUA=build-gpu/bin/ramtorch-lua
B=scripts/bench/streamed_mlp.lua
LOG=$OUT/offload_profile.log
: > "$LOG"
SET=${OFFLOAD_PROFILE_SET:-full}

echo "-- offload_cuda_spec" | tee -a "$LOG"
timeout 120 env RAMTORCH_CUDA_POISON=1 $RTLUA "$(command -v busted || echo /tmp/debroot/usr/bin/busted)" \
  -o utfTerminal tests/gpu/offload_cuda_spec.lua 2>&1 | tail -15 | tee -a "$LOG"

# run TAG "ENV..." ARGS...: one configuration
run() {
  local tag=$1 envs=$2
  shift 2
  echo "-- $tag ($envs $*)" | tee -a "$LOG"
  timeout 60 env $envs $RTLUA $B --steps 4 --warmup 2 "$@" 2>&1 | sed "s/^RESULT /RESULT $tag /" | tee -a "$LOG"
}

if [ "$SET" = full ]; then
  run ref_acc "RAMTORCH_OFFLOAD_ACC=ref RAMTORCH_OFFLOAD_GRAD_CHUNK_MB=0" --tokens 1024 --profile
  run skip_host "RAMTORCH_OFFLOAD_GRAD_PATH=skip" --tokens 1024 --profile
  run dev_cast "RAMTORCH_OFFLOAD_GRAD_PATH=device" --tokens 1024,4096 --profile
  run omp8 "OMP_NUM_THREADS=8" --tokens 1024 --profile
fi
# the gradient paths side by side: widened on the host (default) and balanced with the device (auto)
for path in host auto; do
  run $path "RAMTORCH_OFFLOAD_GRAD_PATH=$path" --tokens 1024,4096 --warmup 3 --profile
  run ${path}_budget05 "RAMTORCH_OFFLOAD_GRAD_PATH=$path" --tokens 1024 --warmup 3 --budget-frac 0.5 --profile
  run ${path}_autocast "RAMTORCH_OFFLOAD_GRAD_PATH=$path" --tokens 4096 --warmup 3 --dtype f32 --autocast --profile
done

echo "-- summary" | tee -a "$LOG"
grep '^RESULT' "$LOG" | tee "$OUT/offload_profile_table.txt"
