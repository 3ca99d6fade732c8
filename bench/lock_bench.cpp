// The lock rows: lock/unlock pairs per second of mproc::mutex beside raw pthread mutexes
// in shared memory (Python's multiprocessing.Lock is in bench/lock_bench.py), one row per
// run (--row):
//   lock-uncontended  one process locks and unlocks in a loop; nobody else uses the lock.
//   lock-contended    two processes (the parent and a forked child) do the same loop on
//                     one lock at once.
// Contenders:
//   mproc            mproc::mutex (robust, process-shared, owner-tracked, spins briefly
//                    before sleeping when contended)
//   pthread_pshared  a PTHREAD_PROCESS_SHARED pthread_mutex_t in MAP_SHARED memory: the
//                    least a process-shared lock costs (not robust: a holder that dies
//                    deadlocks everyone)
//   pthread_robust   the same, also PTHREAD_MUTEX_ROBUST: what mproc::mutex is built on
//
// Output (stdout), CSV, one line per contender per round after a header:
//   round,contender,pairs_per_s
// Each round runs every contender over --iterations pairs (contended: per process), in
// --slices sessions that alternate between the contenders (A B, B A, ...), rounds
// alternating which one starts, as in bench/spawn_bench.cpp. A contended session forks its
// child first (not timed); both processes wait at a start line, the clock runs from the
// start to the moment the later of the two finishes, and the rate counts both processes'
// pairs. Every pair increments a counter inside the critical section; a session checks
// that it counted every pair (a lock that lets two in at once loses increments) and exits
// 2 if not.
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "mproc/process.hpp"
#include "mproc/sync.hpp"

namespace {

using bench::clock_type;

constexpr bench::program program{"lock_bench",
                                 "usage: mproc_lock_bench --row lock-uncontended|lock-contended [--rounds R]\n"
                                 "         [--iterations N] [--slices S] [--start-round K] [--only CONTENDER]\n"
                                 "  R rounds (default 7). Per round each contender does N lock/unlock pairs (per\n"
                                 "  process when contended; defaults 10000000 and 1000000) in S sessions (default\n"
                                 "  2) that alternate between the contenders. Rounds are numbered from K (default\n"
                                 "  0). Contenders: mproc, pthread_pshared, pthread_robust; --only runs one.\n"
                                 "Prints CSV: round,contender,pairs_per_s\n"};

bench::round_options parse(int argc, char** argv) {
  bench::round_options o;
  program.parse(argc, argv, o);
  if (o.row != "lock-uncontended" && o.row != "lock-contended") program.usage(2);
  if (o.iterations == 0) o.iterations = o.row == "lock-uncontended" ? 10'000'000 : 1'000'000;
  if (o.slices == 0) o.slices = 2;
  return o;
}

// What both processes of a session see: the raw peers' mutexes, the start line, the
// child's finishing time and the counter the critical sections increment.
struct shared_area {
  pthread_mutex_t pshared;
  pthread_mutex_t robust;
  alignas(64) std::atomic<int> ready;
  std::atomic<int> go;
  std::atomic<std::int64_t> child_done_ns;
  alignas(64) long counter;
};

shared_area* area = nullptr;

void check(int r, const char* what) {
  if (r != 0) program.die(std::string(what) + ": " + std::strerror(r));
}

void init_area() {
  void* p = ::mmap(nullptr, sizeof(shared_area), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) program.die_errno("mmap");
  area = new (p) shared_area{};
  pthread_mutexattr_t attr;
  ::pthread_mutexattr_init(&attr);
  ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  check(::pthread_mutex_init(&area->pshared, &attr), "pthread_mutex_init");
  ::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  check(::pthread_mutex_init(&area->robust, &attr), "pthread_mutex_init (robust)");
  ::pthread_mutexattr_destroy(&attr);
}

struct raw_lock {
  pthread_mutex_t* m;
  void lock() { ::pthread_mutex_lock(m); }
  void unlock() { ::pthread_mutex_unlock(m); }
};

// The loop every contender runs, inlined per lock type.
template <class Lock>
void pairs(Lock& lock, long n) {
  for (long i = 0; i < n; ++i) {
    lock.lock();
    ++area->counter;
    lock.unlock();
  }
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch()).count();
}

// One session: `n` pairs in this process, and as many in a child when contended. Returns
// the seconds from the start line to the last finish.
template <class Lock>
double session(Lock lock, long n, bool contended) {
  area->counter = 0;
  if (!contended) {
    const auto t0 = clock_type::now();
    pairs(lock, n);
    const double s = std::chrono::duration<double>(clock_type::now() - t0).count();
    if (area->counter != n) program.die("the lock lost increments");
    return s;
  }
  area->ready.store(0);
  area->go.store(0);
  mproc::process child = bench::start_child([lock, n]() mutable {
    area->ready.store(1);
    while (area->go.load(std::memory_order_acquire) == 0) {
    }
    pairs(lock, n);
    area->child_done_ns.store(now_ns());
  });
  while (area->ready.load() == 0) {
  }
  const std::int64_t t0 = now_ns();
  area->go.store(1, std::memory_order_release);
  pairs(lock, n);
  const std::int64_t parent_done = now_ns();
  child.join();
  if (child.exitcode() != 0) program.die("contended child failed");
  if (area->counter != 2 * n) program.die("the lock lost increments: two processes were inside at once");
  return static_cast<double>(std::max(parent_done, area->child_done_ns.load()) - t0) / 1e9;
}

struct contender {
  const char* name;
  double (*run)(long n, bool contended);
};

mproc::mutex* mproc_lock = nullptr;

const contender contenders[] = {
    {"mproc", [](long n, bool c) { return session(*mproc_lock, n, c); }},
    {"pthread_pshared", [](long n, bool c) { return session(raw_lock{&area->pshared}, n, c); }},
    {"pthread_robust", [](long n, bool c) { return session(raw_lock{&area->robust}, n, c); }},
};

}  // namespace

int main(int argc, char** argv) {
  const bench::round_options o = parse(argc, argv);
  if (!bench::any_selected(contenders, o.only)) program.die("no contender named '" + std::string(o.only) + "'");
  const bool contended = o.row == "lock-contended";
  try {
    init_area();
    mproc::mutex lock;
    mproc_lock = &lock;
    // Warm-up: fault in pages, bind symbols, let the CPU clock up.
    bench::for_each_selected(contenders, o.only,
                             [&](std::size_t i) { contenders[i].run(std::max(1L, o.iterations / 20), contended); });
    bench::print_header("pairs_per_s");
    for (int r = o.start_round; r < o.start_round + o.rounds; ++r) {
      const std::vector<double> seconds = bench::run_round<double>(
          contenders, o, r, [&](std::size_t i, int, long n) { return contenders[i].run(n, contended); });
      const double total = static_cast<double>(o.iterations) * (contended ? 2 : 1);
      bench::print_round(contenders, o.only, r, "%.1f", [&](std::size_t i) { return total / seconds[i]; });
    }
  } catch (const std::exception& e) {
    program.die(e.what());
  }
  return 0;
}
