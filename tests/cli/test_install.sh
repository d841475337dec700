#!/usr/bin/env bash
# test_install.sh: `cmake --install` into a temporary prefix (and a DESTDIR staging root) gives a
# ramtorch-lua that finds its Lua modules and libramtorch by itself (no LUA_PATH, no RAMTORCH_LIB,
# run from another directory), and uses the installed copies rather than the build tree.
# usage: test_install.sh path/to/ramtorch-lua BUILD_DIR SOURCE_DIR
set -u
source "$(dirname "$0")/lib.sh"
cli_init "$@"
[ -n "$BUILD_DIR" ] || { echo "usage: $0 ramtorch-lua BUILD_DIR SOURCE_DIR"; exit 2; }

PROBE='local torch = require("ramtorch")
print(torch.ones(2))
print("lib=" .. package.loaded["ramtorch.paths"].lib)
print("mod=" .. package.searchpath("ramtorch", package.path))
print("cdef=" .. package.searchpath("ramtorch.cdef", package.path))
print("path=" .. package.path)'

check_installed() { # check_installed PREFIX-AS-SEEN-ON-DISK
    local p=$1
    cd /
    run "$p/bin/ramtorch-lua" -e "$PROBE"
    cd - >/dev/null
    expect_rc 0
    expect_out "tensor([1., 1.])"
    expect_out_re "^lib=$p/lib[^ ]*/libramtorch\.so$"
    expect_out "mod=$p/share/ramtorch/lua/ramtorch/init.lua"
    expect_out "cdef=$p/share/ramtorch/lua/ramtorch/cdef.lua"
    # nothing from the build or source tree on the module path
    check
    ! grep -q "^path=.*\($BUILD_DIR\|$SOURCE_DIR\)" "$TMP/out" ||
        fail "the installed ramtorch-lua searches the build/source tree"
    # the REPL of the installed binary binds torch
    run_stdin 'torch.zeros(3)' "$p/bin/ramtorch-lua"
    expect_rc 0
    expect_out "tensor([0., 0., 0.])"
}

# --prefix
LAST_CMD="cmake --install $BUILD_DIR --prefix $TMP/prefix"
check
cmake --install "$BUILD_DIR" --prefix "$TMP/prefix" >"$TMP/out" 2>"$TMP/err" || fail "cmake --install failed"
check_installed "$TMP/prefix"

# DESTDIR staging (as a package build does): the staged tree works where it lies
LAST_CMD="DESTDIR=$TMP/stage cmake --install $BUILD_DIR --prefix /opt/ramtorch"
check
DESTDIR="$TMP/stage" cmake --install "$BUILD_DIR" --prefix /opt/ramtorch >"$TMP/out" 2>"$TMP/err" ||
    fail "cmake --install with DESTDIR failed"
check_installed "$TMP/stage/opt/ramtorch"

cli_done
