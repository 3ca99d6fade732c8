// The MPI rows (bench/compare.py mpi-apply-*, mpi-async-*, mpi-map-*): mproc::mpi::pool on
// an MPI job, one row per run (--row). Run it under mpirun with at least 2 ranks, e.g.
//   mpirun -np 2 --mca pml ob1 --mca btl vader,self mproc_mpi_bench --row apply
// (compare.py does, once over shared memory and once over TCP).
//   apply  a blocking round trip, pool.apply(square, x), square(x) = int64 x*x. per_op_us.
//   async  --iterations (default 100000) pool.apply_async(square, x), then get() of every
//          result, in order. tasks_per_s.
//   map    pool.map(square, items, --chunksize) of --iterations (default 1M) ints, chunksize
//          100 by default (mpi4py.futures' peer uses the same). items_per_s.
// Contender "mproc". Peers: bench/mpi_raw_farm.cpp (plain MPI_Send/MPI_Recv, "raw_mpi") and
// bench/mpi_bench.py (mpi4py.futures, "mpi4py").
//
// What users get, so what is measured: every rank runs a local pool of --processes workers
// (default 0: cpu_count() per rank), the root's too, and the root sends each task to the
// least loaded of its own pool and the other ranks (at most --window in flight on each,
// default 0: automatic). compare.py keeps every default.
// An idle apply() therefore runs on the root's own workers, never crossing to rank 1; a
// burst of apply_async or a map's chunks spread over both ranks.
//
// The pool is made once per invocation and warmed up (one untimed session of --warmup
// tasks or items); then, for async and map, an untimed check that tasks do run on another
// rank (a burst of tasks that report their rank): a run whose other ranks never take part
// would measure a local pool only, and exits with 2.
//
// Output (stdout, the root only), CSV, one line per round after a header:
//   round,contender,<metric>
// Verification, so that a broken path cannot look fast: inputs are offset by a per-session
// base, and every result is compared with x*x of its own input, in order, then folded
// into a checksum compared with the expected one. A mismatch or an exception exits with 2
// (on the root; Open MPI then ends the job).
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "mproc/mpi.hpp"

namespace {

using bench::checksum;
using bench::clock_type;
using bench::measured;
using bench::metric;
using bench::u64;

constexpr bench::program program{"mpi_bench",
                                 "usage: mpirun -np 2 mproc_mpi_bench --row apply|async|map\n"
                                 "         [--rounds R] [--iterations N] [--slices S] [--warmup W]\n"
                                 "         [--start-round K] [--processes P] [--window F] [--chunksize C]\n"
                                 "  R rounds (default 7). Per round mproc::mpi::pool runs N tasks (map: items;\n"
                                 "  defaults 5000, 100000, 1000000) in S sessions (defaults 4, 1, 1), after one\n"
                                 "  untimed warm-up session of W tasks per invocation. Rounds are numbered from\n"
                                 "  K (default 0). P: workers per rank (default 0: cpu_count() per rank).\n"
                                 "  F: tasks in flight per rank (pool_options::window; default 0: automatic).\n"
                                 "  C: map's chunksize (default 100). Needs at least 2 ranks.\n"
                                 "Prints CSV (rank 0): round,contender,<per_op_us|tasks_per_s|items_per_s>\n"};

struct options : bench::round_options {
  long warmup = -1;        // -1: the row's default
  unsigned processes = 0;  // 0: cpu_count() per rank
  unsigned window = 0;     // 0: automatic (twice a rank's workers, plus 2)
  long chunksize = 100;
};

// The task, as a user writes it: a plain function, named across ranks by MPROC_REMOTE.
std::int64_t square(int x) { return std::int64_t{x} * x; }
MPROC_REMOTE(square);

// The check that the other ranks take part: the rank a task ran on (mpirun gives every
// rank, and so its pool's workers, OMPI_COMM_WORLD_RANK; Slurm's srun SLURM_PROCID).
int rank_of_worker(int) {
  const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
  if (rank == nullptr) rank = std::getenv("SLURM_PROCID");
  return rank != nullptr ? std::atoi(rank) : 0;
}
MPROC_REMOTE(rank_of_worker);

[[noreturn]] void mismatch(const char* what, long i, std::int64_t got, std::int64_t want) {
  throw std::runtime_error(std::string(what) + ": result " + std::to_string(i) + " is " + std::to_string(got) +
                           ", expected " + std::to_string(want));
}

void check_sum(const char* what, const checksum& got, int base, long n) {
  checksum want;
  for (long i = 0; i < n; ++i) want.add(static_cast<u64>(square(base + static_cast<int>(i))));
  if (got.h != want.h) throw std::runtime_error(std::string(what) + ": checksum mismatch");
}

// results[i] == square(base + i) for every i, in order, then their checksum.
void verify(const char* what, const std::vector<std::int64_t>& results, int base, long n) {
  if (static_cast<long>(results.size()) != n) {
    throw std::runtime_error(std::string(what) + ": " + std::to_string(results.size()) + " results for " +
                             std::to_string(n) + " tasks");
  }
  checksum sum;
  for (long i = 0; i < n; ++i) {
    const std::int64_t r = results[static_cast<std::size_t>(i)];
    const std::int64_t want = square(base + static_cast<int>(i));
    if (r != want) mismatch(what, i, r, want);
    sum.add(static_cast<u64>(r));
  }
  check_sum(what, sum, base, n);
}

struct context {
  mproc::mpi::pool& pool;
  long chunksize;
};

// n blocking round trips, each result checked as it comes back.
measured apply_session(context& c, long n, int base) {
  checksum sum;
  const auto t0 = clock_type::now();
  for (long i = 0; i < n; ++i) {
    const int x = base + static_cast<int>(i);
    const std::int64_t r = c.pool.apply(square, x);
    if (r != square(x)) mismatch("apply", i, r, square(x));
    sum.add(static_cast<u64>(r));
  }
  const auto t1 = clock_type::now();
  check_sum("apply", sum, base, n);
  return {t1 - t0, static_cast<double>(n)};
}

// n apply_async, then get() of every result in order; checked once the clock has stopped.
measured async_session(context& c, long n, int base) {
  std::vector<mproc::async_result<std::int64_t>> pending;
  pending.reserve(static_cast<std::size_t>(n));
  std::vector<std::int64_t> results(static_cast<std::size_t>(n));
  const auto t0 = clock_type::now();
  for (long i = 0; i < n; ++i) pending.push_back(c.pool.apply_async(square, base + static_cast<int>(i)));
  for (long i = 0; i < n; ++i) results[static_cast<std::size_t>(i)] = pending[static_cast<std::size_t>(i)].get();
  const auto t1 = clock_type::now();
  verify("async", results, base, n);
  return {t1 - t0, static_cast<double>(n)};
}

// pool.map over n ints from base, at the chunksize of the command line; the input is built
// before the clock.
measured map_session(context& c, long n, int base) {
  std::vector<int> items(static_cast<std::size_t>(n));
  std::iota(items.begin(), items.end(), base);
  const auto t0 = clock_type::now();
  const std::vector<std::int64_t> results = c.pool.map(square, items, static_cast<std::size_t>(c.chunksize));
  const auto t1 = clock_type::now();
  verify("map", results, base, n);
  return {t1 - t0, static_cast<double>(n)};
}

// The untimed check of async and map: of `n` tasks in one burst, some ran on another rank.
// Prints the split on stderr (compare.py shows stderr on failure only).
void check_other_ranks_take_part(context& c, long n) {
  std::vector<mproc::async_result<int>> pending;
  for (long i = 0; i < n; ++i) pending.push_back(c.pool.apply_async(rank_of_worker, 0));
  long remote = 0;
  for (auto& p : pending) remote += p.get() != 0 ? 1 : 0;
  std::fprintf(stderr, "mpi_bench: %d ranks, %u workers; of %ld tasks in one burst %ld ran on another rank\n",
               c.pool.ranks(), c.pool.size(), n, remote);
  if (remote == 0) throw std::runtime_error("no task of a burst of " + std::to_string(n) + " ran on another rank");
}

struct contender {
  const char* name;
  measured (*session)(context&, long n, int base);
};

struct row {
  const char* name;
  const char* metric_name;
  metric kind;
  long iterations;
  long warmup;
  int slices;
  bool spreads;  // a burst: check that other ranks take part
  std::array<contender, 1> contenders;
};

const std::array rows = {
    row{"apply", "per_op_us", metric::latency, 5'000, 500, 4, false, {{{"mproc", apply_session}}}},
    row{"async", "tasks_per_s", metric::rate, 100'000, 5'000, 1, true, {{{"mproc", async_session}}}},
    row{"map", "items_per_s", metric::rate, 1'000'000, 100'000, 1, true, {{{"mproc", map_session}}}},
};

// Input bases: distinct for every session of every round, small enough that 10M inputs
// stay far from INT_MAX and their squares in an int64.
int base_of(int round, int slice) {
  return static_cast<int>((static_cast<u64>(round) * 7919 + static_cast<u64>(slice) * 104'729 + 26) % 1'000'000);
}

}  // namespace

int main(int argc, char** argv) {
  // Every rank parses the same command line, so a mistake ends every rank alike, before
  // MPI starts.
  options opts;
  program.parse(argc, argv, opts,
                {{"--warmup", &opts.warmup, 0},
                 {"--processes", &opts.processes, 0},
                 {"--window", &opts.window, 0},
                 {"--chunksize", &opts.chunksize, 1}});
  const row& r = bench::select_row(rows, opts, program, 10'000'000);

  mproc::mpi::pool_options pool_opts;
  pool_opts.processes_per_rank = opts.processes;
  pool_opts.window = opts.window;
  try {
    mproc::mpi::pool pool(argc, argv, pool_opts);  // collective; MPI_Init
    if (!pool) return 0;                           // rank 1..: served the root's tasks until it ended
    if (pool.ranks() < 2) throw std::runtime_error("run it under mpirun with at least 2 ranks (got 1)");
    context c{pool, opts.chunksize};
    if (opts.warmup > 0) r.contenders[0].session(c, opts.warmup, base_of(0, 0) + 1);
    if (r.spreads) check_other_ranks_take_part(c, 2'000);
    bench::print_rounds(r, opts, [&](std::size_t i, int round, int slice, long count) {
      return r.contenders[i].session(c, count, base_of(round, slice));
    });
  } catch (const std::exception& e) {
    program.die(e.what());  // the pool has ended (every rank, MPI_Finalize): exit 2
  }
  return 0;
}
