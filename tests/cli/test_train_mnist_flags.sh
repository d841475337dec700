#!/usr/bin/env bash
# test_train_mnist_flags.sh: review regressions of the main job's command line (scripts/train_mnist.lua):
# a stray argument, --limit 100.5, a missing --data folder and an unknown --device end with a one-line
# message and no Lua traceback (the old script ignored the argument and crashed with a traceback on the
# others). Skipped (77) when the dataset package is not installed.
# usage: test_train_mnist_flags.sh path/to/ramtorch-lua build-dir source-dir
set -u
source "$(dirname "$0")/lib.sh"
cli_init "$@"
require_fashion_mnist
cd "$SOURCE_DIR" || exit 1
bad() { # bad RC MESSAGE ARGS...
    local rc=$1 msg=$2
    shift 2
    run "$RT" scripts/train_mnist.lua --out "$TMP/o" --epochs 1 --limit 200 "$@"
    expect_rc "$rc"
    expect_err "$msg"
    check
    ! grep -q "stack traceback" "$TMP/err" || fail "stderr has a Lua traceback"
    expect_no_out "epoch 1"
}
bad 2 "train_mnist: unexpected argument 'extra'" extra
bad 2 "option --limit expects an integer, got '100.5'" --limit 100.5
bad 1 "train_mnist: FashionMNIST: cannot read /nonexistent/train-images-idx3-ubyte.gz" --data /nonexistent
bad 1 "train_mnist: to: expected a device" --device cdu
cli_done
