#!/usr/bin/env bash
# attn_variants.sh: run on the GPU machine from scripts/gpu_ci.sh (GPU_CI_EXTRA=scripts/bench/
# attn_variants.sh, with GPU_CI_SKIP_STD=1 for a short call), after the build and with its
# environment: scripts/bench/gpu_attention.lua under each setting of ATTN_VARIANTS (space-separated;
# "default", or VAR=VALUE[,VAR=VALUE...] for kernels/cuda/attention.cu's switches, such as
# RAMTORCH_ATTN_DETERMINISTIC=1), its PyTorch twin before and after, then
# tests/gpu/cuda_transformer_spec.lua (CUDA against CPU) under each setting of ATTN_SPEC_VARIANTS.
# Prints "VARIANT <setting> fwd <TFLOP/s> fwd_bwd <TFLOP/s>" lines and busted's summary per spec
# run, and copies the log to $OUT/attn_variants.log.
set -uo pipefail
RTLUA=build-gpu/bin/ramtorch-lua
OUT=${OUT:-/tmp/gpu_ci_out}
VARIANTS=${ATTN_VARIANTS:-"default RAMTORCH_ATTN_DETERMINISTIC=1"}
SPEC_VARIANTS=${ATTN_SPEC_VARIANTS:-$VARIANTS}
envs_of() { [ "$1" = default ] && return; echo "$1" | tr ',' ' '; }
{
  echo "== attn_variants: PyTorch (before)"
  timeout 120 env -u LD_LIBRARY_PATH python3 scripts/bench/gpu_attention.py 2>&1 | sed 's/^RESULT /PYTORCH /'
  for c in $VARIANTS; do
    # shellcheck disable=SC2046
    r=$(env $(envs_of "$c") timeout 120 $RTLUA scripts/bench/gpu_attention.lua 2>&1)
    fw=$(echo "$r" | awk '/^RESULT attention_fwd /{print $3}')
    fb=$(echo "$r" | awk '/^RESULT attention_fwd_bwd /{print $3}')
    echo "VARIANT $c fwd ${fw:-FAIL} fwd_bwd ${fb:-FAIL} TFLOP/s"
    [ -n "$fb" ] || echo "$r" | tail -5
  done
  echo "== attn_variants: PyTorch (after)"
  timeout 120 env -u LD_LIBRARY_PATH python3 scripts/bench/gpu_attention.py 2>&1 | sed 's/^RESULT /PYTORCH /'
  for c in $SPEC_VARIANTS; do
    echo "== attn_variants: cuda_transformer_spec ($c)"
    # shellcheck disable=SC2046
    env $(envs_of "$c") RAMTORCH_CUDA_POISON=1 timeout 300 $RTLUA "$(command -v busted)" -o utfTerminal \
      tests/gpu/cuda_transformer_spec.lua 2>&1 | grep -E "successes|Failure|Error|error" | head -20
  done
} 2>&1 | tee "$OUT/attn_variants.log"
