#!/usr/bin/env bash
# test_repl_tty.sh: the REPL on a real terminal (a tmux pane): libedit line editing (cursor
# movement, insertion), history (Up recalls, ~/.ramtorch_history persists across sessions), the
# ">> " continuation prompt, Ctrl-C cancelling the line at the prompt and interrupting a running
# chunk without killing the process, Ctrl-D exiting 0, and running with $HOME unset.
# Skipped (exit 77) when tmux is not installed. Each step waits for its output (polling), so the
# test does not depend on timing.
# usage: test_repl_tty.sh path/to/ramtorch-lua
set -u
source "$(dirname "$0")/lib.sh"
cli_init "$@"

if ! command -v tmux >/dev/null 2>&1; then
    echo "SKIP: tmux not installed (apt-get install tmux)"
    exit 77
fi
unset TMUX
NSESSION=0
SOCK="$TMP/tmux.0.sock"
printf 'set -g history-limit 5000\n' >"$TMP/tmux.conf"
T() { tmux -S "$SOCK" -f "$TMP/tmux.conf" "$@"; }
trap 'T kill-server >/dev/null 2>&1; rm -rf "$TMP"' EXIT
mkdir -p "$TMP/home"

pane() { T capture-pane -p -J -S -1000 -t rt 2>/dev/null >"$TMP/out"; }
# wait_for TEXT [N]: until TEXT appears at least N times (default 1) in the pane, 20 s at most
wait_for() {
    local want=${2:-1} i
    for i in $(seq 200); do
        pane
        [ "$(grep -cF -- "$1" "$TMP/out")" -ge "$want" ] && return 0
        sleep 0.1
    done
    return 1
}
step() { # step DESCRIPTION TEXT [N]
    LAST_CMD=$1
    check
    : >"$TMP/err"
    wait_for "$2" "${3:-1}" || fail "$1: pane never showed '$2' (x${3:-1})"
}
keys() { T send-keys -t rt "$@"; }
# ready: wait until the REPL shows an empty prompt, so nothing is typed ahead of it (libedit reads
# typed-ahead input without its line editor)
ready() {
    local i last
    for i in $(seq 200); do
        pane
        last=$(grep -v '^[[:space:]]*$' "$TMP/out" | tail -1)
        case "$last" in ">" | "> " | ">>" | ">> ") return 0 ;; esac
        sleep 0.1
    done
    LAST_CMD="waiting for a prompt"
    check
    fail "no empty prompt"
}
text() { # text STRING: type STRING at a fresh prompt
    ready
    T send-keys -t rt -l -- "$1"
}
more() { T send-keys -t rt -l -- "$1"; } # type into the line being edited
start() { # start ENV-ARGS...: a fresh session running the REPL
    T kill-server >/dev/null 2>&1
    NSESSION=$((NSESSION + 1))
    SOCK="$TMP/tmux.$NSESSION.sock" # a new server each time: no race with the old one's exit
    STATUS="$TMP/status.$NSESSION"
    # the exit status comes back through a file: tmux's own pane_dead_status is sometimes never
    # filled in (tmux 3.3). The shell traps SIGINT so Ctrl-C reaches only the REPL's handling.
    T new-session -d -s rt -x 150 -y 50 env "$@" TERM=xterm LANG=C.UTF-8 RT_STATUS="$STATUS" \
        sh -c 'trap : INT; "$0"; echo "$?" >"$RT_STATUS"' "$RT"
}
exit_status() { # after Ctrl-D: the REPL's exit status
    local i
    for i in $(seq 100); do
        [ -s "$STATUS" ] && { cat "$STATUS"; return; }
        sleep 0.1
    done
    echo "still running"
}

# ---- session 1 ---------------------------------------------------------------------------------
start HOME="$TMP/home"
step "banner" "REPL"

# Ctrl-C at the prompt drops the typed line (it must never run) and gives a fresh prompt
text 'error("cancelled line ran")'
step "typed line echoed" 'error("cancelled line ran")'
keys C-c
step "Ctrl-C shows ^C" "^C"
text 'y = 5'; keys Enter
text 'y * 2'; keys Enter
step "evaluates after Ctrl-C" "10"

# line editing: Ctrl-A (start of line) and Left move the cursor; typing inserts there
text '9 + y'; keys C-a; more '1'; keys Enter
step "Ctrl-A + insert gives 19 + y" "24"
text '3 * y'; keys Left Left Left Left; more '0'; keys Enter
step "Left + insert gives 30 * y" "150"
# history: Up recalls the previous line
ready; keys Up; step "Up shows the previous line" "> 30 * y" 2
keys Enter
step "recalled line runs again" "150" 2

# multi-line chunk with the continuation prompt
text 'function h()'; keys Enter
step "continuation prompt" ">> "
text 'return 77'; keys Enter; text 'end'; keys Enter
text 'h()'; keys Enter
step "multi-line function" "77"

# tensors pretty-print
text 'torch.ones(2, 2)'; keys Enter
step "tensor value" "tensor([[1., 1.],"

# an error prints message + traceback, the loop goes on
text 'error("repl boom")'; keys Enter
step "error message" "stdin:1: repl boom"
step "traceback" "stack traceback:"
text '"still alive"'; keys Enter
step "loop continues after an error" "still alive" 2

# Ctrl-C while a chunk runs (interpreted, so the hook fires) interrupts it; the REPL stays
text 'jit.off(); while true do end'; keys Enter
sleep 0.5
keys C-c
step "running chunk interrupted" "interrupted!"
text '"after interrupt"'; keys Enter
step "REPL alive after interrupt" "after interrupt" 2

# Ctrl-D exits with status 0 and the history file holds the session's lines
ready; keys C-d
LAST_CMD="Ctrl-D"
check
st=$(exit_status)
[ "$st" = "0" ] || fail "exit status after Ctrl-D: '$st', expected 0"
check
if [ -f "$TMP/home/.ramtorch_history" ]; then
    cp "$TMP/home/.ramtorch_history" "$TMP/out"
    # libedit stores lines strvis-encoded (space = \040, newline = \012)
    grep -qF '30\040*\040y' "$TMP/out" || fail "history file lacks '30 * y'"
    grep -qF 'function\040h()\012return\04077\012end' "$TMP/out" ||
        fail "history file lacks the multi-line chunk as one entry"
    ! grep -qF 'cancelled' "$TMP/out" || fail "history file holds the cancelled line"
else
    fail "no history file at \$HOME/.ramtorch_history"
fi

# ---- session 2: history persists -----------------------------------------------------------------
start HOME="$TMP/home"
step "second banner" "REPL"
ready; keys Up
step "history from the file" '> "after interrupt"'
keys Up Up
step "older entries from the file" '> "still alive"'
keys Enter
step "recalled entry runs" 'still alive' 2
ready; keys C-d
exit_status >/dev/null

# ---- session 3: $HOME unset: no history file, everything else works ----------------------------------
start -u HOME
step "banner without HOME" "REPL"
text '6 * 7'; keys Enter
step "evaluates without HOME" "42"
ready; keys C-d
LAST_CMD="Ctrl-D without HOME"
check
st=$(exit_status)
[ "$st" = "0" ] || fail "exit status without HOME: '$st', expected 0"

cli_done
