# lib.sh: helpers for the shell tests of ramtorch-lua (sourced by tests/cli/test_*.sh).
# run CMD... captures stdout, stderr and the exit status; expect_* check them and count failures;
# cli_done prints a summary and exits 1 if anything failed.

cli_init() {
    RT=${1:?usage: $0 path/to/ramtorch-lua [build-dir source-dir]}
    RT=$(cd "$(dirname "$RT")" && pwd)/$(basename "$RT")
    BUILD_DIR=${2:-}
    SOURCE_DIR=${3:-}
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/ramtorch-cli.XXXXXX")
    trap 'rm -rf "$TMP"' EXIT
    FAILS=0
    CHECKS=0
    # the executable must find its modules by itself
    unset LUA_PATH LUA_CPATH LUA_INIT RAMTORCH_LIB
}

# skip the test (exit status 77, which ctest reports as skipped) without Debian's Fashion-MNIST
require_fashion_mnist() {
    if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
        echo "SKIP: dataset-fashion-mnist is not installed"
        exit 77
    fi
}

run() {
    LAST_CMD="$*"
    "$@" >"$TMP/out" 2>"$TMP/err" </dev/null
    RC=$?
}

# run_stdin TEXT CMD...: like run, with TEXT (plus a newline) on stdin
run_stdin() {
    local input=$1
    shift
    LAST_CMD="$* <<< $input"
    printf '%s\n' "$input" | "$@" >"$TMP/out" 2>"$TMP/err"
    RC=$?
}

fail() {
    FAILS=$((FAILS + 1))
    echo "FAIL: $*"
    echo "  command: $LAST_CMD"
    echo "  --- stdout:"
    sed 's/^/  | /' "$TMP/out"
    echo "  --- stderr:"
    sed 's/^/  | /' "$TMP/err"
}

check() { CHECKS=$((CHECKS + 1)); }

expect_rc() {
    check
    [ "$RC" -eq "$1" ] || fail "exit status $RC, expected $1"
}
expect_out() {
    check
    grep -qF -- "$1" "$TMP/out" || fail "stdout lacks: $1"
}
expect_no_out() {
    check
    ! grep -qF -- "$1" "$TMP/out" || fail "stdout should not contain: $1"
}
expect_out_re() {
    check
    grep -qE -- "$1" "$TMP/out" || fail "stdout does not match: $1"
}
expect_err() {
    check
    grep -qF -- "$1" "$TMP/err" || fail "stderr lacks: $1"
}
expect_err_re() {
    check
    grep -qE -- "$1" "$TMP/err" || fail "stderr does not match: $1"
}
expect_no_err() {
    check
    [ ! -s "$TMP/err" ] || fail "stderr should be empty"
}
# expect_out_exact FILE: stdout equals FILE's contents
expect_out_exact() {
    check
    cmp -s "$1" "$TMP/out" || {
        fail "stdout differs from the expected text:"
        diff "$1" "$TMP/out" | sed 's/^/  diff: /'
    }
}
# expect_out_order A B: A's first line in stdout comes before B's
expect_out_order() {
    check
    local a b
    a=$(grep -nF -- "$1" "$TMP/out" | head -1 | cut -d: -f1)
    b=$(grep -nF -- "$2" "$TMP/out" | head -1 | cut -d: -f1)
    [ -n "$a" ] && [ -n "$b" ] && [ "$a" -lt "$b" ] || fail "'$1' should come before '$2' in stdout"
}

cli_done() {
    if [ "$FAILS" -ne 0 ]; then
        echo "$FAILS of $CHECKS checks failed"
        exit 1
    fi
    echo "all $CHECKS checks passed"
    exit 0
}
