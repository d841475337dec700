#!/usr/bin/env bash
# test_train_gpt.sh: review regressions of the second job, scripts/train_gpt.lua, on a small made-up
# fortune folder. User mistakes end with a one-line message and no Lua traceback: an argument that is
# not an option, --steps 1.5, --steps nan, --top-k 0 (the old script trained the whole run and then
# crashed in generate), --eval-batches 0 (the old script printed val_loss nan), --n-head that does not
# divide --n-embd, an unknown --device, --out that cannot be a folder (the old script trained, then
# crashed saving), a --resume with other model flags, another vocabulary or a corrupt checkpoint.
# A run stopped with --stop-at and resumed prints the same losses as the run that did not stop (the
# old script restarted the shown running loss from scratch) and generates the same text.
# usage: test_train_gpt.sh path/to/ramtorch-lua build-dir source-dir
set -u
source "$(dirname "$0")/lib.sh"
cli_init "$@"
cd "$SOURCE_DIR" || exit 1

expect_no_traceback() {
    check
    ! grep -q "stack traceback" "$TMP/err" || fail "stderr has a Lua traceback"
}

mkdir -p "$TMP/data" "$TMP/data2"
for i in $(seq 1 60); do
    printf 'The quick brown fox %d jumps over the lazy dog.\n%%\nPack my box with five dozen liquor jugs.\n%%\n' "$i"
done > "$TMP/data/f"
# the same number of distinct characters, one of them different ('z' -> 'Z')
tr 'z' 'Z' < "$TMP/data/f" > "$TMP/data2/f"

GPT=(scripts/train_gpt.lua --data "$TMP/data" --batch-size 4 --block-size 8 --n-layer 1 --n-embd 16 --n-head 2
     --eval-every 5 --eval-batches 2 --generate 30 --dropout 0.1)

bad() { # bad RC MESSAGE ARGS...: the job refuses ARGS with RC and MESSAGE on stderr, no traceback
    local rc=$1 msg=$2
    shift 2
    run "$RT" "${GPT[@]}" --out "$TMP/bad" "$@"
    expect_rc "$rc"
    expect_err "$msg"
    expect_no_traceback
    expect_no_out "train ["
}
bad 2 "unexpected argument '-s'" -s 3
bad 2 "option --steps expects an integer, got '1.5'" --steps 1.5
bad 2 "option --steps expects a number, got 'nan'" --steps nan
bad 2 "option --out needs a value" --steps 3 --out --resume
bad 2 "--top-k must be >= 1" --steps 3 --top-k 0
bad 2 "--eval-batches" --steps 3 --eval-batches 0
bad 1 "train_gpt: GPT: n_embd (16) must be divisible by n_head (3)" --steps 3 --n-head 3
bad 1 "train_gpt: to: expected a device" --steps 3 --device cdu
bad 1 "too long for the" --steps 3 --block-size 100000
run "$RT" "${GPT[@]}" --steps 3 --out /etc/passwd
expect_rc 1
expect_err "--out: cannot create the folder /etc/passwd"
expect_no_traceback
expect_no_out "train ["

# the whole run, and the same run stopped at step 7 and resumed
run "$RT" "${GPT[@]}" --steps 20 --out "$TMP/full"
expect_rc 0
grep -o '^train \[.*loss [0-9.]* lr [0-9.]*\( val [0-9.]*\)\?' "$TMP/out" | sed -n '4,$p' > "$TMP/full.losses"
sed -n '/---- generated/,$p' "$TMP/out" > "$TMP/full.tail"
run "$RT" "${GPT[@]}" --steps 20 --out "$TMP/part" --stop-at 7
expect_rc 0
run "$RT" "${GPT[@]}" --steps 20 --out "$TMP/part" --resume
expect_rc 0
expect_out "resumed from $TMP/part/checkpoint.safetensors at step 7"
grep -o '^train \[.*loss [0-9.]* lr [0-9.]*\( val [0-9.]*\)\?' "$TMP/out" > "$TMP/part.losses"
sed -n '/---- generated/,$p' "$TMP/out" > "$TMP/part.tail"
check
[ -s "$TMP/full.losses" ] && cmp -s "$TMP/full.losses" "$TMP/part.losses" || {
    fail "the resumed run's losses differ from the uninterrupted run's"
    diff "$TMP/full.losses" "$TMP/part.losses" | sed 's/^/  diff: /'
}
check
grep -q "val_loss" "$TMP/full.tail" && cmp -s "$TMP/full.tail" "$TMP/part.tail" || fail "generated text or val_loss differ"
check
cmp -s "$TMP/full/model.safetensors" "$TMP/part/model.safetensors" || fail "model.safetensors differ"

# resuming with a larger --steps stretches the cosine schedule to the new end (it used to keep the
# first run's T_max and swing the learning rate back up past the old end)
run "$RT" "${GPT[@]}" --steps 20 --out "$TMP/longer" --stop-at 7
expect_rc 0
run "$RT" "${GPT[@]}" --steps 30 --out "$TMP/longer" --resume
expect_rc 0
expect_err "--steps 30 differs from the first run's 20: the cosine schedule now ends at step 30"
tr '\r' '\n' < "$TMP/out" | grep -o '^train \[[#.]*\] [0-9]*/30 loss [0-9.]* lr [0-9.]*' |
    awk '{ split($3, a, "/"); if (a[1] >= 20) print $7 }' > "$TMP/longer.lr"
check
[ "$(wc -l < "$TMP/longer.lr")" -ge 2 ] && sort -g -r -c "$TMP/longer.lr" 2> /dev/null &&
    [ "$(tail -1 "$TMP/longer.lr")" = "0.0003" ] ||
    fail "learning rate after step 20 of the longer run is not decreasing to 0.0003: $(tr '\n' ' ' < "$TMP/longer.lr")"

# resuming with other flags, another vocabulary, a corrupt checkpoint: a message, no traceback
run "$RT" "${GPT[@]}" --steps 20 --out "$TMP/part" --resume --n-embd 32
expect_rc 1
expect_err "train_gpt: --resume: Error(s) in loading state_dict for GPT"
expect_no_traceback
run "$RT" "${GPT[@]}" --steps 20 --out "$TMP/part" --resume --data "$TMP/data2"
expect_rc 1
expect_err "was trained on another vocabulary"
expect_no_traceback
mkdir -p "$TMP/corrupt"
echo garbage > "$TMP/corrupt/checkpoint.safetensors"
run "$RT" "${GPT[@]}" --steps 20 --out "$TMP/corrupt" --resume
expect_rc 1
expect_err "train_gpt: --resume: load_safetensors:"
expect_no_traceback

cli_done
