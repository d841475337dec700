#!/usr/bin/env bash
# test_robustness.sh: bad input to the two jobs ends early with a one-line message and no Lua
# traceback. scripts/train_mnist.lua: --hidden 0 (the old script trained a constant model and reported
# accuracy 0.1), --hidden -3, --weight-decay -1, --seed -1 (tracebacks), --limit -5 and --threads -2
# (silently ignored), a --device that cannot be used (a traceback at the first batch), an --out that
# cannot be written (the old script trained the whole run, then crashed saving and lost it).
# scripts/train_gpt.lua: --seed -1, --weight-decay -1 (tracebacks), --threads -1 (ignored).
# Skipped (77) when the dataset package is not installed.
# usage: test_robustness.sh path/to/ramtorch-lua build-dir source-dir
set -u
source "$(dirname "$0")/lib.sh"
cli_init "$@"
require_fashion_mnist
cd "$SOURCE_DIR" || exit 1
expect_no_traceback() {
    check
    ! grep -q "stack traceback" "$TMP/err" || fail "stderr has a Lua traceback"
}
mnist_bad() { # mnist_bad RC MESSAGE ARGS...: refused before the first epoch
    local rc=$1 msg=$2
    shift 2
    run "$RT" scripts/train_mnist.lua --out "$TMP/o" --epochs 1 --limit 200 --hidden 16 "$@"
    expect_rc "$rc"
    expect_err "$msg"
    expect_no_traceback
    expect_no_out "epoch 1:"
}
mnist_bad 2 "--hidden must be >= 1" --hidden 0
mnist_bad 2 "--hidden must be >= 1" --hidden -3
mnist_bad 2 "--weight-decay, --seed, --threads and --limit >= 0" --weight-decay -1
mnist_bad 2 "--weight-decay, --seed, --threads and --limit >= 0" --seed -1
mnist_bad 2 "--weight-decay, --seed, --threads and --limit >= 0" --limit -5
mnist_bad 2 "--weight-decay, --seed, --threads and --limit >= 0" --threads -2
mnist_bad 1 "train_mnist: device cuda:99" --device cuda:99
mnist_bad 1 "train_mnist: --out: cannot create or write to the folder /etc/passwd/x" --out /etc/passwd/x
check
[ ! -e "$TMP/o/.train_mnist_write_test" ] || fail "the --out write probe was left behind"

mkdir -p "$TMP/data"
for i in $(seq 1 40); do printf 'The quick brown fox %d jumps over the lazy dog.\n%%\n' "$i"; done > "$TMP/data/f"
gpt_bad() { # gpt_bad MESSAGE ARGS...: refused with status 2 before training
    local msg=$1
    shift
    run "$RT" scripts/train_gpt.lua --data "$TMP/data" --batch-size 2 --block-size 8 --n-layer 1 --n-embd 16 \
        --n-head 2 --steps 2 --generate 5 --out "$TMP/g" "$@"
    expect_rc 2
    expect_err "$msg"
    expect_no_traceback
    expect_no_out "train ["
}
gpt_bad "--seed, --threads and --weight-decay >= 0" --seed -1
gpt_bad "--seed, --threads and --weight-decay >= 0" --weight-decay -1
gpt_bad "--seed, --threads and --weight-decay >= 0" --threads -1
# SIGINT / SIGTERM in the middle of training: the job says where its last checkpoint is, ends by the
# signal (status 130 / 143), and that checkpoint is intact and resumes at the step it named (the old
# runtime died silently on the signal). Job control (set -m) so the background job's SIGINT is not
# ignored, as it would be for `cmd &` in a script.
interrupt_gpt() { # interrupt_gpt SIGNAL STATUS DIR
    local sig=$1 status=$2 dir=$3 pid i
    set -m
    "$RT" scripts/train_gpt.lua --data "$TMP/data" --batch-size 2 --block-size 8 --n-layer 1 --n-embd 16 \
        --n-head 2 --steps 1000000 --ckpt-every 5 --eval-every 100000 --out "$dir" \
        >"$TMP/out" 2>"$TMP/err" </dev/null &
    pid=$!
    set +m
    LAST_CMD="train_gpt.lua --out $dir, then kill -$sig"
    for i in $(seq 1 300); do [ -s "$dir/checkpoint.safetensors" ] && break; sleep 0.1; done
    sleep 0.5
    kill -"$sig" "$pid"
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null && fail "train_gpt did not end within 10 s of SIG$sig"
    wait "$pid"
    RC=$?
    expect_rc "$status"
    expect_err_re "train_gpt: interrupted by SIG$sig at step [0-9]+; $dir/checkpoint.safetensors holds step [0-9]+ \(continue with --resume\)"
    local held
    held=$(sed -n 's/.*holds step \([0-9]*\).*/\1/p' "$TMP/err")
    [ -n "$held" ] || return
    run "$RT" scripts/train_gpt.lua --data "$TMP/data" --batch-size 2 --block-size 8 --n-layer 1 --n-embd 16 \
        --n-head 2 --steps 1000000 --ckpt-every 5 --eval-every 100000 --out "$dir" --resume --stop-at $((held + 1)) \
        --generate 0
    expect_rc 0
    expect_out "resumed from $dir/checkpoint.safetensors at step $held"
}
interrupt_gpt INT 130 "$TMP/gint"
interrupt_gpt TERM 143 "$TMP/gterm"
# a plain script: SIGINT raises "interrupted by SIGINT" in it (its pcall sees it; jit.off: a hook
# point is reached only outside compiled traces), and a JIT-compiled
# loop that never reaches a hook still ends by the signal within the grace time (no hang)
signal_script() { # signal_script SCRIPT-TEXT: start it, SIGINT once it runs, wait at most 10 s
    # the script's first line marks that it runs (the handler is installed before it starts): a
    # fixed sleep could signal a process still starting under load, which the default action kills
    rm -f "$TMP/ready"
    printf 'io.open("%s", "w"):close()\n%s\n' "$TMP/ready" "$1" > "$TMP/sig.lua"
    set -m
    "$RT" "$TMP/sig.lua" >"$TMP/out" 2>"$TMP/err" </dev/null &
    local pid=$! i
    set +m
    LAST_CMD="$1, then kill -INT"
    for i in $(seq 1 300); do [ -e "$TMP/ready" ] && break; sleep 0.05; done
    sleep 0.2
    kill -INT "$pid"
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null && fail "the script did not end within 10 s of SIGINT"
    wait "$pid"
    RC=$?
}
signal_script 'jit.off() local ok, e = pcall(function() local t = {} while true do t[#t % 100 + 1] = tostring(#t) end end)
print("caught", e) os.exit(3)'
expect_rc 3
expect_out_re "caught	(.*: )?interrupted by SIGINT"
signal_script 'while true do end'
expect_rc 130
cli_done
