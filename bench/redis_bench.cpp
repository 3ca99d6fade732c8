// The redis-async row (bench/compare.py): mproc::redis::pool, its tasks run by workers of
// this same binary on the Redis server at --redis URL.
//   mproc_redis_bench --row async --redis redis://127.0.0.1:6379
//   async  --iterations (default 100000) pool.apply_async(square, x), square(x) = int64
//          x*x, then get() of every result, in order. tasks_per_s. Contender "mproc".
// Peers: bench/redis_raw_farm.cpp (plain hiredis on Streams, "raw_hiredis" and
// "raw_hiredis_per_task") and bench/redis_bench.py (Celery, "celery"; RQ, "rq" and
// "rq_simple"), on the same server in the same run.
//
// The workers: this binary re-run as `mproc_redis_bench --serve URL NAME PROCESSES`, which
// is mproc::redis::serve({.url, .name, .processes}), as a user starts a worker program.
// --servers (default 1) such processes, each with a local pool of --processes (default 2).
// 1 x 2 is the row's "2 workers": two processes run tasks, as the raw farm's 2 forked
// workers and Celery's prefork pool of concurrency 2 do, and it has Celery's shape (one
// process that talks to Redis, a pool of 2 behind it). 2 x 1 would also run tasks in two
// processes but add a second consumer process beside its pool worker: 6 busy processes on a
// 2-core machine (client, Redis, 2 consumers, 2 pool workers) against the raw farm's 4;
// it measured slower too (~23k against ~31k tasks/s on the 2-core VM).
// They are started once per invocation, on a pool name fresh for the invocation
// (mproc-bench-<pid>-<ns>), as daemons (they die with this program, even by SIGKILL), and
// stopped at the end with SIGTERM, on which serve returns; each must then exit with 0.
//
// The pool is made once per invocation and warmed up (one untimed session of --warmup
// tasks, which also waits for the workers to come up).
// Output (stdout), CSV, one line per round after a header: round,contender,tasks_per_s.
// Verification, so that a broken path cannot look fast: inputs are offset by a per-session
// base, and every result is compared with x*x of its own input, in order, then folded into
// a checksum compared with the expected one. A mismatch, an exception or a worker that does
// not exit with 0 exits with 2.
#include <signal.h>
#include <unistd.h>

#include <array>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "bench_support.hpp"
#include "mproc/process.hpp"
#include "mproc/redis.hpp"

namespace {

using bench::checksum;
using bench::clock_type;
using bench::measured;
using bench::metric;
using bench::u64;

constexpr bench::program program{
    "redis_bench",
    "usage: mproc_redis_bench --row async --redis URL [--rounds R] [--iterations N]\n"
    "         [--slices S] [--warmup W] [--start-round K] [--servers V]\n"
    "         [--processes P]\n"
    "       mproc_redis_bench --serve URL NAME PROCESSES   (a worker; started by the above)\n"
    "  URL: as mproc::redis::pool_options::url. R rounds (default 7). Per round\n"
    "  N tasks (default 100000) in S sessions (default 1), after one untimed\n"
    "  warm-up session of W tasks (default 5000) per invocation. Rounds are\n"
    "  numbered from K (default 0). V worker processes (default 1), each serving\n"
    "  with a local pool of P processes (default 2).\n"
    "Prints CSV: round,contender,tasks_per_s\n"};

struct options : bench::round_options {
  long warmup = -1;  // -1: the row's default
  std::string_view url;
  unsigned servers = 1;
  unsigned processes = 2;
};

// The task, as a user writes it: a plain function, named across processes by MPROC_REMOTE.
std::int64_t square(std::int64_t x) { return x * x; }
MPROC_REMOTE(square);

// ---- the workers ------------------------------------------------------------------------------

// `--serve URL NAME PROCESSES`: a worker's main, until SIGTERM.
int serve_main(int argc, char** argv) {
  if (argc != 5) program.misuse("--serve takes URL NAME PROCESSES");
  const std::string_view text(argv[4]);
  unsigned processes = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), processes);
  if (ec != std::errc{} || end != text.data() + text.size()) program.misuse("--serve: PROCESSES must be a number");
  try {
    mproc::redis::serve({.url = argv[2], .name = argv[3], .processes = processes});
  } catch (const std::exception& e) {
    program.die(std::string("--serve: ") + e.what());
  }
  return 0;
}

// This binary re-run with --serve, as a daemon child: it dies with this program (the
// parent-death signal outlives exec).
mproc::process start_server(const std::string& url, const std::string& name, unsigned processes) {
  return bench::start_child([url, name, processes] {
    // A fresh program: no signal blocked that the worker's SIGTERM needs.
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    const std::string count = std::to_string(processes);
    const char* args[] = {"mproc_redis_bench", "--serve", url.c_str(), name.c_str(), count.c_str(), nullptr};
    ::execv("/proc/self/exe", const_cast<char* const*>(args));
    std::perror("redis_bench: execv /proc/self/exe");
    ::_exit(127);
  });
}

// SIGTERM, on which serve returns; each worker must exit with 0 within 10 s.
void stop_servers(std::vector<mproc::process>& servers) {
  for (auto& s : servers) s.terminate();
  for (auto& s : servers) {
    if (!s.join(std::chrono::seconds(10))) {
      s.kill();
      s.join();
      program.die("a worker did not stop within 10 s of SIGTERM");
    }
    if (s.exitcode() != 0) program.die("a worker exited with " + std::to_string(s.exitcode().value_or(-1)));
  }
}

// ---- the client -----------------------------------------------------------------------------

[[noreturn]] void mismatch(const char* what, long i, std::int64_t got, std::int64_t want) {
  throw std::runtime_error(std::string(what) + ": result " + std::to_string(i) + " is " + std::to_string(got) +
                           ", expected " + std::to_string(want));
}

// results[i] == square(base + i) for every i, in order, then their checksum.
void verify(const char* what, const std::vector<std::int64_t>& results, std::int64_t base, long n) {
  checksum got;
  checksum want;
  for (long i = 0; i < n; ++i) {
    const std::int64_t r = results[static_cast<std::size_t>(i)];
    if (r != square(base + i)) mismatch(what, i, r, square(base + i));
    got.add(static_cast<u64>(r));
    want.add(static_cast<u64>(square(base + i)));
  }
  if (got.h != want.h) throw std::runtime_error(std::string(what) + ": checksum mismatch");
}

struct context {
  mproc::redis::pool& pool;
};

// n apply_async, then get() of every result in order; checked once the clock has stopped.
measured async_session(context& c, long n, std::int64_t base) {
  std::vector<decltype(c.pool.apply_async(square, base))> pending;
  pending.reserve(static_cast<std::size_t>(n));
  std::vector<std::int64_t> results(static_cast<std::size_t>(n));
  const auto t0 = clock_type::now();
  for (long i = 0; i < n; ++i) pending.push_back(c.pool.apply_async(square, base + i));
  for (long i = 0; i < n; ++i) results[static_cast<std::size_t>(i)] = pending[static_cast<std::size_t>(i)].get();
  const auto t1 = clock_type::now();
  verify("async", results, base, n);
  return {t1 - t0, static_cast<double>(n)};
}

struct contender {
  const char* name;
  measured (*session)(context&, long n, std::int64_t base);
};

struct row {
  const char* name;
  const char* metric_name;
  metric kind;
  long iterations;
  long warmup;
  int slices;
  std::array<contender, 1> contenders;
};

const std::array rows = {
    row{"async", "tasks_per_s", metric::rate, 100'000, 5'000, 1, {{{"mproc", async_session}}}},
};

// As bench/redis_raw_farm.cpp's (and the MPI programs').
std::int64_t base_of(int round, int slice) {
  return static_cast<std::int64_t>((static_cast<u64>(round) * 7919 + static_cast<u64>(slice) * 104'729 + 26) %
                                   1'000'000);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "--serve") return serve_main(argc, argv);
  options opts;
  program.parse(argc, argv, opts,
                {{"--warmup", &opts.warmup, 0},
                 {"--redis", &opts.url},
                 {"--servers", &opts.servers, 1},
                 {"--processes", &opts.processes, 1}});
  const row& r = bench::select_row(rows, opts, program, 10'000'000);
  if (opts.url.empty()) program.misuse("--redis URL is required");

  const std::string url(opts.url);
  const std::string name =
      "mproc-bench-" + std::to_string(::getpid()) + "-" + std::to_string(clock_type::now().time_since_epoch().count());
  std::vector<mproc::process> servers;
  for (unsigned i = 0; i < opts.servers; ++i) servers.push_back(start_server(url, name, opts.processes));
  try {
    mproc::redis::pool pool({.url = url, .name = name});
    context c{pool};
    if (opts.warmup > 0) r.contenders[0].session(c, opts.warmup, base_of(0, 0) + 1);
    bench::print_rounds(r, opts, [&](std::size_t i, int round, int slice, long count) {
      return r.contenders[i].session(c, count, base_of(round, slice));
    });
    pool.close();
    pool.join();
  } catch (const std::exception& e) {
    program.die(e.what());  // the workers are daemons: the runtime stops them at exit
  }
  stop_servers(servers);
  return 0;
}
