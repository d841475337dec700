#!/usr/bin/env bash
# gpu_ci.sh: the one command for the GPU machine (run there through the device tool with
# carry=[".deb"]): unpack the Debian packages that scripts/fetch_device_debs.sh downloaded (LuaJIT,
# busted, OpenBLAS, ...) into a private prefix with `dpkg -x` (nothing is installed into /), configure
# with the CUDA backend for sm_90, build, run `ctest -L gpu` and the GPU benchmarks beside their
# PyTorch twins, print a short table, and copy the logs to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_ci_out}
mkdir -p "$OUT"
ROOT=/tmp/debroot
LIBDIR=$ROOT/usr/lib/x86_64-linux-gnu
T0=$(date +%s)
log() { echo "== [$(($(date +%s) - T0))s] $*"; }

log "machine"
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvcc --version | tail -1;
  uname -r; nproc; } 2>&1 | tee "$OUT/machine.txt"

log "unpacking .deb/ into $ROOT"
mkdir -p $ROOT
for f in .deb/*.deb; do dpkg -x "$f" $ROOT || echo "dpkg -x failed: $f"; done
# .pc files say prefix=/usr; point them at the private prefix
sed -i "s|^prefix=/usr\$|prefix=$ROOT/usr|" $LIBDIR/pkgconfig/*.pc $ROOT/usr/share/pkgconfig/*.pc 2>/dev/null
# Debian's zlib headers with the machine's own libz.so.1 (zlib1g-dev's libz.so points into /lib)
ZLIB_SO=$(ls /usr/lib/x86_64-linux-gnu/libz.so.1 /lib/x86_64-linux-gnu/libz.so.1 2>/dev/null | head -1)
[ -n "$ZLIB_SO" ] || ZLIB_SO=$ROOT/lib/x86_64-linux-gnu/libz.so.1
ln -sf "$ZLIB_SO" $LIBDIR/libz.so # FindZLIB then takes the shared library, not libz.a
export PATH=$ROOT/usr/bin:$PATH
export PKG_CONFIG_PATH=$LIBDIR/pkgconfig:$ROOT/usr/share/pkgconfig
export LUA_PATH="$ROOT/usr/share/lua/5.1/?.lua;$ROOT/usr/share/lua/5.1/?/init.lua;;"
export LUA_CPATH="$LIBDIR/lua/5.1/?.so;;"
RTLIBS=$LIBDIR:$LIBDIR/openblas-openmp
export LD_LIBRARY_PATH=$RTLIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
which luajit pkg-config cmake nvcc python3 2>&1 | tee -a "$OUT/machine.txt"

log "configure"
rm -rf build-gpu # a fresh cache: the machine may keep one from an earlier call
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -B build-gpu "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DCMAKE_PREFIX_PATH=$ROOT/usr -DOPENBLAS_LIB=$LIBDIR/openblas-openmp/libopenblas.so \
  -DCBLAS_INCLUDE_DIR=$ROOT/usr/include/x86_64-linux-gnu/openblas-openmp \
  -DZLIB_INCLUDE_DIR=$ROOT/usr/include \
  -DBUSTED_BIN=$ROOT/usr/bin/busted > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
log "build"
if ! cmake --build build-gpu -j"$(nproc)" >> "$OUT/build.log" 2>&1; then
  grep -E "error|Error" -A3 "$OUT/build.log" | head -60
  exit 1
fi
grep -ci "warning" "$OUT/build.log" | sed 's/^/build warnings: /'
RTLUA=build-gpu/bin/ramtorch-lua

log "smoke"
timeout 60 $RTLUA -e 'local torch = require("ramtorch")
print("cuda available", torch.cuda.is_available(), torch.cuda.device_count())
local a = torch.randn({256, 256}, {device = "cuda"})
print("matmul sum", (a:matmul(a)):sum():item(), "cpu", (a:to("cpu"):matmul(a:to("cpu"))):sum():item())' 2>&1 | tee "$OUT/smoke.log"

# GPU_CI_SKIP_STD=1 (opt-in, for a short profiling call): skip the standard benchmarks and ctest -L gpu
log "benchmarks"
: > "$OUT/bench.log"
STD_BENCH="gpu_gemm gpu_memory gpu_overhead gpu_attention"
[ "${GPU_CI_SKIP_STD:-0}" = 1 ] && STD_BENCH=""
for b in $STD_BENCH; do
  echo "-- $b ramtorch" >> "$OUT/bench.log"
  timeout 120 $RTLUA scripts/bench/$b.lua 2>&1 | sed 's/^RESULT /RESULT ramtorch /' | tee -a "$OUT/bench.log"
  echo "-- $b pytorch" >> "$OUT/bench.log"
  timeout 120 env -u LD_LIBRARY_PATH python3 scripts/bench/$b.py 2>&1 | sed 's/^RESULT /RESULT pytorch /' | tee -a "$OUT/bench.log"
done

# optional extra steps (fixtures, main-job timings) run with the same environment and build
if [ -n "${GPU_CI_EXTRA:-}" ]; then log "extra: $GPU_CI_EXTRA"; bash "$GPU_CI_EXTRA"; fi

log "ctest -L gpu"
rc=0
if [ "${GPU_CI_SKIP_STD:-0}" != 1 ]; then
  (cd build-gpu && timeout 300 ctest -L gpu --output-on-failure) > "$OUT/ctest_gpu.log" 2>&1
  rc=$?
fi
tail -80 "$OUT/ctest_gpu.log"

log "table"
awk '/^RESULT/ { k = $3; u = $5 " " $6; if ($2 == "ramtorch") r[k] = $4; else p[k] = $4; unit[k] = $5; order[k] = order[k] ? order[k] : ++n; names[n] = k }
     END { printf "%-16s %12s %12s %8s\n", "benchmark", "ramtorch", "pytorch", "ratio";
           for (i = 1; i <= n; i++) { k = names[i]; rr = r[k]; pp = p[k];
             ratio = (rr + 0 > 0 && pp + 0 > 0) ? sprintf("%.2f", rr / pp) : "-";
             printf "%-16s %12s %12s %8s  %s\n", k, rr, pp, ratio, unit[k] } }' "$OUT/bench.log" | tee "$OUT/table.txt"
log "done (ctest rc=$rc)"
exit $rc
