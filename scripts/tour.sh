#!/usr/bin/env bash
# Builds the examples and runs the tour: the tutorial's examples in order, in C++.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
mproc_install_deps

build=build-tour
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMPROC_BUILD_TESTS=OFF -DMPROC_BUILD_EXAMPLES=ON -DMPROC_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build" --target mproc_example_tour --parallel "$(nproc)" >/dev/null
exec "$build/examples/tour"
