#!/usr/bin/env bash
# gpu_main_job.sh: the Fashion-MNIST main job on the GPU, for scripts/gpu_ci.sh's GPU_CI_EXTRA hook
# (run there after the build, with its environment): 2 epochs of scripts/train_mnist.lua on
# --device cuda with nn.Linear layers (ramtorch.Linear keeps its weights in host RAM and needs the
# offload engine to compute on cuda inputs), on the data carried in .data/fmnist-10k (10 000
# training images; the full set does not fit the device tool's 64 MiB carry limit beside .deb/).
# The last lines go to $OUT/train_cuda.log.
cd "$(dirname "$0")/.."
DATA=${MNIST_DATA:-.data/fmnist-10k}
[ -d "$DATA" ] || { echo "gpu_main_job: no data at $DATA (carry it)"; exit 0; }
timeout 150 build-gpu/bin/ramtorch-lua scripts/train_mnist.lua --device cuda --layers nn --epochs 2 \
  --data "$DATA" --out "${OUT:-/tmp}/mnist" 2>&1 | tr '\r' '\n' | grep -v "^epoch [0-9]/[0-9] .*|" | tail -12 |
  tee "${OUT:-/tmp}/train_cuda.log"
