#!/usr/bin/env bash
# ce_variants.sh: the CUDA cross_entropy forward timed alone (scripts/bench/ce_variants.lua, several
# shapes and dtypes), PyTorch's gpu_memory.py in the same run for its cross_entropy figure, and the
# GPU specs of cross_entropy (tests/gpu/cuda_nn_spec.lua --filter cross_entropy: forward and backward
# against the CPU per dtype, new device memory poisoned). Written to compare forward variants
# (2026-11-28: the register forward won, BENCHMARKS.md; the losers were removed); to compare new
# ones, give each a way to be chosen and loop over them here. Run on the GPU machine from
# scripts/gpu_ci.sh, which sets up the environment and build-gpu:
#   GPU_CI_SKIP_STD=1 GPU_CI_EXTRA=scripts/bench/ce_variants.sh bash scripts/gpu_ci.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu_ci_out}
RTLUA=build-gpu/bin/ramtorch-lua
BUSTED=${BUSTED_BIN:-/tmp/debroot/usr/bin/busted}
LOG=$OUT/ce_variants.log
: > "$LOG"
timeout 90 $RTLUA scripts/bench/ce_variants.lua current 2>&1 | tee -a "$LOG"
echo "-- pytorch gpu_memory.py" | tee -a "$LOG"
timeout 90 env -u LD_LIBRARY_PATH python3 scripts/bench/gpu_memory.py 2>&1 |
  sed 's/^RESULT /RESULT pytorch /' | tee -a "$LOG"
echo "-- ramtorch gpu_memory.lua" | tee -a "$LOG"
timeout 90 $RTLUA scripts/bench/gpu_memory.lua 2>&1 | grep -E "copy_d2d|softmax|cross_entropy" |
  sed 's/^RESULT /RESULT ramtorch /' | tee -a "$LOG"
RAMTORCH_CUDA_POISON=1 timeout 150 $RTLUA "$BUSTED" -o utfTerminal --filter cross_entropy \
  tests/gpu/cuda_nn_spec.lua > "$OUT/ce_spec.log" 2>&1
rc=$?
echo "SPEC cross_entropy rc=$rc $(grep -aE '[0-9]+ success' "$OUT/ce_spec.log" | tail -1)" | tee -a "$LOG"
[ $rc = 0 ] || grep -aE "Failure|Error|error" -A6 "$OUT/ce_spec.log" | head -30
echo "== cross_entropy forward: GB/s best / median of 5 rounds (logits read once)"
awk '/^RESULT ce / { printf "%-24s %-8s %6s %6s\n", $3, $4, $5, $6 }' "$LOG"
grep -E "^RESULT (pytorch|ramtorch) (copy_d2d|softmax|cross_entropy)" "$LOG"
grep "^SPEC" "$LOG"
exit $rc
