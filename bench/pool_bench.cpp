// The pool rows of DESIGN.md's performance contract, one row per run (--row):
//   apply  a blocking round trip of `int f(int)` on a warm pool: mproc::pool::apply
//          ("mproc"), a std::thread pool's submit(f).get() ("thread_pool",
//          bench/pool_thread_pool.hpp) and mproc::thread_pool::apply ("mproc_thread_pool",
//          the same API on threads). per_op_us.
//   async  --iterations (default 100000) apply_async of the same f, then get() of every
//          result, in order: "mproc"; "thread_pool" submitting as many tasks, then get() of
//          every future; and "thread_pool_inplace" (bench/pool_inplace_thread_pool.hpp), a
//          std::thread pool whose tasks write their results into slots allocated before the
//          clock starts (no future, no allocation per task), read in order; and
//          "mproc_thread_pool", mproc::thread_pool's apply_async. tasks_per_s.
//          bench/compare.py runs it with 10k, 100k and 1M tasks (rows async-10k, async,
//          async-1m): the rate should not depend on how many tasks are in flight.
//   map    pool.map of --iterations (default 10M) ints through x*x (int -> int64_t), with
//          the default chunksize ("mproc"). items_per_s.
//   as_completed  --iterations (default 100000) apply_async of f, then get() of each result
//          as mproc::as_completed yields its index ("mproc"); and, beside it, the async
//          row's get() in submission order over the same tasks ("mproc_in_order"), which
//          shows what as_completed's bookkeeping costs. tasks_per_s.
//   map-partial  pool.map of --iterations (default 10M) ints through
//          mproc::partial(scale, config{3, 1}) ("partial": the config travels with every
//          chunk and is decoded once per chunk in the worker) and through plain(x), the same
//          function with the config's values as constants ("plain"). items_per_s.
// Python's peers are in bench/pool_bench.py (multiprocessing.Pool; as_completed:
// concurrent.futures.ProcessPoolExecutor).
//
// Every pool has --processes workers (threads) (default: cpu_count(), Python's default
// too) and is made once per invocation, then warmed up: one untimed session of --warmup
// tasks (items) per contender, so the rounds measure warm pools, not worker start-up.
//
// Output (stdout), CSV, one line per contender per round after a header:
//   round,contender,<metric>
// Each round runs every contender over --iterations tasks (items), split into --slices
// sessions (apply: 4; async, as_completed and map: 1, as the workload is one batch;
// map-partial: 2, so that each round runs partial and plain as A B B A and a drift within
// the round weighs on both alike) that alternate between the contenders (A B, B A, ...),
// and rounds alternate which one starts, as in
// bench/spawn_bench.cpp. The clock covers the calls a user makes (apply; apply_async and
// get; as_completed; map, with the input already in a vector and the partial made) and
// nothing else.
//
// Verification, so that a broken pool cannot look fast: every task's input is offset by a
// per-session base, and every result is compared with the value expected for its own
// input, in order (map: all 10M; as_completed: each stored at the index it came with); the
// results are also folded into a checksum compared with
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
                                 "usage: mproc_pool_bench --row apply|async|map|as_completed|map-partial\n"
                                 "         [--rounds R] [--iterations N] [--slices S] [--warmup W]\n"
                                 "         [--start-round K] [--processes P] [--only CONTENDER]\n"
                                 "  R rounds (default 7). Per round each contender runs N tasks (map and\n"
                                 "  map-partial: items; defaults 20000, 100000, 10000000, 100000, 10000000) in S\n"
                                 "  sessions that alternate between the contenders (defaults 4, 1, 1, 1, 2),\n"
                                 "  after one untimed warm-up session of W tasks per invocation. Rounds are\n"
                                 "  numbered from K (default 0). P: workers of each pool (default: cpu_count()).\n"
                                 "  Contenders: apply mproc, thread_pool, mproc_thread_pool; async mproc,\n"
                                 "  thread_pool, thread_pool_inplace, mproc_thread_pool; map mproc;\n"
                                 "  as_completed mproc, mproc_in_order;\n"
                                 "  map-partial partial, plain. --only runs one (to profile it).\n"
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

// map-partial's tasks: scale reads its factors from a config bound by mproc::partial, as a
// user's configured task would; plain has the same factors as constants, so the two
// compute the same values and the ratio of their times is what the partial itself costs
// (its state encoded once per map, decoded once per chunk, read by reference per item).
struct config {
  int factor = 0;
  int offset = 0;
  template <class Archive>
  void serialize(Archive& archive) {
    archive(factor, offset);
  }
};
constexpr config map_config{3, 1};
std::int64_t scale(const config& c, int x) { return std::int64_t{x} * c.factor + c.offset; }
std::int64_t plain(int x) { return std::int64_t{x} * map_config.factor + map_config.offset; }

// Result i of a session whose inputs are base + i holds `got`, not `want`.
[[noreturn]] void mismatch(const char* what, long i, std::int64_t got, std::int64_t want) {
  throw std::runtime_error(std::string(what) + ": result " + std::to_string(i) + " is " + std::to_string(got) +
                           ", expected " + std::to_string(want));
}

// Which thread pool a contender runs on, if any.
enum class uses { processes, threads, inplace_threads, mproc_threads };

struct pools {
  mproc::pool processes;
  std::optional<bench::thread_pool> threads;  // the thread pools: made only for the rows that measure them
  std::optional<bench::inplace_thread_pool<int, int>> inplace_threads;
  std::optional<mproc::thread_pool> mproc_threads;  // mproc's own pool on threads

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

measured apply_mproc_threads(pools& p, long n, int base) {
  return apply_session("apply mproc_thread_pool", n, base, [&](int x) { return p.mproc_threads->apply(f, x); });
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

measured async_mproc_threads(pools& p, long n, int base) {
  return async_session("async mproc_thread_pool", n, base, [&](int x) { return p.mproc_threads->apply_async(f, x); });
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

// ---- as_completed ---------------------------------------------------------------------

// n tasks, apply_async(f, x) for x = base, base + 1, ..., then get() of each result as
// as_completed yields its index, stored at that index; checked once the clock has stopped.
measured as_completed_mproc(pools& p, long n, int base) {
  std::vector<mproc::async_result<int>> results;
  results.reserve(static_cast<std::size_t>(n));
  std::vector<int> values(static_cast<std::size_t>(n));
  std::vector<char> seen(static_cast<std::size_t>(n), 0);
  const auto t0 = clock_type::now();
  for (long i = 0; i < n; ++i) results.push_back(p.processes.apply_async(f, base + static_cast<int>(i)));
  long yielded = 0;
  for (const std::size_t i : mproc::as_completed(results)) {
    if (i >= values.size()) program.die("as_completed mproc: index " + std::to_string(i) + " out of range");
    values[i] = results[i].get();
    seen[i] = 1;  // an index yielded twice, and one never yielded, fail below
    ++yielded;
  }
  const auto t1 = clock_type::now();
  if (yielded != n || std::find(seen.begin(), seen.end(), 0) != seen.end()) {
    program.die("as_completed mproc: yielded " + std::to_string(yielded) + " indices for " + std::to_string(n) +
                " results, not each once");
  }
  verify("as_completed mproc", values, base, expected_f);
  return {t1 - t0, static_cast<double>(n)};
}

// The same tasks, got in submission order (the async row's session): as_completed's
// reference in the same run.
measured as_completed_in_order(pools& p, long n, int base) {
  return async_session("as_completed mproc_in_order", n, base, [&](int x) { return p.processes.apply_async(f, x); });
}

// ---- map ------------------------------------------------------------------------------

// pool.map(fn, items) over n ints from base (the default chunksize), checked against
// expected, in order.
template <class F>
measured map_session(const char* what, pools& p, long n, int base, F fn, std::int64_t (*expected)(int)) {
  std::vector<int> items(static_cast<std::size_t>(n));
  std::iota(items.begin(), items.end(), base);
  const auto t0 = clock_type::now();
  const std::vector<std::int64_t> results = p.processes.map(fn, items);  // default chunksize
  const auto t1 = clock_type::now();
  if (results.size() != items.size()) {
    program.die(std::string(what) + ": " + std::to_string(results.size()) + " results for " +
                std::to_string(items.size()) + " items");
  }
  verify(what, results, base, expected);
  return {t1 - t0, static_cast<double>(n)};
}

measured map_mproc(pools& p, long n, int base) { return map_session("map mproc", p, n, base, square, square); }

measured map_partial(pools& p, long n, int base) {
  return map_session("map-partial partial", p, n, base, mproc::partial(scale, map_config), plain);
}

measured map_plain(pools& p, long n, int base) { return map_session("map-partial plain", p, n, base, plain, plain); }

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
        {{"mproc", apply_mproc},
         {"thread_pool", apply_threads, uses::threads},
         {"mproc_thread_pool", apply_mproc_threads, uses::mproc_threads}}},
    row{"async",
        "tasks_per_s",
        metric::rate,
        100'000,
        10'000,
        1,
        {{"mproc", async_mproc},
         {"thread_pool", async_threads, uses::threads},
         {"thread_pool_inplace", async_inplace_threads, uses::inplace_threads},
         {"mproc_thread_pool", async_mproc_threads, uses::mproc_threads}}},
    row{"map", "items_per_s", metric::rate, 10'000'000, 100'000, 1, {{"mproc", map_mproc}}},
    row{"as_completed",
        "tasks_per_s",
        metric::rate,
        100'000,
        10'000,
        1,
        {{"mproc", as_completed_mproc}, {"mproc_in_order", as_completed_in_order}}},
    row{"map-partial",
        "items_per_s",
        metric::rate,
        10'000'000,
        100'000,
        2,
        {{"partial", map_partial}, {"plain", map_plain}}},
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
  const row& r = bench::select_row(rows, opts, program, 100'000'000);
  try {
    const unsigned n = opts.processes != 0 ? opts.processes : mproc::cpu_count();
    pools p(n);  // the process pool first: its zygote is forked before any thread exists
    const auto runs_on = [&](uses pool) {
      return std::any_of(r.contenders.begin(), r.contenders.end(),
                         [&](const contender& c) { return c.pool == pool && bench::selected(opts.only, c.name); });
    };
    if (runs_on(uses::threads)) p.threads.emplace(n);
    if (runs_on(uses::inplace_threads)) p.inplace_threads.emplace(n);
    if (runs_on(uses::mproc_threads)) p.mproc_threads.emplace(n);
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
