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
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iterator>
#include <new>
#include <string>
#include <string_view>

#include "mproc/process.hpp"
#include "mproc/sync.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

struct options {
  std::string_view row;
  int rounds = 7;
  long iterations = 0;  // 0: the row's default
  int start_round = 0;
  int slices = 2;
  std::string_view only;
};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "lock_bench: %s\n", what.c_str());
  std::exit(2);
}

[[noreturn]] void usage(int code) {
  std::fprintf(code == 0 ? stdout : stderr,
               "usage: mproc_lock_bench --row lock-uncontended|lock-contended [--rounds R]\n"
               "         [--iterations N] [--slices S] [--start-round K] [--only CONTENDER]\n"
               "  R rounds (default 7). Per round each contender does N lock/unlock pairs (per\n"
               "  process when contended; defaults 10000000 and 1000000) in S sessions (default\n"
               "  2) that alternate between the contenders. Rounds are numbered from K (default\n"
               "  0). Contenders: mproc, pthread_pshared, pthread_robust; --only runs one.\n"
               "Prints CSV: round,contender,pairs_per_s\n");
  std::exit(code);
}

long parse_long(std::string_view flag, const char* text, long min) {
  long value = 0;
  const std::string_view s(text);
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc{} || end != s.data() + s.size() || value < min) {
    std::fprintf(stderr, "lock_bench: %.*s needs an integer >= %ld, got '%s'\n", static_cast<int>(flag.size()),
                 flag.data(), min, text);
    usage(2);
  }
  return value;
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg(argv[i]);
    if (arg == "-h" || arg == "--help") usage(0);
    if (i + 1 >= argc) usage(2);
    const char* value = argv[++i];
    if (arg == "--row") {
      o.row = value;
    } else if (arg == "--rounds") {
      o.rounds = static_cast<int>(parse_long(arg, value, 1));
    } else if (arg == "--iterations") {
      o.iterations = parse_long(arg, value, 1);
    } else if (arg == "--start-round") {
      o.start_round = static_cast<int>(parse_long(arg, value, 0));
    } else if (arg == "--slices") {
      o.slices = static_cast<int>(parse_long(arg, value, 1));
    } else if (arg == "--only") {
      o.only = value;
    } else {
      std::fprintf(stderr, "lock_bench: unknown option '%s'\n", argv[i - 1]);
      usage(2);
    }
  }
  if (o.row != "lock-uncontended" && o.row != "lock-contended") usage(2);
  if (o.iterations == 0) o.iterations = o.row == "lock-uncontended" ? 10'000'000 : 1'000'000;
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
  if (r != 0) die(std::string(what) + ": " + std::strerror(r));
}

void init_area() {
  void* p = ::mmap(nullptr, sizeof(shared_area), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) die(std::string("mmap: ") + std::strerror(errno));
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
    if (area->counter != n) die("the lock lost increments");
    return s;
  }
  area->ready.store(0);
  area->go.store(0);
  mproc::process child([lock, n]() mutable {
    area->ready.store(1);
    while (area->go.load(std::memory_order_acquire) == 0) {
    }
    pairs(lock, n);
    area->child_done_ns.store(now_ns());
  });
  child.set_daemon(true);
  child.start();
  while (area->ready.load() == 0) {
  }
  const std::int64_t t0 = now_ns();
  area->go.store(1, std::memory_order_release);
  pairs(lock, n);
  const std::int64_t parent_done = now_ns();
  child.join();
  if (child.exitcode() != 0) die("contended child failed");
  if (area->counter != 2 * n) die("the lock lost increments: two processes were inside at once");
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

bool selected(const contender& c, const options& o) { return o.only.empty() || o.only == c.name; }

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  if (std::none_of(std::begin(contenders), std::end(contenders), [&](const contender& c) { return selected(c, o); })) {
    die("no contender named '" + std::string(o.only) + "'");
  }
  const bool contended = o.row == "lock-contended";
  try {
    init_area();
    mproc::mutex lock;
    mproc_lock = &lock;
    constexpr std::size_t count = std::size(contenders);
    // Warm-up: fault in pages, bind symbols, let the CPU clock up.
    for (const contender& c : contenders) {
      if (selected(c, o)) c.run(std::max(1L, o.iterations / 20), contended);
    }
    std::printf("round,contender,pairs_per_s\n");
    std::fflush(stdout);
    for (int r = o.start_round; r < o.start_round + o.rounds; ++r) {
      std::array<double, count> seconds{};
      for (int slice = 0; slice < o.slices; ++slice) {
        const long n = o.iterations / o.slices + (slice < o.iterations % o.slices ? 1 : 0);
        for (std::size_t k = 0; k < count; ++k) {
          const std::size_t i = (r + slice) % 2 == 0 ? k : count - 1 - k;
          if (selected(contenders[i], o)) seconds[i] += contenders[i].run(n, contended);
        }
      }
      const double total = static_cast<double>(o.iterations) * (contended ? 2 : 1);
      for (std::size_t i = 0; i < count; ++i) {
        if (selected(contenders[i], o)) std::printf("%d,%s,%.1f\n", r, contenders[i].name, total / seconds[i]);
      }
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    die(e.what());
  }
  return 0;
}
