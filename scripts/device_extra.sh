#!/usr/bin/env bash
# device_extra.sh: run on the GPU machine from scripts/gpu_ci.sh (GPU_CI_EXTRA=scripts/device_extra.sh)
# after the build: generates the PyTorch-written test fixtures into $OUT/fixtures.tar, checks that a
# file written by ramtorch loads in PyTorch's safetensors, and times one Fashion-MNIST epoch of the main
# job beside its PyTorch twin (data carried in .data/, the Debian gz files).
set -uo pipefail
RTLUA=build-gpu/bin/ramtorch-lua
PY="env -u LD_LIBRARY_PATH python3"
FX=$(mktemp -d)
echo "-- fixtures"
$PY tests/fixtures/gen_optim_fixture.py "$FX/optim_adamw_sgd.safetensors"
$PY tests/fixtures/gen_safetensors_fixture.py && cp tests/fixtures/torch_written.safetensors "$FX/"
[ -f tests/fixtures/gen_gpt2_fixture.py ] && (cd "$FX" && $PY "$OLDPWD/tests/fixtures/gen_gpt2_fixture.py" "$FX/gpt2_tiny.safetensors")
$PY tests/fixtures/check_ramtorch_written.py tests/fixtures/ramtorch_written.safetensors
tar -C "$FX" -cf "$OUT/fixtures.tar" . && tar -tvf "$OUT/fixtures.tar"
echo "-- Fashion-MNIST epoch (ramtorch and PyTorch, same machine, same run)"
for th in 2 16; do
  timeout 300 $RTLUA scripts/train_mnist.lua --epochs 1 --threads $th --data .data --out /tmp/mnist-$th 2>&1 | grep -E "^epoch 1:|^done" | sed "s/^/ramtorch cpu threads=$th: /"
  timeout 300 $PY scripts/bench/mnist_torch.py .data --threads $th
done
timeout 300 $RTLUA scripts/train_mnist.lua --epochs 1 --device cuda --data .data --out /tmp/mnist-cuda 2>&1 | tail -3 | sed "s/^/ramtorch cuda: /"
timeout 300 $PY scripts/bench/mnist_torch.py .data --device cuda
