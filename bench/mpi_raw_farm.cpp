// The raw MPI peer of the MPI rows (bench/mpi_bench.cpp): a task farm written with plain
// MPI_Send/MPI_Recv, the floor a pool on MPI adds its costs to. Run it under mpirun with 2
// ranks, e.g.
//   mpirun -np 2 --mca pml ob1 --mca btl vader,self mproc_mpi_raw_farm --row apply
// Rank 0 sends each task, an int x, to rank 1, which computes x*x (as an int64) itself, no
// pool behind it, and sends it back. Contender "raw_mpi":
//   apply  the blocking round trip: send x, receive its square, one task in flight.
//          per_op_us.
//   async  --iterations (default 100000) tasks with 16 in flight: 16 sent, then each result
//          received in order (MPI keeps the order of messages between two ranks) and the
//          next task sent, the results stored, then checked. tasks_per_s.
// Same command line, CSV and verification as bench/mpi_bench.cpp: every result is compared
// with x*x of its own input, in order, and folded into a checksum; a mismatch exits with 2
// (MPI_Abort).
#include <mpi.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_support.hpp"

namespace {

using bench::checksum;
using bench::clock_type;
using bench::measured;
using bench::metric;
using bench::u64;

constexpr bench::program program{"mpi_raw_farm",
                                 "usage: mpirun -np 2 mproc_mpi_raw_farm --row apply|async\n"
                                 "         [--rounds R] [--iterations N] [--slices S] [--warmup W]\n"
                                 "         [--start-round K] [--window F]\n"
                                 "  R rounds (default 7). Per round N tasks (defaults 20000, 100000) in S\n"
                                 "  sessions (defaults 4, 1), after one untimed warm-up session of W tasks.\n"
                                 "  Rounds are numbered from K (default 0). F: async's tasks in flight\n"
                                 "  (default 16). Needs exactly 2 ranks.\n"
                                 "Prints CSV (rank 0): round,contender,<per_op_us|tasks_per_s>\n"};

struct options : bench::round_options {
  long warmup = -1;  // -1: the row's default
  long window = 16;
};

enum tag : int { task_tag = 1, result_tag = 2, stop_tag = 3 };

std::int64_t square(int x) { return std::int64_t{x} * x; }

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "mpi_raw_farm: %s\n", what.c_str());
  MPI_Abort(MPI_COMM_WORLD, 2);
  std::exit(2);  // not reached
}

void check(int rc, const char* call) {
  if (rc != MPI_SUCCESS) fail(std::string(call) + " failed");
}

void send_task(int x) { check(MPI_Send(&x, 1, MPI_INT, 1, task_tag, MPI_COMM_WORLD), "MPI_Send"); }

std::int64_t receive_result() {
  std::int64_t r = 0;
  check(MPI_Recv(&r, 1, MPI_INT64_T, 1, result_tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE), "MPI_Recv");
  return r;
}

void check_sum(const char* what, const checksum& got, int base, long n) {
  checksum want;
  for (long i = 0; i < n; ++i) want.add(static_cast<u64>(square(base + static_cast<int>(i))));
  if (got.h != want.h) fail(std::string(what) + ": checksum mismatch");
}

void check_result(const char* what, long i, std::int64_t got, int x) {
  if (got != square(x)) {
    fail(std::string(what) + ": result " + std::to_string(i) + " is " + std::to_string(got) + ", expected " +
         std::to_string(square(x)));
  }
}

struct context {
  long window;
};

// n blocking round trips, each result checked as it comes back.
measured apply_session(context&, long n, int base) {
  checksum sum;
  const auto t0 = clock_type::now();
  for (long i = 0; i < n; ++i) {
    const int x = base + static_cast<int>(i);
    send_task(x);
    const std::int64_t r = receive_result();
    check_result("apply", i, r, x);
    sum.add(static_cast<u64>(r));
  }
  const auto t1 = clock_type::now();
  check_sum("apply", sum, base, n);
  return {t1 - t0, static_cast<double>(n)};
}

// n tasks, `window` in flight; results stored in order, checked once the clock has stopped.
measured async_session(context& c, long n, int base) {
  std::vector<std::int64_t> results(static_cast<std::size_t>(n));
  const auto t0 = clock_type::now();
  long sent = 0;
  for (; sent < std::min(n, c.window); ++sent) send_task(base + static_cast<int>(sent));
  for (long i = 0; i < n; ++i) {
    results[static_cast<std::size_t>(i)] = receive_result();
    if (sent < n) send_task(base + static_cast<int>(sent++));
  }
  const auto t1 = clock_type::now();
  checksum sum;
  for (long i = 0; i < n; ++i) {
    check_result("async", i, results[static_cast<std::size_t>(i)], base + static_cast<int>(i));
    sum.add(static_cast<u64>(results[static_cast<std::size_t>(i)]));
  }
  check_sum("async", sum, base, n);
  return {t1 - t0, static_cast<double>(n)};
}

// Rank 1: computes every task it receives until the stop word.
void serve() {
  for (;;) {
    int x = 0;
    MPI_Status status;
    check(MPI_Recv(&x, 1, MPI_INT, 0, MPI_ANY_TAG, MPI_COMM_WORLD, &status), "MPI_Recv");
    if (status.MPI_TAG == stop_tag) return;
    const std::int64_t r = square(x);
    check(MPI_Send(&r, 1, MPI_INT64_T, 0, result_tag, MPI_COMM_WORLD), "MPI_Send");
  }
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
  std::array<contender, 1> contenders;
};

const std::array rows = {
    row{"apply", "per_op_us", metric::latency, 20'000, 2'000, 4, {{{"raw_mpi", apply_session}}}},
    row{"async", "tasks_per_s", metric::rate, 100'000, 2'000, 1, {{{"raw_mpi", async_session}}}},
};

// As bench/mpi_bench.cpp's.
int base_of(int round, int slice) {
  return static_cast<int>((static_cast<u64>(round) * 7919 + static_cast<u64>(slice) * 104'729 + 26) % 1'000'000);
}

}  // namespace

int main(int argc, char** argv) {
  options opts;
  program.parse(argc, argv, opts, {{"--warmup", &opts.warmup, 0}, {"--window", &opts.window, 1}});
  const row& r = bench::select_row(rows, opts, program, 10'000'000);

  MPI_Init(&argc, &argv);
  int rank = 0;
  int ranks = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  if (ranks != 2) {
    if (rank == 0) std::fprintf(stderr, "mpi_raw_farm: run it under mpirun -np 2 (got %d ranks)\n", ranks);
    MPI_Finalize();
    return 2;
  }
  if (rank == 1) {
    serve();
    MPI_Finalize();
    return 0;
  }
  context c{opts.window};
  if (opts.warmup > 0) r.contenders[0].session(c, opts.warmup, base_of(0, 0) + 1);
  bench::print_rounds(r, opts, [&](std::size_t i, int round, int slice, long count) {
    return r.contenders[i].session(c, count, base_of(round, slice));
  });
  int stop = 0;
  check(MPI_Send(&stop, 1, MPI_INT, 1, stop_tag, MPI_COMM_WORLD), "MPI_Send");
  MPI_Finalize();
  return 0;
}
