#!/usr/bin/env bash
# fetch_device_debs.sh: download (not install) into .deb/ the Debian 12 packages that the GPU machine
# lacks for building ramtorch-lua and running its specs there: LuaJIT, busted and its Lua
# dependencies, OpenBLAS, libedit, zlib headers, pkg-config. Run here (a machine with apt and the
# network); scripts/gpu_ci.sh unpacks them there with `dpkg -x` (that machine has no network).
# .deb/ is git-ignored and travels with run(carry=[".deb"]); keep it under 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deb
pkgs=(luajit libluajit-5.1-2 libluajit-5.1-common libluajit-5.1-dev
      lua-busted lua-cliargs lua-dkjson lua-filesystem lua-luassert lua-mediator lua-penlight lua-say
      lua-system lua-term lua-yaml lua-inifile libyaml-0-2
      libopenblas0-openmp libopenblas-openmp-dev libopenblas-dev libopenblas0 libgfortran5
      libedit2 libedit-dev libbsd0 libmd0 zlib1g zlib1g-dev
      pkg-config pkgconf pkgconf-bin libpkgconf3)
(cd .deb && apt-get download "${pkgs[@]}")
du -sh .deb
