#!/usr/bin/env bash
# Builds mproc with its tests, examples and benchmarks, then runs every test under ctest.
#   scripts/test.sh [build-dir [extra cmake options...]]
# e.g. scripts/test.sh build-asan -DMPROC_SANITIZE=address,undefined
# MPROC_CTEST_ARGS adds to ctest's arguments, e.g. MPROC_CTEST_ARGS="-LE mpi".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
mproc_install_deps

build=${1:-build}
shift || true
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DMPROC_WARNINGS_AS_ERRORS=ON \
  -DMPROC_BUILD_TESTS=ON -DMPROC_BUILD_EXAMPLES=ON -DMPROC_BUILD_BENCHMARKS=ON "$@"
cmake --build "$build" --parallel "$(nproc)"
read -r -a extra_ctest_args <<< "${MPROC_CTEST_ARGS:-}"
ctest --test-dir "$build" --output-on-failure --parallel "$(nproc)" "${extra_ctest_args[@]}"
