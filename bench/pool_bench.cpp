// The pool rows of DESIGN.md's performance contract, one row per run (--row):
//   apply  a blocking round trip of `int f(int)` on a warm pool: mproc::pool::apply
//          ("mproc") and a std::thread pool's submit(f).get() ("thread_pool",
//          bench/pool_thread_pool.hpp). per_op_us.
//   async  --iterations (default 100000) apply_async of the same f, then get() of every
//          result: "mproc", and "thread_pool" submitting as many tasks, then get() of every
//          future. tasks_per_s.
//   map    pool.map of --iterations (default 10M) ints through x*x (int -> int64_t), with
//          the default chunksize ("mproc"). items_per_s.
// Python's multiprocessing.Pool peers are in bench/pool_bench.py.
//
// Both pools have --processes workers (default: cpu_count(), Python's default too) and are
// made once per invocation, then warmed up: one untimed session of --warmup tasks (items)
// per contender, so the rounds measure warm pools, not worker start-up.
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
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <future>
#include <iterator>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "mproc/pool.hpp"
#include "mproc/process.hpp"
#include "pool_thread_pool.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
using u64 = std::uint64_t;

struct options {
  std::string_view row;
  int rounds = 7;
  long iterations = 0;  // 0: the row's default
  long warmup = -1;     // -1: the row's default
  int slices = 0;       // 0: the row's default
  int start_round = 0;
  unsigned processes = 0;  // 0: cpu_count()
  std::string_view only;
};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "pool_bench: %s\n", what.c_str());
  std::exit(2);
}

[[noreturn]] void usage(int code) {
  std::fprintf(code == 0 ? stdout : stderr,
               "usage: mproc_pool_bench --row apply|async|map [--rounds R] [--iterations N]\n"
               "         [--slices S] [--warmup W] [--start-round K] [--processes P]\n"
               "         [--only CONTENDER]\n"
               "  R rounds (default 7). Per round each contender runs N tasks (map: items;\n"
               "  defaults 20000, 100000, 10000000) in S sessions that alternate between the\n"
               "  contenders (defaults 4, 1, 1), after one untimed warm-up session of W tasks\n"
               "  per invocation. Rounds are numbered from K (default 0). P: workers of each\n"
               "  pool (default: cpu_count()). Contenders: apply and async mproc, thread_pool;\n"
               "  map mproc. --only runs one (to profile it).\n"
               "Prints CSV: round,contender,<per_op_us|tasks_per_s|items_per_s>\n");
  std::exit(code);
}

long parse_long(std::string_view flag, const char* text, long min) {
  long value = 0;
  const std::string_view s(text);
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc{} || end != s.data() + s.size() || value < min) {
    std::fprintf(stderr, "pool_bench: %.*s needs an integer >= %ld, got '%s'\n", static_cast<int>(flag.size()),
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
    } else if (arg == "--warmup") {
      o.warmup = parse_long(arg, value, 0);
    } else if (arg == "--slices") {
      o.slices = static_cast<int>(parse_long(arg, value, 1));
    } else if (arg == "--start-round") {
      o.start_round = static_cast<int>(parse_long(arg, value, 0));
    } else if (arg == "--processes") {
      o.processes = static_cast<unsigned>(parse_long(arg, value, 1));
    } else if (arg == "--only") {
      o.only = value;
    } else {
      std::fprintf(stderr, "pool_bench: unknown option '%s'\n", argv[i - 1]);
      usage(2);
    }
  }
  return o;
}

// The tasks, as a user writes them: plain functions, run in the pools' workers.
int f(int x) { return 3 * x + 1; }
std::int64_t square(int x) { return std::int64_t{x} * x; }

// An order-sensitive checksum of the results (FNV-1a over 64-bit words).
struct checksum {
  u64 h = 0xcbf2'9ce4'8422'2325ULL;
  void add(u64 v) { h = (h ^ v) * 0x100'0000'01b3ULL; }
};

// Result i of a session whose inputs are base + i holds `got`, not `want`.
[[noreturn]] void mismatch(const char* what, long i, std::int64_t got, std::int64_t want) {
  throw std::runtime_error(std::string(what) + ": result " + std::to_string(i) + " is " + std::to_string(got) +
                           ", expected " + std::to_string(want));
}

struct pools {
  mproc::pool processes;
  std::optional<bench::thread_pool> threads;  // made only for the rows that measure it

  explicit pools(unsigned n) : processes(n) {}
};

// What a session measured: `units` (tasks or items) in `elapsed`, and their checksum.
struct measured {
  clock_type::duration elapsed{};
  double units = 0;
};

void check_sum(const char* what, const checksum& got, int base, long n, std::int64_t (*expected)(int)) {
  checksum want;
  for (long i = 0; i < n; ++i) want.add(static_cast<u64>(expected(base + static_cast<int>(i))));
  if (got.h != want.h) die(std::string(what) + ": checksum mismatch");
}

std::int64_t expected_f(int x) { return f(x); }

// ---- apply ----------------------------------------------------------------------------

measured apply_mproc(pools& p, long n, int base) {
  checksum sum;
  const auto t0 = clock_type::now();
  for (long i = 0; i < n; ++i) {
    const int x = base + static_cast<int>(i);
    const int r = p.processes.apply(f, x);
    if (r != f(x)) mismatch("apply mproc", i, r, f(x));
    sum.add(static_cast<u64>(r));
  }
  const auto t1 = clock_type::now();
  check_sum("apply mproc", sum, base, n, expected_f);
  return {t1 - t0, static_cast<double>(n)};
}

measured apply_threads(pools& p, long n, int base) {
  checksum sum;
  const auto t0 = clock_type::now();
  for (long i = 0; i < n; ++i) {
    const int x = base + static_cast<int>(i);
    const int r = p.threads->submit([x] { return f(x); }).get();
    if (r != f(x)) mismatch("apply thread_pool", i, r, f(x));
    sum.add(static_cast<u64>(r));
  }
  const auto t1 = clock_type::now();
  check_sum("apply thread_pool", sum, base, n, expected_f);
  return {t1 - t0, static_cast<double>(n)};
}

// ---- async ----------------------------------------------------------------------------

measured async_mproc(pools& p, long n, int base) {
  std::vector<mproc::async_result<int>> results;
  results.reserve(static_cast<std::size_t>(n));
  std::vector<int> values(static_cast<std::size_t>(n));
  const auto t0 = clock_type::now();
  for (long i = 0; i < n; ++i) results.push_back(p.processes.apply_async(f, base + static_cast<int>(i)));
  for (long i = 0; i < n; ++i) values[static_cast<std::size_t>(i)] = results[static_cast<std::size_t>(i)].get();
  const auto t1 = clock_type::now();
  checksum sum;
  for (long i = 0; i < n; ++i) {
    const int r = values[static_cast<std::size_t>(i)];
    if (r != f(base + static_cast<int>(i))) mismatch("async mproc", i, r, f(base + static_cast<int>(i)));
    sum.add(static_cast<u64>(r));
  }
  check_sum("async mproc", sum, base, n, expected_f);
  return {t1 - t0, static_cast<double>(n)};
}

measured async_threads(pools& p, long n, int base) {
  std::vector<std::future<int>> results;
  results.reserve(static_cast<std::size_t>(n));
  std::vector<int> values(static_cast<std::size_t>(n));
  const auto t0 = clock_type::now();
  for (long i = 0; i < n; ++i) {
    const int x = base + static_cast<int>(i);
    results.push_back(p.threads->submit([x] { return f(x); }));
  }
  for (long i = 0; i < n; ++i) values[static_cast<std::size_t>(i)] = results[static_cast<std::size_t>(i)].get();
  const auto t1 = clock_type::now();
  checksum sum;
  for (long i = 0; i < n; ++i) {
    const int r = values[static_cast<std::size_t>(i)];
    if (r != f(base + static_cast<int>(i))) mismatch("async thread_pool", i, r, f(base + static_cast<int>(i)));
    sum.add(static_cast<u64>(r));
  }
  check_sum("async thread_pool", sum, base, n, expected_f);
  return {t1 - t0, static_cast<double>(n)};
}

// ---- map ------------------------------------------------------------------------------

measured map_mproc(pools& p, long n, int base) {
  std::vector<int> items(static_cast<std::size_t>(n));
  std::iota(items.begin(), items.end(), base);
  const auto t0 = clock_type::now();
  const std::vector<std::int64_t> results = p.processes.map(square, items);  // default chunksize
  const auto t1 = clock_type::now();
  if (results.size() != items.size()) {
    die("map mproc: " + std::to_string(results.size()) + " results for " + std::to_string(items.size()) + " items");
  }
  checksum sum;
  for (long i = 0; i < n; ++i) {
    const std::int64_t r = results[static_cast<std::size_t>(i)];
    if (r != square(base + static_cast<int>(i))) mismatch("map mproc", i, r, square(base + static_cast<int>(i)));
    sum.add(static_cast<u64>(r));
  }
  check_sum("map mproc", sum, base, n, square);
  return {t1 - t0, static_cast<double>(n)};
}

// ---- rows -----------------------------------------------------------------------------

struct contender {
  const char* name;
  measured (*session)(pools&, long n, int base);
  bool needs_threads = false;
};

enum class metric { latency, rate };

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
    row{"apply", "per_op_us", metric::latency, 20'000, 2'000, 4,
        {{"mproc", apply_mproc}, {"thread_pool", apply_threads, true}}},
    row{"async", "tasks_per_s", metric::rate, 100'000, 10'000, 1,
        {{"mproc", async_mproc}, {"thread_pool", async_threads, true}}},
    row{"map", "items_per_s", metric::rate, 10'000'000, 100'000, 1, {{"mproc", map_mproc}}},
};

double figure(const row& r, const measured& m) {
  const double seconds = std::chrono::duration<double>(m.elapsed).count();
  return r.kind == metric::rate ? m.units / seconds : seconds * 1e6 / m.units;
}

bool selected(const contender& c, const options& o) { return o.only.empty() || o.only == c.name; }

// Input bases: distinct for every session of every round and contender, small enough that
// 10M inputs stay far from INT_MAX.
int base_of(int round, int slice, std::size_t contender) {
  return static_cast<int>((static_cast<u64>(round) * 7919 + static_cast<u64>(slice) * 104'729 + contender * 13) %
                          1'000'000);
}

std::vector<double> run_round(const row& r, pools& p, int round, const options& o) {
  const std::size_t count = r.contenders.size();
  std::vector<measured> total(count);
  for (int slice = 0; slice < o.slices; ++slice) {
    const long n = o.iterations / o.slices + (slice < o.iterations % o.slices ? 1 : 0);
    for (std::size_t k = 0; k < count; ++k) {
      // Even slices (of even rounds) run the contenders in table order, odd ones in reverse.
      const std::size_t i = (round + slice) % 2 == 0 ? k : count - 1 - k;
      if (!selected(r.contenders[i], o)) continue;
      const measured m = r.contenders[i].session(p, n, base_of(round, slice, i));
      total[i].elapsed += m.elapsed;
      total[i].units += m.units;
    }
  }
  std::vector<double> figures(count);
  for (std::size_t i = 0; i < count; ++i) {
    if (selected(r.contenders[i], o)) figures[i] = figure(r, total[i]);
  }
  return figures;
}

}  // namespace

int main(int argc, char** argv) {
  options opts = parse(argc, argv);
  const auto found = std::find_if(rows.begin(), rows.end(), [&](const row& r) { return opts.row == r.name; });
  if (found == rows.end()) {
    std::fprintf(stderr, "pool_bench: --row must be apply, async or map\n");
    usage(2);
  }
  const row& r = *found;
  if (opts.iterations == 0) opts.iterations = r.iterations;
  if (opts.warmup < 0) opts.warmup = r.warmup;
  if (opts.slices == 0) opts.slices = r.slices;
  opts.slices = static_cast<int>(std::min<long>(opts.slices, opts.iterations));
  if (opts.iterations > 100'000'000) die("--iterations: at most 100000000");
  if (std::none_of(r.contenders.begin(), r.contenders.end(), [&](const contender& c) { return selected(c, opts); })) {
    die("row " + std::string(r.name) + " has no contender named '" + std::string(opts.only) + "'");
  }
  try {
    const unsigned n = opts.processes != 0 ? opts.processes : mproc::cpu_count();
    pools p(n);  // the process pool first: its zygote is forked before any thread exists
    if (std::any_of(r.contenders.begin(), r.contenders.end(),
                    [&](const contender& c) { return c.needs_threads && selected(c, opts); })) {
      p.threads.emplace(n);
    }
    if (opts.warmup > 0) {
      for (std::size_t i = 0; i < r.contenders.size(); ++i) {
        if (selected(r.contenders[i], opts)) r.contenders[i].session(p, opts.warmup, base_of(0, 0, i) + 1);
      }
    }
    std::printf("round,contender,%s\n", r.metric_name);
    std::fflush(stdout);
    for (int round = opts.start_round; round < opts.start_round + opts.rounds; ++round) {
      const std::vector<double> figures = run_round(r, p, round, opts);
      for (std::size_t i = 0; i < r.contenders.size(); ++i) {
        if (selected(r.contenders[i], opts)) std::printf("%d,%s,%.6g\n", round, r.contenders[i].name, figures[i]);
      }
      std::fflush(stdout);  // the driver may read rounds as they come
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pool_bench: %s\n", e.what());
    return 2;
  }
  return 0;
}
