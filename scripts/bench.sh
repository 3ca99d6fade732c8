#!/usr/bin/env bash
# The performance contract in one command: a Release build of the benchmarks in
# build-release/, then bench/compare.py, which runs mproc side by side with its peers
# (raw syscalls, memcpy, a std::thread pool, Python's multiprocessing) and prints the table
# and the goal checks of every row it has a benchmark for (spawn, the queue rows, the pool
# rows apply/async/map, ...; `python3 bench/compare.py --help` lists them): about 2 minutes
# on 2 cores.
# Extra arguments go to compare.py, e.g. `scripts/bench.sh --rounds 9 --rows spawn,ping-pong`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/deps.sh
mproc_install_deps gnuplot-nox  # the plots of the curves

build=build-release
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DMPROC_BUILD_TESTS=OFF -DMPROC_BUILD_EXAMPLES=OFF -DMPROC_BUILD_BENCHMARKS=ON -DMPROC_INSTALL=OFF
cmake --build "$build" --target mproc_benchmarks --parallel "$(nproc)"  # every program of bench/
exec python3 bench/compare.py --build-dir "$build" "$@"
