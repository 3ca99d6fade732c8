// One point of the queue-throughput-vs-size curve (bench/curves.py draws it): 1 producer
// process -> 1 consumer process, messages of --bytes S each (a multiple of 8, at least 8).
// Contenders:
//   mproc        mproc::queue<std::vector<std::uint8_t>>, put/get one at a time: how a user
//                sends a buffer of bytes, at every size. get() returns a new vector.
//   mproc_array  mproc::queue<std::array<std::uint8_t, S>>, for S = 8, 64, 512 and 4096
//                only: the fixed-size record a user would pick for small messages (its
//                bytes are copied as they are: no length, no heap allocation per message).
//                At other sizes it is left out.
//   boost        boost::interprocess::message_queue with max_msg_size S, send() from one
//                reused buffer and receive() into another (only when built with Boost:
//                MPROC_BENCH_HAVE_BOOST). Its shared memory has a name in /dev/shm, which
//                bench/boost_queue.hpp removes as soon as the queue is made: the child
//                inherits the mapping by fork, so nothing is left there even if the program
//                is killed mid-session.
// Python's multiprocessing.Queue peer (bytes) is bench/queue_curve_bench.py.
//
// Every contender is bounded by the same --maxsize messages (Boost's queue must be; the
// default, also the driver's, keeps about 16 MiB in flight: 16 MiB / S, within [2, 65536]).
//
// Output (stdout), CSV, one line per contender per round after a header:
//   round,contender,msgs_per_s
// (bytes/s is msgs_per_s × S; the driver computes it). `--contenders` alone prints the
// contenders this build has, space-separated, and exits.
// Each round runs every contender over --iterations messages in --slices sessions (default
// 1) that alternate between the contenders (A B, B A, ...), after one untimed warm-up
// session of --warmup messages per contender and invocation. A session makes a fresh queue
// and forks a fresh producer (a daemon mproc::process); the parent consumes.
// Timing: the producer stores the CLOCK_MONOTONIC time at which it starts building its
// first message in shared memory (an mproc::shared_value); the consumer stops the clock once
// it has checked the last message. So every message of the session is counted, and the few
// a bounded queue lets the producer buffer ahead cannot inflate the rate even when a session
// moves only a handful of 64 MiB messages. Fork and process start-up are not timed.
// Verification, so that a broken path cannot look fast: message i carries 8-byte stamps
// derived from (session seed, i) at the start of every 4 KiB page and in its last 8 bytes;
// the consumer checks the size, every stamp and the order, and folds the stamps into a
// checksum compared with the expected one. A mismatch, a child that fails, or any exception
// exits with 2.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "mproc/process.hpp"
#include "mproc/queue.hpp"
#include "mproc/shared.hpp"

#ifdef MPROC_BENCH_HAVE_BOOST
#include "boost_queue.hpp"
#endif

namespace {

using bench::checksum;
using bench::measured;
using bench::metric;
using bench::u64;

constexpr std::size_t stamp_stride = 4096;
constexpr long max_bytes = long{1} << 30;  // 1 GiB per message at most
constexpr std::array array_sizes = {std::size_t{8}, std::size_t{64}, std::size_t{512}, std::size_t{4096}};

constexpr bench::program program{"queue_curve_bench",
                                 "usage: mproc_queue_curve_bench --bytes S [--rounds R] [--iterations N] [--slices K]\n"
                                 "         [--warmup W] [--maxsize M] [--start-round F] [--only CONTENDER]\n"
                                 "       mproc_queue_curve_bench --contenders\n"
                                 "  S bytes per message (a multiple of 8, 8 to 1 GiB). R rounds (default 7) of N\n"
                                 "  messages per contender (default: about 0.2 s worth) in K sessions (default 1)\n"
                                 "  that alternate between the contenders, after one untimed warm-up session of W\n"
                                 "  messages per contender (default N/8, within [2, 10000]). M: every queue's maxsize\n"
                                 "  (default 16 MiB / S, within [2, 65536]). Rounds are numbered from F (default 0).\n"
                                 "  Contenders: mproc; mproc_array (S = 8, 64, 512, 4096); boost (if built with it).\n"
                                 "Prints CSV: round,contender,msgs_per_s\n"};

struct options : bench::round_options {
  long bytes = 0;
  long warmup = -1;   // -1: N/8 within [2, 10000]
  long maxsize = -1;  // -1: 16 MiB / S within [2, 65536]
};

// Where a message of `size` bytes carries its stamps: the start of every 4 KiB page, and its
// last 8 bytes.
struct layout {
  std::size_t size = 0;
  std::vector<std::size_t> offsets;

  explicit layout(std::size_t s) : size(s) {
    for (std::size_t at = 0; at + 8 <= s; at += stamp_stride) offsets.push_back(at);
    if ((s - 8) % stamp_stride != 0) offsets.push_back(s - 8);
  }
  std::size_t stamps() const { return offsets.size(); }
};

// Stamp k of a session: distinct per session, so that stale bytes of an earlier session
// cannot pass for fresh ones.
u64 value_of(u64 seed, u64 k) { return seed + k * 0x9e37'79b9'7f4a'7c15ULL; }

u64 expected_checksum(u64 seed, u64 count) {
  checksum c;
  for (u64 k = 0; k < count; ++k) c.add(value_of(seed, k));
  return c.h;
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(bench::clock_type::now().time_since_epoch()).count();
}

// Writes message i's stamps into `m`.
void stamp(std::uint8_t* m, const layout& l, u64 seed, u64 i) {
  const u64 first = i * l.stamps();
  for (std::size_t j = 0; j < l.stamps(); ++j) {
    const u64 v = value_of(seed, first + j);
    std::memcpy(m + l.offsets[j], &v, sizeof v);
  }
}

// Checks message i (`size` bytes at `m`) and folds its stamps into `sum`.
void verify(const char* what, const std::uint8_t* m, std::size_t size, const layout& l, u64 seed, u64 i,
            checksum& sum) {
  if (size != l.size) {
    throw std::runtime_error(std::string(what) + ": message " + std::to_string(i) + " has " + std::to_string(size) +
                             " bytes, expected " + std::to_string(l.size));
  }
  const u64 first = i * l.stamps();
  for (std::size_t j = 0; j < l.stamps(); ++j) {
    u64 v;
    std::memcpy(&v, m + l.offsets[j], sizeof v);
    if (v != value_of(seed, first + j)) {
      throw std::runtime_error(std::string(what) + ": message " + std::to_string(i) + " holds " + std::to_string(v) +
                               " at byte " + std::to_string(l.offsets[j]) + ", expected " +
                               std::to_string(value_of(seed, first + j)));
    }
    sum.add(v);
  }
}

// Filler for the bytes between stamps, as a producer's real data would be.
void fill(std::uint8_t* m, std::size_t size) {
  for (std::size_t i = 0; i < size; ++i) m[i] = static_cast<std::uint8_t>(i * 131 + 7);
}

// The session's clock start, written by the producer.
class start_time {
 public:
  void mark() { std::atomic_ref<std::int64_t>(ns_.value()).store(now_ns(), std::memory_order_release); }
  std::int64_t get() { return std::atomic_ref<std::int64_t>(ns_.value()).load(std::memory_order_acquire); }

 private:
  mproc::shared_value<std::int64_t> ns_{0};
};

// The end of a session: the producer has exited cleanly, the checksum is right, and the
// clock ran from the producer's start to `end_ns`.
measured finish(const char* what, mproc::process& producer, start_time& start, std::int64_t end_ns, const checksum& sum,
                const layout& l, u64 seed, long n) {
  producer.join();
  const auto code = producer.exitcode();
  if (code != 0) program.die(std::string(what) + ": producer exited with " + (code ? std::to_string(*code) : "?"));
  if (sum.h != expected_checksum(seed, static_cast<u64>(n) * l.stamps())) {
    program.die(std::string(what) + ": checksum mismatch");
  }
  const std::int64_t begin = start.get();
  if (begin == 0 || end_ns <= begin) program.die(std::string(what) + ": the producer did not record its start");
  return {std::chrono::nanoseconds(end_ns - begin), static_cast<double>(n)};
}

// ---- contenders -----------------------------------------------------------------------

measured mproc_vector(const options& o, const layout& l, long n, u64 seed) {
  mproc::queue<std::vector<std::uint8_t>> q(static_cast<std::size_t>(o.maxsize));
  start_time start;
  auto producer = bench::start_child([q, &start, &l, n, seed]() mutable {
    start.mark();
    std::vector<std::uint8_t> m(l.size);
    fill(m.data(), m.size());
    for (long i = 0; i < n; ++i) {
      stamp(m.data(), l, seed, static_cast<u64>(i));
      q.put(m);
    }
  });
  checksum sum;
  for (long i = 0; i < n; ++i) {
    const std::vector<std::uint8_t> m = q.get();
    verify("mproc", m.data(), m.size(), l, seed, static_cast<u64>(i), sum);
  }
  return finish("mproc", producer, start, now_ns(), sum, l, seed, n);
}

template <std::size_t N>
measured mproc_array(const options& o, const layout& l, long n, u64 seed) {
  using message = std::array<std::uint8_t, N>;
  mproc::queue<message> q(static_cast<std::size_t>(o.maxsize));
  start_time start;
  auto producer = bench::start_child([q, &start, &l, n, seed]() mutable {
    start.mark();
    message m;
    fill(m.data(), m.size());
    for (long i = 0; i < n; ++i) {
      stamp(m.data(), l, seed, static_cast<u64>(i));
      q.put(m);
    }
  });
  checksum sum;
  for (long i = 0; i < n; ++i) {
    const message m = q.get();
    verify("mproc_array", m.data(), m.size(), l, seed, static_cast<u64>(i), sum);
  }
  return finish("mproc_array", producer, start, now_ns(), sum, l, seed, n);
}

measured mproc_array_of(const options& o, const layout& l, long n, u64 seed) {
  switch (l.size) {
    case 8:
      return mproc_array<8>(o, l, n, seed);
    case 64:
      return mproc_array<64>(o, l, n, seed);
    case 512:
      return mproc_array<512>(o, l, n, seed);
    case 4096:
      return mproc_array<4096>(o, l, n, seed);
    default:
      program.die("mproc_array: no fixed-size type for " + std::to_string(l.size) + " bytes");
  }
}

#ifdef MPROC_BENCH_HAVE_BOOST
measured boost_queue(const options& o, const layout& l, long n, u64 seed) {
  // Its name is gone from /dev/shm already: the mapping outlives it, and fork copies it.
  const auto mq = bench::make_boost_queue(static_cast<std::size_t>(o.maxsize), l.size);
  auto* q = mq.get();
  start_time start;
  auto producer = bench::start_child([q, &start, &l, n, seed] {
    start.mark();
    std::vector<std::uint8_t> m(l.size);
    fill(m.data(), m.size());
    for (long i = 0; i < n; ++i) {
      stamp(m.data(), l, seed, static_cast<u64>(i));
      q->send(m.data(), m.size(), 0);
    }
  });
  checksum sum;
  std::vector<std::uint8_t> m(l.size);
  for (long i = 0; i < n; ++i) {
    const std::size_t got = bench::receive(*q, m.data(), m.size());
    verify("boost", m.data(), got, l, seed, static_cast<u64>(i), sum);
  }
  return finish("boost", producer, start, now_ns(), sum, l, seed, n);
}
#endif

struct contender {
  const char* name;
  measured (*session)(const options&, const layout&, long n, u64 seed);
};

constexpr std::array all_contenders = {
    contender{"mproc", mproc_vector},
    contender{"mproc_array", mproc_array_of},
#ifdef MPROC_BENCH_HAVE_BOOST
    contender{"boost", boost_queue},
#endif
};

struct row {
  const char* name = "queue-curve";
  const char* metric_name = "msgs_per_s";
  metric kind = metric::rate;
  std::vector<contender> contenders;
};

// Session seeds: distinct for every session of every round and contender.
u64 seed_of(int round, int slice, std::size_t contender) {
  return (u64(round) << 40) ^ (u64(slice) << 20) ^ (u64(contender) << 8) ^ 0x5eed'0000'0000'0001ULL;
}

// About 0.2 s of work for mproc on a 2-core VM: ~150 ns per message plus ~3 GB/s.
long default_iterations(long bytes) {
  const double seconds = 150e-9 + static_cast<double>(bytes) / 3e9;
  return std::clamp(static_cast<long>(0.2 / seconds), 4L, 2'000'000L);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string_view(argv[1]) == "--contenders") {
    for (std::size_t i = 0; i < all_contenders.size(); ++i) {
      std::printf("%s%s", i == 0 ? "" : " ", all_contenders[i].name);
    }
    std::printf("\n");
    return 0;
  }
  options o;
  program.parse(argc, argv, o, {{"--bytes", &o.bytes, 8}, {"--warmup", &o.warmup, 0}, {"--maxsize", &o.maxsize, 1}});
  if (o.bytes == 0) program.misuse("--bytes is required");
  if (o.bytes % 8 != 0 || o.bytes > max_bytes) program.misuse("--bytes must be a multiple of 8, at most 1 GiB");
  if (o.iterations == 0) o.iterations = default_iterations(o.bytes);
  if (o.warmup < 0) o.warmup = std::clamp(o.iterations / 8, 2L, 10'000L);
  if (o.maxsize < 0) o.maxsize = std::clamp((long{16} << 20) / o.bytes, 2L, 65'536L);
  if (o.slices == 0) o.slices = 1;
  o.slices = static_cast<int>(std::min<long>(o.slices, o.iterations));
  const layout l(static_cast<std::size_t>(o.bytes));

  row r;
  for (const contender& c : all_contenders) {
    const bool fits = std::string_view(c.name) != "mproc_array" ||
                      std::find(array_sizes.begin(), array_sizes.end(), l.size) != array_sizes.end();
    if (fits) r.contenders.push_back(c);
  }
  if (!bench::any_selected(r.contenders, o.only)) {
    program.die("no contender named '" + std::string(o.only) + "' at " + std::to_string(o.bytes) + " bytes");
  }
  try {
    if (o.warmup > 0) {
      bench::for_each_selected(r.contenders, o.only,
                               [&](std::size_t i) { r.contenders[i].session(o, l, o.warmup, seed_of(0, 0, i) + 1); });
    }
    bench::print_rounds(r, o, [&](std::size_t i, int round, int slice, long n) {
      return r.contenders[i].session(o, l, n, seed_of(round, slice, i));
    });
  } catch (const std::exception& e) {
    program.die(e.what());
  }
  return 0;
}
