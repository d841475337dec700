#!/usr/bin/env bash
# engine_device.sh: issues 5, 6 and 7's end-to-end measurements on the GPU machine, run from
# scripts/gpu_ci.sh (GPU_CI_SKIP_STD=1 GPU_CI_EXTRA=scripts/bench/engine_device.sh, carry .deb) with
# its environment and build: the offload engine's GPU spec, the streamed MLP (gradient paths native
# and host, T up to 16384, f32 masters under autocast, budgets, 8 vs 32 layers), whole training steps
# with the host AdamW, PyTorch all-resident in the same run, host AdamW alone beside PyTorch's fused
# CPU AdamW, and the GPT block stack (resident and streamed) beside PyTorch eager.
# ENGINE_PARTS (default "spec mlp step adamw gpt"; also "base" = the first mlp run, "depth" = 8 vs 32
# layers, "t16k" = T=16384 profiled) picks parts.
set -uo pipefail
RTLUA=build-gpu/bin/ramtorch-lua
PY="env -u LD_LIBRARY_PATH python3"
PARTS=${ENGINE_PARTS:-spec mlp step adamw gpt}
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
T0=$(date +%s)
step() { echo "== engine [$(($(date +%s) - T0))s]: $*"; }
mlp() { timeout 150 $RTLUA scripts/bench/streamed_mlp.lua --steps 3 --warmup 2 "$@" 2>&1 |
        grep -E "^T=|RESULT|profile|worker|rror" | sed "s/^/[$*] /"; }
if has specall; then
  step "ctest -L gpu (poisoned allocations)"
  (cd build-gpu && RAMTORCH_CUDA_POISON=1 timeout 200 ctest -L gpu --output-on-failure 2>&1 | tail -12)
fi
if has spec; then
  step "offload_cuda_spec + cuda_linear_spec (poisoned allocations)"
  (cd build-gpu && RAMTORCH_CUDA_POISON=1 timeout 200 ctest -R "offload_cuda|cuda_linear" --output-on-failure 2>&1 | tail -6)
fi
if has base; then
  step "streamed MLP, bf16 weights, native gradient path"
  mlp --tokens 1024,4096 --profile
fi
if has depth; then
  step "depth: 8 and 32 layers at T=1024 (peak GPU memory)"
  mlp --tokens 1024 --layers 8 --steps 2 --profile
  mlp --tokens 1024 --layers 32 --steps 2 --profile
fi
if has t16k; then
  step "T=16384, profiled"
  mlp --tokens 16384 --steps 2 --warmup 1 --profile
fi
if has mlp; then
  step "streamed MLP, bf16 weights, native gradient path"
  mlp --tokens 1024,4096 --profile
  step "same, host gradient path (always-f32 host gradients, the previous default)"
  RAMTORCH_OFFLOAD_GRAD_PATH=host mlp --tokens 1024
  step "T=16384"
  mlp --tokens 16384 --steps 2 --warmup 1
  step "f32 masters under bf16 autocast, T=4096"
  mlp --tokens 4096 --dtype f32 --autocast
  step "budgets at T=1024: half, all"
  mlp --tokens 1024 --budget-frac 0.5
  mlp --tokens 1024 --budget-frac 1
  step "depth: 8 and 32 layers at T=1024 (peak GPU memory)"
  mlp --tokens 1024 --layers 8 --steps 2
  mlp --tokens 1024 --layers 32 --steps 2
  step "PyTorch, every weight resident"
  timeout 150 $PY scripts/bench/streamed_mlp_torch.py --tokens 1024,4096,16384 --steps 3 2>&1 | tail -4
fi
if has step; then
  step "whole training step, T=4096: f32 masters + bf16 autocast + AdamW f32 states"
  mlp --tokens 4096 --dtype f32 --autocast --optim adamw --overlap
  [ -n "${ENGINE_NO_OVERLAP:-}" ] && mlp --tokens 4096 --dtype f32 --autocast --optim adamw
  step "whole training step, T=4096: bf16 weights + AdamW bf16 states"
  mlp --tokens 4096 --optim adamw --state-dtype bf16 --overlap
  [ -n "${ENGINE_NO_OVERLAP:-}" ] && mlp --tokens 4096 --optim adamw --state-dtype bf16
fi
if has adamw; then
  step "host AdamW alone, 2^27 parameters"
  timeout 150 $RTLUA scripts/bench/host_adamw.lua 27 2>&1 | tail -6
  timeout 150 $PY scripts/bench/host_adamw.py 27 2>&1 | tail -3
fi
if has adamwvar; then
  step "host AdamW code paths and threads (bf16 parameters, gradients and states)"
  for v in "16 10 3" "16 10 2" "8 10 3"; do
    timeout 100 $RTLUA scripts/bench/host_adamw.lua 27 $v 2>&1 | grep -E "RESULT|path" | sed "s/^/[threads,iters,path $v] /"
  done
fi
if has gpt; then
  step "GPT block stack (12 x 1024, T=1024, batch 16)"
  gpt() { timeout 150 $RTLUA scripts/bench/gpt_stack.lua $1 --steps 4 2>&1 | tail -8 | sed "s/^/[gpt $1] /"; }
  gpt "--autocast --breakdown"
  [ -z "${GPT_SHORT:-}" ] && gpt ""
  timeout 200 $PY scripts/bench/gpt_stack.py --steps 4 2>&1 | tail -6
  gpt "--streamed --autocast --breakdown"
fi
step "done"
