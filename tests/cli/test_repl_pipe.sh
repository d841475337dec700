#!/usr/bin/env bash
# test_repl_pipe.sh: the REPL driven through a pipe (no terminal: no prompts, plain line reads).
# Expression values print (tab-separated, tensors through tostring, nothing for nil), `=expr`,
# multi-line chunks, an error prints message + traceback and the loop carries on, EOF exits 0.
# usage: test_repl_pipe.sh path/to/ramtorch-lua
set -u
source "$(dirname "$0")/lib.sh"
cli_init "$@"

# stdout must be exactly this: every value printed, nothing else (no banner, no prompts)
cat > "$TMP/input.lua" <<'LUA'
1 + 1
=2 * 3
"a", 2, true
1, nil, 3
nil
print("printed")
local hidden = 5
x = 10
x
function double(v)
  return v * 2
end
double(x)
t = {
  1,
  2,
}
#t
"con" ..
  "tinued"
error("oops in repl")
"after error"
no_such_function()
x + 1
y = = 2
"after syntax error"
function f() return 1, 2, 3 end
f()
torch.tensor({{1.5, 2}, {3, 4}})
torch.arange(6):view(2, 3):sum()
type(torch)
1 -- a trailing comment
setmetatable({}, {__tostring = function() return "custom" end})
torch.zeros(2, 3).shape
{name = "w", sizes = {4, 5}}
LUA
cat > "$TMP/expected" <<'TXT'
2
6
a	2	true
1	nil	3
printed
10
20
2
continued
after error
11
after syntax error
1	2	3
tensor([[1.5000, 2.0000],
        [3.0000, 4.0000]])
tensor(15)
table
1
custom
{2, 3}
{name = "w", sizes = {4, 5}}
TXT
LAST_CMD="$RT < input.lua"
"$RT" <"$TMP/input.lua" >"$TMP/out" 2>"$TMP/err"
RC=$?
expect_rc 0
expect_out_exact "$TMP/expected"
# errors: message and traceback on stderr, then the loop went on (checked by stdout above)
expect_err "ramtorch-lua: stdin:1: oops in repl"
expect_err "stack traceback:"
expect_err "stdin:1: in main chunk"
expect_err "attempt to call global 'no_such_function'"
expect_err "stdin:1: unexpected symbol near '='"

# a multi-line chunk that never ends: EOF drops it and exits 0
run_stdin 'function g()' "$RT"
expect_rc 0
expect_no_err

# -i after a script shares its globals; the script's own locals stay private
printf 'shared = 7\nlocal private = 8\n' > "$TMP/setup.lua"
run_stdin 'shared, private' "$RT" -i "$TMP/setup.lua"
expect_rc 0
expect_out "7	nil"

cli_done
