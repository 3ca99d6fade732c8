#!/usr/bin/env bash
# Runs the tutorial's example programs under valgrind memcheck and fails on any error in
# any of their processes.
#   scripts/valgrind.sh [build-dir]        (default build-valgrind)
#
# valgrind has no pidfd_open (it answers ENOSYS), so these runs also exercise mproc's
# pid-based fallback for children (src/process/child_handle.hpp).
#
# Every process is checked, not only the example's main one:
# - forked children always run under valgrind (fork copies the valgrind'd process), and
#   --log-file=...%p gives each its own log. The examples' children end with _exit() or
#   by a signal, so the exit code of the top program (--error-exitcode) says nothing about
#   them: the logs are read afterwards, and any "ERROR SUMMARY" above 0 fails the run. A
#   process killed by SIGKILL writes no summary: its log must then hold no error report.
# - --trace-children=yes follows exec(2) too, so that a program an example starts (the
#   tour execs each example) is checked as well.
# - Leaks: --errors-for-leak-kinds=definite. A forked child that _exit()s leaves whatever
#   its stack frames held reachable, not lost, and is not reported.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
mproc_install_deps valgrind

build=${1:-build-valgrind}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DMPROC_WARNINGS_AS_ERRORS=ON \
  -DMPROC_BUILD_TESTS=OFF -DMPROC_BUILD_EXAMPLES=ON -DMPROC_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build" --target mproc_example_tour --parallel "$(nproc)" >/dev/null

# The tour execs every example in turn (examples/CMakeLists.txt), each under valgrind too
# (--trace-children=yes), pools included: their zygote uses the same fallback.
examples=(tour)

logs="$build/valgrind-logs"
rm -rf "$logs"
mkdir -p "$logs"
suppressions=scripts/valgrind.supp

failed=()
for example in "${examples[@]}"; do
  mkdir -p "$logs/$example"
  echo "=== valgrind: $example"
  status=0
  valgrind --tool=memcheck --error-exitcode=99 \
    --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite \
    --trace-children=yes --track-fds=no --num-callers=30 \
    --suppressions="$suppressions" \
    --log-file="$logs/$example/%p.log" \
    "$build/examples/$example" >"$logs/$example/output.txt" 2>&1 || status=$?
  bad=()
  for log in "$logs/$example"/*.log; do
    if grep -q "ERROR SUMMARY: [1-9]" "$log"; then
      bad+=("$log")
    elif ! grep -q "ERROR SUMMARY:" "$log" && grep -qE "^==[0-9]+==    (at|by) 0x" "$log"; then
      bad+=("$log")  # killed before its summary, after reporting an error
    fi
  done
  if ((status != 0 || ${#bad[@]} != 0)); then
    echo "valgrind: $example FAILED (exit status $status)"
    sed 's/^/  | /' "$logs/$example/output.txt"
    for log in "${bad[@]}"; do
      echo "  --- $log"
      sed 's/^/  | /' "$log"
    done
    failed+=("$example")
  else
    echo "valgrind: $example clean ($(ls "$logs/$example"/*.log | wc -l) processes)"
  fi
done

if ((${#failed[@]} != 0)); then
  echo "valgrind: ${#failed[@]} example(s) with errors: ${failed[*]}" >&2
  exit 1
fi
echo "valgrind: all ${#examples[@]} examples clean"
