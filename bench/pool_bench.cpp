// The pool rows of DESIGN.md's performance contract, one row per run (--row):
//   apply  a blocking round trip of `int f(int)` on a warm pool: mproc::pool::apply
//          ("mproc") and a std::thread pool's submit(f).get() ("thread_pool",
//          bench/pool_thread_pool.hpp). per_op_us.
//   async  --iterations (default 100000) apply_async of the same f, then get() of every
//          result, in order: "mproc"; "thread_pool" submitting as many tasks, then get() of
//          every future; and "thread_pool_inplace" (bench/pool_inplace_thread_pool.hpp), a
//          std::thread pool whose tasks write their results into slots allocated before the
//          clock starts (no future, no allocation per task), read in order. tasks_per_s.
//          bench/compare.py runs it with 10k, 100k and 1M tasks (rows async-10k, async,
//          async-1m): the rate should not depend on how many tasks are in flight.
//   map    pool.map of --iterations (default 10M) ints through x*x (int -> int64_t), with
//          the default chunksize ("mproc"). items_per_s.
// Python's multiprocessing.Pool peers are in bench/pool_bench.py.
//
// Every pool has --processes workers (threads) (default: cpu_count(), Python's default
// too) and is made once per invocation, then warmed up: one untimed session of --warmup
// tasks (items) per contender, so the rounds measure warm pools, not worker start-up.
//
// Output (stdout), CSV, one line per contender per round after a header:
//   round,contender,<metric>
// Each round runs every contender over --iterations tasks (items), split into --slices
// sessions (apply: 4, async and map: 1, as the workload is one batch) that alternate between
// the contenders (A B, B A, ...), and rounds alternate which one starts, as in
// bench/spawn_bench.cpp. The clock covers the calls a user makes (apply; apply_async and
// get; map, with the input already in a vector) and nothing else.
//
// Verification, so that a broken pool cannot look fast: every task's input is offset by a
// per-session base, and every result is compared with the value expected for its own
// input, in order (map: all 10M); the results are also folded into a checksum compared with
// the expected one. A mismatch exits with 2, as does any exception (a task that failed).
//
// --only runs one contender (for profiling it alone with perf, strace or callgrind).
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <exception>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "mproc/pool.hpp"
#include "mproc/process.hpp"
#include "pool_inplace_thread_pool.hpp"
#include "pool_thread_pool.hpp"

namespace {

using bench::checksum;
using bench::clock_type;
using bench::measured;
using bench::metric;
using bench::u64;

constexpr bench::program program{"pool_bench",
                                 "usage: mproc_pool_bench --row apply|async|map [--rounds R] [--iterations N]\n"
                                 "         [--slices S] [--warmup W] [--start-round K] [--processes P]\n"
                                 "         [--only CONTENDER]\n"
                                 "  R rounds (default 7). Per round each contender runs N tasks (map: items;\n"
                                 "  defaults 20000, 100000, 10000000) in S sessions that alternate between the\n"
                                 "  contenders (defaults 4, 1, 1), after one untimed warm-up session of W tasks\n"
                                 "  per invocation. Rounds are numbered from K (default 0). P: workers of each\n"
                                 "  pool (default: cpu_count()). Contenders: apply mproc, thread_pool; async mproc,\n"
                                 "  thread_pool, thread_pool_inplace; map mproc. --only runs one (to profile it).\n"
                                 "Prints CSV: round,contender,<per_op_us|tasks_per_s|items_per_s>\n"};

struct options : bench::round_options {
  long warmup = -1;        // -1: the row's default
  unsigned processes = 0;  // 0: cpu_count()
};

options parse(int argc, char** argv) {
  options o;
  program.parse(argc, argv, o, {{"--warmup", &o.warmup, 0}, {"--processes", &o.processes, 1}});
  return o;
}

// The tasks, as a user writes them: plain functions, run in the pools' workers.
int f(int x) { return 3 * x + 1; }
std::int64_t square(int x) { return std::int64_t{x} * x; }

// Result i of a session whose inputs are base + i holds `got`, not `want`.
[[noreturn]] void mismatch(const char* what, long i, std::int64_t got, std::int64_t want) {
  throw std::runtime_error(std::string(what) + ": result " + std::to_string(i) + " is " + std::to_string(got) +
                           ", expected " + std::to_string(want));
}

// Which thread pool a contender runs on, if any.
enum class uses { processes, threads, inplace_threads };

struct pools {
  mproc::pool processes;
  std::optional<bench::thread_pool> threads;  // the thread pools: made only for the rows that measure them
  std::optional<bench::inplace_thread_pool<int, int>> inplace_threads;

  explicit pools(unsigned n) : processes(n) {}
};

void check_sum(const char* what, const checksum& got, int base, long n, std::int64_t (*expected)(int)) {
  checksum want;
  for (long i = 0; i < n; ++i) want.add(static_cast<u64>(expected(base + static_cast<int>(i))));
  if (got.h != want.h) program.die(std::string(what) + ": checksum mismatch");
}

std::int64_t expected_f(int x) { return f(x); }

// Checks that results[i] is expected(base + i) for every i, in order, then their checksum.
template <class T>
void verify(const char* what, const std::vector<T>& results, int base, std::int64_t (*expected)(int)) {
  checksum sum;
  for (std::size_t i = 0; i < results.size(); ++i) {
    const T r = results[i];
    const std::int64_t want = expected(base + static_cast<int>(i));
    if (r != want) mismatch(what, static_cast<long>(i), r, want);
    sum.add(static_cast<u64>(r));
  }
  check_sum(what, sum, base, static_cast<long>(results.size()), expected);
}

// ---- apply ----------------------------------------------------------------------------

// n blocking round trips, call(x) for x = base, base + 1, ..., each result checked as it
// comes back.
template <class Call>
measured apply_session(const char* what, long n, int base, Call call) {
  checksum sum;
  const auto t0 = clock_type::now();
  for (long i = 0; i < n; ++i) {
    const int x = base + static_cast<int>(i);
    const int r = call(x);
    if (r != f(x)) mismatch(what, i, r, f(x));
    sum.add(static_cast<u64>(r));
  }
  const auto t1 = clock_type::now();
  check_sum(what, sum, base, n, expected_f);
  return {t1 - t0, static_cast<double>(n)};
}

measured apply_mproc(pools& p, long n, int base) {
  return apply_session("apply mproc", n, base, [&](int x) { return p.processes.apply(f, x); });
}

measured apply_threads(pools& p, long n, int base) {
  return apply_session("apply thread_pool", n, base,
                       [&](int x) { return p.threads->submit([x] { return f(x); }).get(); });
}

// ---- async ----------------------------------------------------------------------------

// n tasks, submit(x) for x = base, base + 1, ..., then get() of every result; the results
// are checked once the clock has stopped.
template <class Submit>
measured async_session(const char* what, long n, int base, Submit submit) {
  std::vector<decltype(submit(0))> results;
  results.reserve(static_cast<std::size_t>(n));
  std::vector<int> values(static_cast<std::size_t>(n));
  const auto t0 = clock_type::now();
  for (long i = 0; i < n; ++i) results.push_back(submit(base + static_cast<int>(i)));
  for (long i = 0; i < n; ++i) values[static_cast<std::size_t>(i)] = results[static_cast<std::size_t>(i)].get();
  const auto t1 = clock_type::now();
  verify(what, values, base, expected_f);
  return {t1 - t0, static_cast<double>(n)};
}

measured async_mproc(pools& p, long n, int base) {
  return async_session("async mproc", n, base, [&](int x) { return p.processes.apply_async(f, x); });
}

measured async_threads(pools& p, long n, int base) {
  return async_session("async thread_pool", n, base, [&](int x) { return p.threads->submit([x] { return f(x); }); });
}

// What submit() gives for a task of the in-place pool: its slot, read by get().
struct inplace_result {
  bench::inplace_thread_pool<int, int>* pool;
  std::size_t slot;
  int get() const { return pool->get(slot); }
};

measured async_inplace_threads(pools& p, long n, int base) {
  bench::inplace_thread_pool<int, int>& pool = *p.inplace_threads;
  pool.start(f, static_cast<std::size_t>(n));  // the slots, before the clock
  return async_session("async thread_pool_inplace", n, base, [&](int x) {
    return inplace_result{&pool, pool.submit(x)};
  });
}

// ---- map ------------------------------------------------------------------------------

measured map_mproc(pools& p, long n, int base) {
  std::vector<int> items(static_cast<std::size_t>(n));
  std::iota(items.begin(), items.end(), base);
  const auto t0 = clock_type::now();
  const std::vector<std::int64_t> results = p.processes.map(square, items);  // default chunksize
  const auto t1 = clock_type::now();
  if (results.size() != items.size()) {
    program.die("map mproc: " + std::to_string(results.size()) + " results for " + std::to_string(items.size()) +
                " items");
  }
  verify("map mproc", results, base, square);
  return {t1 - t0, static_cast<double>(n)};
}

// ---- rows -----------------------------------------------------------------------------

struct contender {
  const char* name;
  measured (*session)(pools&, long n, int base);
  uses pool = uses::processes;
};

struct row {
  const char* name;
  const char* metric_name;
  metric kind;
  long iterations;
  long warmup;
  int slices;
  std::vector<contender> contenders;
};

const std::array rows = {
    row{"apply",
        "per_op_us",
        metric::latency,
        20'000,
        2'000,
        4,
        {{"mproc", apply_mproc}, {"thread_pool", apply_threads, uses::threads}}},
    row{"async",
        "tasks_per_s",
        metric::rate,
        100'000,
        10'000,
        1,
        {{"mproc", async_mproc},
         {"thread_pool", async_threads, uses::threads},
         {"thread_pool_inplace", async_inplace_threads, uses::inplace_threads}}},
    row{"map", "items_per_s", metric::rate, 10'000'000, 100'000, 1, {{"mproc", map_mproc}}},
};

// Input bases: distinct for every session of every round and contender, small enough that
// 10M inputs stay far from INT_MAX.
int base_of(int round, int slice, std::size_t contender) {
  return static_cast<int>((static_cast<u64>(round) * 7919 + static_cast<u64>(slice) * 104'729 + contender * 13) %
                          1'000'000);
}

}  // namespace

int main(int argc, char** argv) {
  options opts = parse(argc, argv);
  const auto found = std::find_if(rows.begin(), rows.end(), [&](const row& r) { return opts.row == r.name; });
  if (found == rows.end()) program.misuse("--row must be apply, async or map");
  const row& r = *found;
  if (opts.iterations == 0) opts.iterations = r.iterations;
  if (opts.warmup < 0) opts.warmup = r.warmup;
  if (opts.slices == 0) opts.slices = r.slices;
  opts.slices = static_cast<int>(std::min<long>(opts.slices, opts.iterations));
  if (opts.iterations > 100'000'000) program.die("--iterations: at most 100000000");
  if (!bench::any_selected(r.contenders, opts.only)) {
    program.die("row " + std::string(r.name) + " has no contender named '" + std::string(opts.only) + "'");
  }
  try {
    const unsigned n = opts.processes != 0 ? opts.processes : mproc::cpu_count();
    pools p(n);  // the process pool first: its zygote is forked before any thread exists
    const auto runs_on = [&](uses pool) {
      return std::any_of(r.contenders.begin(), r.contenders.end(),
                         [&](const contender& c) { return c.pool == pool && bench::selected(opts.only, c.name); });
    };
    if (runs_on(uses::threads)) p.threads.emplace(n);
    if (runs_on(uses::inplace_threads)) p.inplace_threads.emplace(n);
    if (opts.warmup > 0) {
      bench::for_each_selected(r.contenders, opts.only,
                               [&](std::size_t i) { r.contenders[i].session(p, opts.warmup, base_of(0, 0, i) + 1); });
    }
    bench::print_rounds(r, opts, [&](std::size_t i, int round, int slice, long count) {
      return r.contenders[i].session(p, count, base_of(round, slice, i));
    });
  } catch (const std::exception& e) {
    program.die(e.what());
  }
  return 0;
}
