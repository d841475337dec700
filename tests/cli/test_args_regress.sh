#!/usr/bin/env bash
# test_args_regress.sh: review regressions of ramtorch-lua's command line. With -e and no script, the
# options are not script arguments: arg[0] is nil and #arg is 0, as in luajit (arg[-1] is the last
# option); the old table put "-e" and the code at arg[1], arg[2].
# usage: test_args_regress.sh path/to/ramtorch-lua
set -u
source "$(dirname "$0")/lib.sh"
cli_init "$@"

run "$RT" -e 'print("n", #arg, tostring(arg[0]), arg[-1] ~= nil, tostring(arg[1]))'
expect_rc 0
expect_out "n	0	nil	true	nil"

# -e then a script: unchanged (arg[0] the script, its arguments from 1)
printf 'print("s", #arg, arg[1], arg[-2])\n' > "$TMP/s.lua"
run "$RT" -e 'x = 1' "$TMP/s.lua" a
expect_rc 0
expect_out "s	1	a	-e"

cli_done
