#!/usr/bin/env bash
# install_deps.sh: the Debian 12 packages ramtorch-lua builds, tests and trains with. Idempotent; needs
# root (or sudo). Used by the README's quick start and by .ci/run.
set -euo pipefail
pkgs=(build-essential cmake pkg-config luajit libluajit-5.1-dev libopenblas-openmp-dev libedit-dev zlib1g-dev
      lua-busted dataset-fashion-mnist fortunes
      clang-format tmux) # tests only: the lint test and the REPL-on-a-terminal test (skipped without)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "install_deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
