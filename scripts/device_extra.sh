#!/usr/bin/env bash
# device_extra.sh: run on the GPU machine from scripts/gpu_ci.sh (GPU_CI_EXTRA=scripts/device_extra.sh)
# after the build, with its environment: the main job's epoch time beside its PyTorch twin on the same
# machine in the same run (CPU at 2 and 16 threads, and CUDA), the offload engine's streamed-MLP
# benchmark beside PyTorch with every weight resident, and the host AdamW benchmark beside PyTorch's
# fused CPU AdamW (SKIP_STREAMED=1 / SKIP_ADAMW=1 leave those out). Data: the Debian Fashion-MNIST gz
# files carried in .data/.
set -uo pipefail
RTLUA=build-gpu/bin/ramtorch-lua
PY="env -u LD_LIBRARY_PATH python3"
step() { echo "== extra: $*"; }
mnist() { timeout 240 $RTLUA scripts/train_mnist.lua --epochs 1 --data .data --out /tmp/mnist "$@" 2>&1 |
          tr '\r' '\n' | grep -E "^epoch 1:|^done|rror" | sed "s/^/ramtorch $* | /"; }
if [ -f .data/train-images-idx3-ubyte.gz ]; then
  step "Fashion-MNIST epoch"
  for th in 2 16; do
    mnist --threads $th
    timeout 240 $PY scripts/bench/mnist_torch.py .data --threads $th
  done
  mnist --device cuda --layers nn
  mnist --device cuda --layers ramtorch
  timeout 240 $PY scripts/bench/mnist_torch.py .data --device cuda
fi
if [ -z "${SKIP_STREAMED:-}" ]; then
step "streamed MLP (issue 5)"
timeout 200 $RTLUA scripts/bench/streamed_mlp.lua --tokens 1024,4096 --steps 3 2>&1 | tail -25
if [ -z "${STREAMED_SHORT:-}" ]; then
timeout 120 $RTLUA scripts/bench/streamed_mlp.lua --tokens 1024 --steps 3 --budget-frac 0.5 2>&1 | grep -E "RESULT|rror"
timeout 120 $RTLUA scripts/bench/streamed_mlp.lua --tokens 4096 --steps 3 --dtype f32 --autocast 2>&1 | grep -E "RESULT|rror"
timeout 120 $PY scripts/bench/streamed_mlp_torch.py --tokens 1024,4096,16384 --steps 3
fi
fi
if [ -f scripts/bench/host_adamw.lua ] && [ -z "${SKIP_ADAMW:-}" ]; then
  step "host AdamW (issue 6)"
  timeout 120 $RTLUA scripts/bench/host_adamw.lua 2>&1 | tail -8
  timeout 120 $PY scripts/bench/host_adamw.py 2>&1 | tail -8
fi
