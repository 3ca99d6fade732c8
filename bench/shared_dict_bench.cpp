// The shared-dict row: set and get operations per second on mproc::shared_dict<uint64_t,
// uint64_t> (Python's Manager().dict() is in bench/shared_dict_bench.py), beside a
// process-local std::unordered_map under a std::mutex: what a dict costs with no sharing
// at all, the floor.
//
// Workload (the same in Python): iteration i sets key i % 1024 to i, then gets it back; an
// iteration is two operations. The session folds every value read into a checksum and
// exits 2 if it is not the expected one.
//
// Output (stdout), CSV, one line per contender per round after a header:
//   round,contender,ops_per_s
// Rounds alternate which contender starts, in --slices sessions each (bench_support.hpp).
#include <chrono>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "bench_support.hpp"
#include "mproc/shared.hpp"

namespace {

using bench::clock_type;
using bench::u64;

constexpr bench::program program{"shared_dict_bench",
                                 "usage: mproc_shared_dict_bench --row shared-dict [--rounds R] [--iterations N]\n"
                                 "         [--slices S] [--start-round K] [--only CONTENDER]\n"
                                 "  R rounds (default 7). Per round each contender runs N iterations (default\n"
                                 "  1000000; each a set and a get) in S sessions (default 2) that alternate\n"
                                 "  between the contenders. Rounds are numbered from K (default 0).\n"
                                 "  Contenders: mproc, local_map; --only runs one.\n"
                                 "Prints CSV: round,contender,ops_per_s\n"};

constexpr u64 keys = 1024;

// The expected checksum of n iterations starting at `first`.
u64 expected(long first, long n) {
  bench::checksum sum;
  for (long i = first; i < first + n; ++i) sum.add(static_cast<u64>(i));
  return sum.h;
}

template <class Set, class Get>
bench::measured session(long first, long n, Set set, Get get) {
  bench::checksum sum;
  const auto t0 = clock_type::now();
  for (long i = first; i < first + n; ++i) {
    const u64 k = static_cast<u64>(i) % keys;
    set(k, static_cast<u64>(i));
    sum.add(get(k));
  }
  const auto elapsed = clock_type::now() - t0;
  if (sum.h != expected(first, n)) program.die("a get returned another value than the set before it");
  return {elapsed, 2.0 * static_cast<double>(n)};
}

struct contender {
  const char* name;
};
const contender contenders[] = {{"mproc"}, {"local_map"}};

}  // namespace

int main(int argc, char** argv) {
  bench::round_options o;
  program.parse(argc, argv, o);
  if (o.row != "shared-dict") program.misuse("--row must be shared-dict");
  if (o.iterations == 0) o.iterations = 1'000'000;
  if (o.slices == 0) o.slices = 2;
  if (!bench::any_selected(contenders, o.only)) program.die("no contender named '" + std::string(o.only) + "'");
  try {
    mproc::shared_dict<u64, u64> shared;
    std::unordered_map<u64, u64> local;
    std::mutex local_mutex;
    long next = 0;  // iterations continue across sessions: every set writes a new value
    const auto run = [&](std::size_t i, long n) {
      const long first = next;
      next += n;
      if (i == 0) {
        return session(
            first, n, [&](u64 k, u64 v) { shared.set(k, v); }, [&](u64 k) { return *shared.get(k); });
      }
      return session(
          first, n,
          [&](u64 k, u64 v) {
            std::lock_guard guard(local_mutex);
            local[k] = v;
          },
          [&](u64 k) {
            std::lock_guard guard(local_mutex);
            return local.at(k);
          });
    };
    // Warm-up: every key present, pages faulted in, the CPU clocked up.
    bench::for_each_selected(contenders, o.only,
                             [&](std::size_t i) { run(i, std::max<long>(keys, o.iterations / 20)); });
    bench::print_header("ops_per_s");
    for (int r = o.start_round; r < o.start_round + o.rounds; ++r) {
      const std::vector<bench::measured> total =
          bench::run_round<bench::measured>(contenders, o, r, [&](std::size_t i, int, long n) { return run(i, n); });
      bench::print_round(contenders, o.only, r, "%.6g",
                         [&](std::size_t i) { return bench::figure(bench::metric::rate, total[i]); });
    }
  } catch (const std::exception& e) {
    program.die(e.what());
  }
  return 0;
}
