#!/usr/bin/env bash
# Builds mproc's tests under ThreadSanitizer and runs those that use threads; fails on any
# ThreadSanitizer report, in the test process or in any process it forks.
#   scripts/tsan.sh [build-dir]        (default build-tsan)
#
# What runs (the `tests` regex below):
# - integration.Pool.*, integration.PoolMap.*: the pool's result and monitor threads, callbacks,
#   map feeds submitting from the result thread while close()/terminate() run, concurrent
#   submitters (FourThreadsSubmitAtOnce), threads blocked in get().
# - integration.Process.*, integration.Runtime.*: the runtime's reaper thread (hand-offs),
#   threads starting and joining at once, signals during timed joins; and the same on the
#   pid fallback (nopidfd.*), whose watcher threads are shared with fork handlers.
# - pipe tests where two threads share a connection or a thread signals the other.
# - unit.Channel.Threads*: producer and consumer threads on one queue channel; the queue
#   lane tests where threads of one producer share its lane (a biased_mutex, whose bias
#   the second thread revokes), and unit.BiasedMutex.* itself.
# - unit sync tests with threads (mutex, semaphore, event, condition, barrier), and the
#   one integration sync test that has a thread.
# Left out: unit.SyncHandles.*, which lock a mutex through one mapping of its shared
# memory and unlock it through another; TSan keys a mutex by address and reports "unlock
# of an unlocked mutex". They run under ASan in scripts/test.sh, as do the stress tests
# (minutes long even without TSan's 5-15x). The other tests are single-threaded
# processes, where TSan has nothing to check.
#
# TSAN_OPTIONS:
# - die_after_fork=0: mproc forks from multi-threaded programs by design (the fork
#   handlers keep its own locks consistent), and a child may start threads (a nested
#   pool, the reaper); TSan would otherwise kill such a child.
# - handle_segv=0: a pool test makes a worker raise(SIGSEGV) and expects the worker to die
#   by that signal; TSan's handler would turn it into exit code 66 (ASan builds are
#   handled in pool_test.cpp by __SANITIZE_ADDRESS__).
# - atexit_sleep_ms=0: TSan otherwise sleeps a second in every program's exit, which the
#   tests that time a helper program's exit rule would take for mproc's daemon grace.
# - suppressions=scripts/tsan.supp: false positives of uninstrumented libstdc++, each
#   explained there.
# - log_path: each process writes its reports to its own file, so that a report from a
#   forked child (which ends with _exit and whose exit code may be expected to be
#   anything) is seen too. Any file there fails the run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
mproc_install_deps

build=${1:-build-tsan}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DMPROC_WARNINGS_AS_ERRORS=ON -DMPROC_SANITIZE=thread \
  -DMPROC_BUILD_TESTS=ON -DMPROC_BUILD_EXAMPLES=OFF -DMPROC_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build" --target mproc_integration_tests mproc_unit_tests --parallel "$(nproc)"

tests='^(integration\.(Pool|PoolMap|PoolCancel|PoolFutures|PoolImap|PoolStateful|ThreadPool|Process|Runtime|WaitReady)\.'
tests+='|nopidfd\.(Process|Runtime|Pool)\.'  # nopidfd.Pool.*: once the pool adopts child_handle
tests+='|integration\.pipe\.(SecondConcurrentSender|OneSenderAndOneReceiverThread|SignalsDoNotShortenOrStretchPollTimeout|PeerKilledWhileRecvWaits)'
tests+='|integration\.Sync\.ConditionSlotsGrownByOneProcessServeAnother'
tests+='|unit\.Channel\.Threads'
tests+='|integration\.QueueLanes\.(ThreadsOfOneProducerEachKeepTheirOrder|ThreadsOfOneProcessShareItsLane|PutsOfOneProcessKeepTheirOrderAcrossItsThreads)'
tests+='|unit\.BiasedMutex\.'
tests+='|unit\.(Mutex|RecursiveMutex|Semaphore|BoundedSemaphore|Event|Condition|Barrier)\.)'

reports="$PWD/$build/tsan-reports"
rm -rf "$reports"
mkdir -p "$reports"
status=0
TSAN_OPTIONS="die_after_fork=0 handle_segv=0 atexit_sleep_ms=0 second_deadlock_stack=1 suppressions=$PWD/scripts/tsan.supp log_path=$reports/tsan ${TSAN_OPTIONS:-}" \
  ctest --test-dir "$build" -R "$tests" --output-on-failure --parallel "$(nproc)" || status=$?

if compgen -G "$reports/tsan.*" >/dev/null; then
  echo "tsan: ThreadSanitizer reports:" >&2
  cat "$reports"/tsan.* >&2
  exit 1
fi
exit "$status"
