#!/usr/bin/env bash
# check_format.sh: fails (exit 1) listing the C/CUDA sources under runtime/, kernels/ and tests/c/
# that clang-format (with the repository's .clang-format) would change. Run as the ctest "lint".
# Fix a file with: clang-format -i FILE
# usage: scripts/check_format.sh [SOURCE_DIR]   (exit 77 = skipped: clang-format not installed)
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"
cf=${CLANG_FORMAT:-clang-format}
if ! command -v "$cf" >/dev/null 2>&1; then
    echo "SKIP: $cf not found (apt-get install clang-format)"
    exit 77
fi
mapfile -t files < <(find runtime kernels tests/c -type f \
    \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) 2>/dev/null | sort)
bad=()
for f in "${files[@]}"; do
    "$cf" --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -ne 0 ]; then
    echo "not clang-formatted (${#bad[@]} of ${#files[@]} files; $("$cf" --version | head -1)):"
    printf '  %s\n' "${bad[@]}"
    echo "fix with: clang-format -i <file>"
    exit 1
fi
echo "clang-format: all ${#files[@]} files formatted"
