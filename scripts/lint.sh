#!/usr/bin/env bash
# The house's tooling (STYLE.md "Tooling in the repo"), with the versions of Debian 12:
#   format  clang-format-14 --dry-run --Werror on the C++ files of src/ include/ tests/
#           examples/ bench/ (.clang-format): fails on any diff.
#   build   a clang++-14 build of everything in build-clang, warnings as errors, which also
#           writes the compile_commands.json that tidy reads. Build only: the g++ build of
#           scripts/test.sh runs the tests.
#   tidy    clang-tidy-14 (.clang-tidy) on every src/**/*.cpp, and through them mproc's
#           own headers, one process per core: fails on any finding.
#   scripts/lint.sh [format|build|tidy ...]   (default: all three, in that order)
# Every part asked for runs even when an earlier one fails, so one run shows every problem;
# the script fails if any did. Each part's time goes to stderr: on the 2-core development
# VM (shared with other builds) format took 2 s, build 4.5 min, tidy 3 min (2.3 min of
# which is clang-analyzer-*).
# To fix a format diff: clang-format-14 -i <file> (or git clang-format-14 for a change).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
mproc_install_deps clang-14 clang-format-14 clang-tidy-14

parts=("$@")
((${#parts[@]})) || parts=(format build tidy)
build=build-clang
jobs=$(nproc)

lint_format() {
  find src include tests examples bench -type f \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' -o -name '*.inl' \) -print0 |
    xargs -0 -r -n 16 -P "$jobs" clang-format-14 --style=file --dry-run --Werror
}

lint_configure() {
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_EXPORT_COMPILE_COMMANDS=ON -DMPROC_WARNINGS_AS_ERRORS=ON \
    -DMPROC_BUILD_TESTS=ON -DMPROC_BUILD_EXAMPLES=ON -DMPROC_BUILD_BENCHMARKS=ON >/dev/null
}

lint_build() {
  lint_configure && cmake --build "$build" --parallel "$jobs"
}

# clang-tidy itself rather than run-clang-tidy-14, which cannot pass --warnings-as-errors.
lint_tidy() {
  [[ -f $build/compile_commands.json ]] || lint_configure
  find src -type f -name '*.cpp' -print0 |
    xargs -0 -r -n 1 -P "$jobs" clang-tidy-14 -p "$build" --quiet --warnings-as-errors='*' 2>&1 |
    { grep -v '^[0-9]* warnings\? \(and [0-9]* errors\? \)\?generated\.$' || true; }
}

for part in "${parts[@]}"; do
  case $part in
    format | build | tidy) ;;
    *) echo "lint.sh: unknown part '$part'; the parts are format, build and tidy" >&2; exit 2 ;;
  esac
done

failed=()
for part in "${parts[@]}"; do
  start=$SECONDS
  if "lint_$part"; then status=ok; else status=FAILED; failed+=("$part"); fi
  echo "lint.sh: $part $status in $((SECONDS - start)) s" >&2
done
if ((${#failed[@]})); then
  echo "lint.sh: failed: ${failed[*]}" >&2
  exit 1
fi
