#!/usr/bin/env bash
# The performance contract in one command: a Release build of the benchmarks in
# build-release/, then bench/compare.py, which runs mproc side by side with its peers
# (raw syscalls, memcpy, a std::thread pool, Python's multiprocessing) and prints the table
# and the goal checks of every row it has a benchmark for (spawn, the queue rows, the pool
# rows apply/async/map/as_completed/map-partial, ...; `python3 bench/compare.py --help`
# lists them): a few minutes on 2 cores, about 2 of them as_completed's Python peer (100k
# ProcessPoolExecutor tasks a round, at ~7k tasks/s).
# The redis-async row starts a redis-server of its own on a free port of 127.0.0.1 (killed
# after the row) and runs mproc::redis::pool beside a raw hiredis Streams farm, Celery and
# RQ on it: ~2-2.5 minutes on 2 cores (the Python workers start afresh each round). It is
# skipped, saying so, when mproc::redis was not built (no hiredis).
# Extra arguments go to compare.py, e.g. `scripts/bench.sh --rounds 9 --rows spawn,ping-pong`.
# Then the curves and the memory table, written into the build dir:
#   bench/curves.py  queue throughput vs message size (8 B to 64 MiB) and pool map throughput
#                    vs workers (1 to 2 x cpu_count()), beside Boost and Python: CSVs and
#                    gnuplot PNGs, about 2-3 minutes on 2 cores;
#   bench/memory.py  an idle pool worker's memory and a queue's as a function of the bytes
#                    buffered in it, beside Python: CSVs and Markdown tables, about 30 s.
# Environment:
#   MPROC_BENCH_CURVES=0      skip the curves and the memory table (compare.py only)
#   MPROC_BENCH_PUBLISH=DIR   also copy the PNGs into DIR (e.g. docs/perf, which the README shows)
# The exit status is compare.py's, or the first failure of the curves or the memory table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/deps.sh
# The plots of the curves; the MPI rows' mpi4py.futures peer; the redis-async row's server,
# hiredis (mproc::redis and the raw farm) and its Celery and RQ peers.
mproc_install_deps gnuplot-nox python3-mpi4py redis-server libhiredis-dev python3-celery python3-rq

build=build-release
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DMPROC_BUILD_TESTS=OFF -DMPROC_BUILD_EXAMPLES=OFF -DMPROC_BUILD_BENCHMARKS=ON -DMPROC_INSTALL=OFF
cmake --build "$build" --target mproc_benchmarks --parallel "$(nproc)"  # every program of bench/
for arg in "$@"; do  # compare.py's --help alone
  if [[ $arg == -h || $arg == --help ]]; then exec python3 bench/compare.py --help; fi
done
status=0
python3 bench/compare.py --build-dir "$build" "$@" || status=$?
if [[ ${MPROC_BENCH_CURVES:-1} != 0 ]]; then
  publish=()
  if [[ -n ${MPROC_BENCH_PUBLISH:-} ]]; then publish=(--publish "$MPROC_BENCH_PUBLISH"); fi
  python3 bench/curves.py --build-dir "$build" "${publish[@]}" || { s=$?; ((status)) || status=$s; }
  python3 bench/memory.py --build-dir "$build" || { s=$?; ((status)) || status=$s; }
fi
exit "$status"
