#!/usr/bin/env bash
# test_args.sh: ramtorch-lua's command line: the arg table and `...`, -e (repeatable, before the
# script, -eCODE), `-` (script from stdin), --help/--version, usage errors (exit 2), script errors
# (exit 1, "ramtorch-lua: <message>" and a traceback on stderr), os.exit(n).
# usage: test_args.sh path/to/ramtorch-lua
set -u
source "$(dirname "$0")/lib.sh"
cli_init "$@"

cat > "$TMP/args.lua" <<'LUA'
print("arg0=" .. arg[0], "n=" .. #arg, "arg1=" .. tostring(arg[1]), "arg2=" .. tostring(arg[2]))
print("dots", select("#", ...), ...)
print("interp", arg[-1] ~= nil)
print("torch", tostring(torch))
LUA
run "$RT" "$TMP/args.lua" one "two words"
expect_rc 0
expect_out "arg0=$TMP/args.lua	n=2	arg1=one	arg2=two words"
expect_out "dots	2	one	two words"
expect_out "interp	true"
# the REPL binds `torch`; scripts get no globals from us
expect_out "torch	nil"

# -e runs before the script, in order, and shares its globals; -eCODE works too
run "$RT" -e 'x = 1' -e 'x = x + 1' -e'x = x * 10' -e 'print("x", x)' "$TMP/args.lua"
expect_rc 0
expect_out "x	20"
expect_out "arg0=$TMP/args.lua	n=0"
expect_out_order "x	20" "arg0="

# -e alone: no script, no REPL (nothing read from stdin)
run_stdin "print('should not run')" "$RT" -e 'print("only e")'
expect_rc 0
expect_out "only e"
expect_no_out "should not run"

# `-`: the script is read from stdin, with its own arguments
run_stdin 'print("from stdin", arg[0], ...)' "$RT" - a b
expect_rc 0
expect_out "from stdin	-	a	b"

# `--` ends the options: a script whose name starts with a dash
cp "$TMP/args.lua" "$TMP/-dash.lua"
cd "$TMP"
run "$RT" -- -dash.lua z
cd - >/dev/null
expect_rc 0
expect_out "arg0=-dash.lua	n=1	arg1=z"

# --help / -h and --version / -v
run "$RT" --help
expect_rc 0
expect_out "usage: ramtorch-lua"
expect_out "-e CODE"
run "$RT" -h
expect_rc 0
expect_out "usage: ramtorch-lua"
run "$RT" --version
expect_rc 0
expect_out_re '^ramtorch-lua [0-9]+\.[0-9]+\.[0-9]+ \(LuaJIT 2\.'
run "$RT" -v
expect_rc 0
expect_out_re '^ramtorch-lua [0-9]'

# usage errors exit 2 with a message on stderr
run "$RT" --no-such-option
expect_rc 2
expect_err "unknown option '--no-such-option'"
run "$RT" -e
expect_rc 2
expect_err "-e needs an argument"

# a runtime error in a script: exit 1, message and traceback on stderr naming the script's lines
cat > "$TMP/fail.lua" <<'LUA'
local function inner() error("boom from inner") end
local function outer() inner() end
print("before")
outer()
print("not reached")
LUA
run "$RT" "$TMP/fail.lua"
expect_rc 1
expect_out "before"
expect_no_out "not reached"
expect_err "ramtorch-lua: $TMP/fail.lua:1: boom from inner"
expect_err "stack traceback:"
expect_err "fail.lua:2: in function 'outer'"
expect_err "fail.lua:4: in main chunk"

# a C-side error from the runtime surfaces with its message
run "$RT" -e 'local torch = require("ramtorch"); local _ = torch.ones(2, 3) + torch.ones(4, 5)'
expect_rc 1
expect_err_re 'ramtorch-lua: \(command line\):1: .*2, ?3.*4, ?5'
expect_err "stack traceback:"

# an -e error stops before the script runs
run "$RT" -e 'error("e first")' "$TMP/args.lua"
expect_rc 1
expect_err "ramtorch-lua: (command line):1: e first"
expect_no_out "arg0="

# syntax errors, a missing script: exit 1 with the message
printf 'x = = 1\n' > "$TMP/syntax.lua"
run "$RT" "$TMP/syntax.lua"
expect_rc 1
expect_err "ramtorch-lua: $TMP/syntax.lua:1:"
run "$RT" "$TMP/does-not-exist.lua"
expect_rc 1
expect_err "ramtorch-lua: cannot open $TMP/does-not-exist.lua"
run "$RT" -e 'x = = 1'
expect_rc 1
expect_err "ramtorch-lua: (command line):1:"

# a non-string error value
run "$RT" -e 'error({})'
expect_rc 1
expect_err "ramtorch-lua: (error object is a table value)"

# error() with no value: exit 1 without a message (as luajit; busted fails this way under Lua 5.1)
run "$RT" -e 'error()'
expect_rc 1
expect_no_err

# os.exit(n) sets the exit status, also from inside the REPL's input
run "$RT" -e 'os.exit(3)'
expect_rc 3
run "$RT" -e 'os.exit(true)'
expect_rc 0
run "$RT" -e 'os.exit(false)'
expect_rc 1
run_stdin 'os.exit(5)' "$RT"
expect_rc 5
run_stdin 'print("hi")' "$RT" -i -e 'os.exit(4)'
expect_rc 4
expect_no_out "hi"

# -i: the REPL after -e / the script, sharing their globals
run_stdin 'y * 2' "$RT" -i -e 'y = 21'
expect_rc 0
expect_out "42"

cli_done
