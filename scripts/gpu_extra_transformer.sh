#!/usr/bin/env bash
# gpu_extra_transformer.sh: run on the GPU machine from scripts/gpu_ci.sh
# (GPU_CI_EXTRA=scripts/gpu_extra_transformer.sh) after the build, with its environment: the char-level GPT
# of scripts/train_gpt.lua trained on cuda for a few steps (rotary), on the fortune files when the
# machine has them and on the project's own Lua sources otherwise; prints the loss lines and the timing.
set -uo pipefail
RTLUA=build-gpu/bin/ramtorch-lua
DATA=/usr/share/games/fortunes
[ -d "$DATA" ] || DATA=lua/ramtorch
echo "== extra: train_gpt --device cuda --rotary (data $DATA)"
timeout 60 $RTLUA scripts/train_gpt.lua --device cuda --rotary --data "$DATA" --steps 60 --eval-every 30 \
  --eval-batches 2 --n-embd 128 --n-head 2 --block-size 128 --generate 80 --out /tmp/gpt_cuda 2>&1 |
  tr '\r' '\n' | grep -vE "^\s*$" | tail -10
