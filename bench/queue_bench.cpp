// The queue rows of DESIGN.md's performance contract, one row per run (--row):
//   queue-small  1 producer process -> 1 consumer process, 8-byte messages
//                (mproc::queue<std::uint64_t>): put/get one at a time ("mproc") and in
//                batches of --batch with put_many/get_many ("mproc_batch"), beside the
//                physical ceiling: a hand-written single-producer single-consumer ring of
//                uint64_t in shared memory that spins and yields but never sleeps
//                ("hand_ring"), and the same ring moving 16 bytes per message, as many as
//                mproc's record of one ("hand_ring_16"). msgs_per_s.
//   queue-small-64, queue-small-1024, queue-small-65536
//                the same, put/get one at a time, with the queue bounded at maxsize 64,
//                1024 or 65536 ("mproc_64", ...), beside Boost with as many slots
//                ("boost_64", ...): the bounds users write. msgs_per_s.
//   queue-mpsc-1, queue-mpsc-4, queue-mpsc-8
//                1, 4 or 8 producer processes -> 1 consumer process, 8-byte messages,
//                mproc::queue<std::uint64_t> with maxsize 1024 ("mproc_p1", ...), beside
//                Boost with 1024 slots ("boost_p1", ...). The producers of a session wait
//                at a start line (a pipe) until all of them are forked, then put their
//                share of the messages (an even split) one at a time. msgs_per_s: the
//                messages the consumer receives per second, from all producers together.
//   queue-large  the same as queue-small with 1 MiB messages (mproc::queue<std::vector<std::uint8_t>>,
//                "mproc"), beside the physical limit: one memcpy of 1 MiB per message from
//                a pool of sources larger than the last-level cache ("memcpy"). gb_per_s
//                (10^9 bytes of payload per second).
//   ping-pong    a round trip between two processes through two queue<std::uint64_t>:
//                the parent puts on one, the child answers on the other ("mproc"),
//                beside the floor of mproc's design: two processes taking turns on one
//                futex word in shared memory, spinning as mproc's queues do, then
//                sleeping with FUTEX_WAIT ("futex_pingpong"). per_op_us.
// Each row also runs Boost.Interprocess 1.74's message_queue, the peer DESIGN.md's
// performance contract names ("boost"), through the very sessions mproc's queues run
// (boost_queue below). Python's multiprocessing peers are in bench/queue_bench.py.
//
// Output (stdout), CSV, one line per contender per round after a header:
//   round,contender,<metric>
// Each round runs every contender over --iterations messages (round trips; the fast
// mproc_batch and memcpy over 8 times as many, hand_ring over 32 times, hand_ring_16 over
// 16 times, so that they run long enough to time; boost over twice as many in queue-large and a fifth as many in
// ping-pong, where a round trip costs it several times mproc's), split into --slices
// sessions that alternate between the contenders (A B, B A, ...), and rounds alternate
// which one starts, as in bench/spawn_bench.cpp. A session forks a fresh child (a daemon
// mproc::process), and the fork is not timed:
// - queue rows: the child produces (queue-mpsc: the children), the parent consumes. The clock starts when the parent
//   has received the first message (or batch) and stops at the last one; the rate counts
//   the messages in between. That is the end-to-end throughput, whichever side is slower.
// - ping-pong: the clock runs over --iterations round trips after --warmup untimed ones.
// A message lost on the way leaves the consumer waiting: the driver's timeout reports it.
// Verification, so that a broken queue cannot look fast: every message carries values
// derived from (session seed, index); the consumer checks the count, each value and its
// order (8-byte messages: the value itself; 1 MiB messages: the size and one 8-byte stamp
// in every 4 KiB page) and folds them into a checksum compared with the expected one. In
// queue-mpsc a message carries its producer in its top byte, and the consumer checks the
// order, count and checksum per producer: a queue keeps each producer's messages in order,
// not the interleaving between producers. The
// ping-pong child checks each request likewise and the parent each answer. A child that
// finds a mismatch throws (exit code 1), which the parent reports; any failure exits 2.
//
// --only runs one contender (for profiling it alone with perf or strace).
//
// Boost's queues are bounded: --maxsize M slots, or where M is 0 (unbounded, mproc's
// default in queue-small and ping-pong) the row's boost_slots. In queue-small that is 65536:
// Boost preallocates its slots (32 bytes each for 8-byte messages: a header, the payload,
// an index entry), and a Boost queue that runs full or empty costs a condition-variable
// sleep and wake-up, so too few slots hold Boost back: on the 2-core development VM, in its
// faster runs, 64 slots gave 1.5-5.6M msg/s, 256 12M, 1024 15M, 65536 18-19M and 262144
// 14-16M (in its slower runs every capacity from 256 up, and mproc too, gave 6.5-9M).
// 65536 slots (2 MiB) are Boost's best, so that its bound cannot be what it loses on;
// `--maxsize C --only boost` lets anyone check. The rows queue-small-64, -1024 and -65536
// and queue-mpsc-* bound both queues alike. In ping-pong, where each queue holds at
// most one message, 16 as in queue-large.
#include <linux/futex.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "bench_support.hpp"
#include "boost_queue.hpp"
#include "mproc/process.hpp"
#include "mproc/queue.hpp"

namespace {

using bench::checksum;
using bench::clock_type;
using bench::measured;
using bench::metric;
using bench::start_child;
using bench::u64;

constexpr std::size_t large_bytes = std::size_t{1} << 20;  // 1 MiB
constexpr std::size_t stamp_stride = 4096;                 // one stamp per page
constexpr std::size_t stamps_per_message = large_bytes / stamp_stride;
// Sources of the memcpy peer: larger than the last-level cache (32 MiB on the
// development VM), so that each copy reads from RAM.
constexpr std::size_t memcpy_pool = 64;

constexpr bench::program program{"queue_bench",
                                 "usage: mproc_queue_bench --row ROW [--rounds R]\n"
                                 "         [--iterations N] [--slices S] [--warmup W] [--start-round K]\n"
                                 "         [--batch B] [--maxsize M] [--only CONTENDER]\n"
                                 "  ROW: queue-small, queue-small-64, queue-small-1024, queue-small-65536,\n"
                                 "  queue-mpsc-1, queue-mpsc-4, queue-mpsc-8, queue-large or ping-pong.\n"
                                 "  R rounds (default 7). Per round each contender moves N messages (ping-pong:\n"
                                 "  round trips; defaults 2000000 in queue-small, 500000 in queue-small-64,\n"
                                 "  1000000 in queue-small-1024 and -65536 and queue-mpsc-1, 600000 and 400000 in\n"
                                 "  queue-mpsc-4 and -8, 1000 in queue-large, 100000 in ping-pong; queue-mpsc: N in\n"
                                 "  all, split evenly among the producers; mproc_batch and memcpy move 8 N,\n"
                                 "  hand_ring 32 N, hand_ring_16 16 N, boost 2 N in queue-large and N/5 in ping-pong)\n"
                                 "  in S sessions (default 2) that alternate between the contenders, after one\n"
                                 "  untimed warm-up session of W messages per invocation (ping-pong: W untimed\n"
                                 "  round trips per session). Rounds are numbered from K (default 0). B: the\n"
                                 "  batch size of mproc_batch (default 256). M: the queues' maxsize (0: unbounded;\n"
                                 "  default 0, queue-small-B B, queue-mpsc-* 1024, queue-large 16); Boost's queues,\n"
                                 "  which must be bounded, hold M messages, or where M is 0 65536 (queue-small)\n"
                                 "  or 16 (ping-pong).\n"
                                 "  Contenders: queue-small mproc, mproc_batch, hand_ring, hand_ring_16, boost;\n"
                                 "  queue-small-B mproc_B, boost_B; queue-mpsc-P mproc_pP, boost_pP; queue-large\n"
                                 "  memcpy, mproc, boost; ping-pong mproc, futex_pingpong, boost.\n"
                                 "  --only runs one (to profile it).\n"
                                 "Prints CSV: round,contender,<msgs_per_s|gb_per_s|per_op_us>\n"};

struct options : bench::round_options {
  long warmup = -1;  // -1: the row's default
  long batch = 256;
  long maxsize = -1;     // -1: the row's default
  long boost_slots = 0;  // Boost's max_num_msg: maxsize, or the row's boost_slots if that is 0
};

options parse(int argc, char** argv) {
  options o;
  program.parse(argc, argv, o, {{"--warmup", &o.warmup, 0}, {"--batch", &o.batch, 1}, {"--maxsize", &o.maxsize, 0}});
  if (o.slices == 0) o.slices = 2;
  return o;
}

// The value of message (or stamp) i of a session: distinct per session, so that stale
// bytes from an earlier session cannot pass for fresh ones.
u64 value_of(u64 seed, u64 i) { return seed + i * 0x9e37'79b9'7f4a'7c15ULL; }

u64 expected_checksum(u64 seed, u64 count) {
  checksum c;
  for (u64 i = 0; i < count; ++i) c.add(value_of(seed, i));
  return c.h;
}

// `what` (e.g. "consumer: message 5") holds `got` instead of `want`.
[[noreturn]] void mismatch(const std::string& what, u64 got, u64 want) {
  throw std::runtime_error(what + " holds " + std::to_string(got) + ", expected " + std::to_string(want));
}

std::string nth(const char* who, u64 i) { return std::string(who) + ": message " + std::to_string(i); }

void join_child(mproc::process& p, const std::string& what) {
  p.join();
  const auto code = p.exitcode();
  if (code != 0) program.die(what + ": child exited with " + (code ? std::to_string(*code) : "?"));
}

// A 1 MiB message filled with bytes as a producer's real data would be.
std::vector<std::uint8_t> filled_message() {
  std::vector<std::uint8_t> m(large_bytes);
  for (std::size_t i = 0; i < m.size(); ++i) m[i] = static_cast<std::uint8_t>(i * 131 + 7);
  return m;
}

// ---- the queues ---------------------------------------------------------------------------

// The sessions of the "mproc" and "boost" contenders are templates over the queue, Queue<T>,
// made from the options, with mproc::queue's put(const T&) and get(). A copy shares the
// queue: the sessions capture it by value in the child they fork.

// mproc's queue, bounded by --maxsize (0: unbounded).
template <class T>
struct mproc_queue : mproc::queue<T> {
  static constexpr const char* name = "mproc";
  explicit mproc_queue(const options& o) : mproc::queue<T>(static_cast<std::size_t>(o.maxsize)) {}
};

// Boost's message_queue of o.boost_slots messages of a T (u64), or of 1 MiB (a vector of
// bytes). Its get() of a vector receives into a buffer of this copy's own, allocated and
// touched in the first get() (untimed in every session), and returns a view of it, where
// mproc's get() returns a fresh vector: Boost receives into the caller's buffer, and that
// is what a user of Boost would do.
template <class T>
class boost_queue {
 public:
  static constexpr const char* name = "boost";
  static constexpr bool bytes = std::is_same_v<T, std::vector<std::uint8_t>>;
  static_assert(bytes || std::is_same_v<T, u64>);

  explicit boost_queue(const options& o)
      : q_(bench::make_boost_queue(static_cast<std::size_t>(o.boost_slots), bytes ? large_bytes : sizeof(u64))) {}

  void put(const T& v) {
    if constexpr (bytes) {
      q_->send(v.data(), v.size(), 0);
    } else {
      q_->send(&v, sizeof v, 0);
    }
  }

  auto get() {
    if constexpr (bytes) {
      if (buffer_.empty()) buffer_ = filled_message();
      return std::span<const std::uint8_t>(buffer_.data(), bench::receive(*q_, buffer_.data(), buffer_.size()));
    } else {
      u64 v = 0;
      const std::size_t got = bench::receive(*q_, &v, sizeof v);
      if (got != sizeof v) mismatch("boost: a message's size", got, sizeof v);
      return v;
    }
  }

 private:
  std::shared_ptr<boost::interprocess::message_queue> q_;
  std::vector<std::uint8_t> buffer_;
};

// ---- queue-small ----------------------------------------------------------------------

template <template <class> class Queue>
measured small_single(const options& o, long n, u64 seed) {
  const std::string what = std::string("queue-small ") + Queue<u64>::name;
  Queue<u64> q(o);
  auto producer = start_child([q, n, seed]() mutable {
    for (long i = 0; i < n; ++i) q.put(value_of(seed, static_cast<u64>(i)));
  });
  checksum sum;
  const auto check = [&](u64 i, u64 v) {
    if (v != value_of(seed, i)) mismatch(nth("consumer", i), v, value_of(seed, i));
    sum.add(v);
  };
  check(0, q.get());
  const auto t0 = clock_type::now();
  for (long i = 1; i < n; ++i) check(static_cast<u64>(i), q.get());
  const auto t1 = clock_type::now();
  join_child(producer, what + " producer");
  if (sum.h != expected_checksum(seed, static_cast<u64>(n))) program.die(what + ": checksum mismatch");
  return {t1 - t0, static_cast<double>(n - 1)};
}

measured small_batch(const options& o, long n, u64 seed) {
  mproc::queue<u64> q(static_cast<std::size_t>(o.maxsize));
  const long batch = o.batch;
  auto producer = start_child([q, n, seed, batch]() mutable {
    std::vector<u64> values(static_cast<std::size_t>(batch));
    for (long i = 0; i < n; i += batch) {
      const long k = std::min(batch, n - i);
      for (long j = 0; j < k; ++j) values[static_cast<std::size_t>(j)] = value_of(seed, static_cast<u64>(i + j));
      q.put_many(std::span<const u64>(values.data(), static_cast<std::size_t>(k)));
    }
  });
  checksum sum;
  u64 got = 0;
  const auto take = [&] {
    const std::vector<u64> values = q.get_many(static_cast<std::size_t>(batch));
    if (values.empty()) program.die("queue-small mproc_batch: get_many returned nothing");
    for (const u64 v : values) {
      if (v != value_of(seed, got)) mismatch(nth("consumer", got), v, value_of(seed, got));
      sum.add(v);
      ++got;
    }
  };
  take();
  const u64 first = got;
  const auto t0 = clock_type::now();
  while (got < static_cast<u64>(n)) take();
  const auto t1 = clock_type::now();
  join_child(producer, "queue-small mproc_batch producer");
  if (got != static_cast<u64>(n)) program.die("queue-small mproc_batch: received more messages than were put");
  if (sum.h != expected_checksum(seed, got)) program.die("queue-small mproc_batch: checksum mismatch");
  if (got == first) program.die("queue-small mproc_batch: the first batch held every message; raise --iterations");
  return {t1 - t0, static_cast<double>(got - first)};
}

// ---- queue-mpsc -----------------------------------------------------------------------

// Message i of producer p: p in the top byte, beneath it 56 bits of value_of(seed, i), so
// that the consumer tells the producers apart and checks each one's order.
constexpr unsigned producer_shift = 56;

u64 mpsc_value(u64 seed, u64 p, u64 i) {
  return (p << producer_shift) | (value_of(seed, i) & ((u64{1} << producer_shift) - 1));
}

u64 mpsc_checksum(u64 seed, u64 p, u64 count) {
  checksum c;
  for (u64 i = 0; i < count; ++i) c.add(mpsc_value(seed, p, i));
  return c.h;
}

// The start line of a session's producers: a pipe, from which each producer reads one byte
// before its first put, and into which the parent writes one byte per producer once it has
// forked them all. So all producers start together, not one fork (~0.2-1 ms) apart, and
// the first one does not run alone for a while. A producer sleeps in read() meanwhile:
// it takes no core from the forks. (Daemon children: a parent that dies takes them along.)
class start_line {
 public:
  start_line() {
    if (::pipe(fds_) != 0) program.die_errno("pipe");
  }
  start_line(const start_line&) = delete;
  start_line& operator=(const start_line&) = delete;
  ~start_line() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }

  int read_end() const { return fds_[0]; }

  // In a producer (the read end it inherited): returns once the parent lets it go.
  static void wait(int fd) {
    char go = 0;
    for (;;) {
      const ::ssize_t got = ::read(fd, &go, 1);
      if (got == 1) return;
      if (got < 0 && errno == EINTR) continue;
      throw std::runtime_error("producer: the start line's pipe failed");
    }
  }

  // In the parent: lets `producers` producers go.
  void release(std::size_t producers) const {
    const std::vector<char> go(producers, 'g');
    std::size_t done = 0;
    while (done < producers) {
      const ::ssize_t put = ::write(fds_[1], go.data() + done, producers - done);
      if (put < 0 && errno == EINTR) continue;
      if (put <= 0) program.die_errno("write to the start line");
      done += static_cast<std::size_t>(put);
    }
  }

 private:
  int fds_[2] = {-1, -1};
};

// `Producers` child processes put n messages in all (producer p its share, bench::slice_size),
// one at a time; the parent consumes them. The clock starts at the first message received.
template <template <class> class Queue, unsigned Producers>
measured mpsc(const options& o, long n, u64 seed) {
  static_assert(Producers >= 1 && Producers < 256);
  const std::string what =
      std::string("queue-mpsc ") + Queue<u64>::name + " with " + std::to_string(Producers) + " producers";
  Queue<u64> q(o);
  const start_line line;
  std::array<long, Producers> share{};
  std::vector<mproc::process> producers;
  producers.reserve(Producers);
  for (unsigned p = 0; p < Producers; ++p) {
    const long count = bench::slice_size(n, static_cast<int>(Producers), static_cast<int>(p));
    share[p] = count;
    producers.push_back(start_child([q, fd = line.read_end(), p, count, seed]() mutable {
      start_line::wait(fd);
      for (long i = 0; i < count; ++i) q.put(mpsc_value(seed, p, static_cast<u64>(i)));
    }));
  }
  line.release(Producers);
  std::array<u64, Producers> next{};  // per producer: how many of its messages came
  std::array<checksum, Producers> sums{};
  const auto take = [&] {
    const u64 v = q.get();
    const u64 p = v >> producer_shift;
    if (p >= Producers) mismatch("consumer: a message's producer", p, Producers - 1);
    const u64 want = mpsc_value(seed, p, next[p]);
    if (v != want) mismatch(nth("consumer", next[p]) + " of producer " + std::to_string(p), v, want);
    sums[p].add(v);
    ++next[p];
  };
  take();
  const auto t0 = clock_type::now();
  for (long i = 1; i < n; ++i) take();
  const auto t1 = clock_type::now();
  for (unsigned p = 0; p < Producers; ++p) join_child(producers[p], what + ", producer " + std::to_string(p));
  for (unsigned p = 0; p < Producers; ++p) {
    const auto count = static_cast<u64>(share[p]);
    if (next[p] != count) {
      program.die(what + ": producer " + std::to_string(p) + " sent " + std::to_string(count) +
                  " messages, the consumer received " + std::to_string(next[p]));
    }
    if (sums[p].h != mpsc_checksum(seed, p, count)) {
      program.die(what + ": checksum mismatch of producer " + std::to_string(p));
    }
  }
  return {t1 - t0, static_cast<double>(n - 1)};
}

// ---- queue-large ----------------------------------------------------------------------

// Writes message i's stamps: one 8-byte value at the start of every 4 KiB page.
void stamp(std::uint8_t* message, u64 seed, u64 i) {
  for (std::size_t j = 0; j < stamps_per_message; ++j) {
    const u64 v = value_of(seed, i * stamps_per_message + j);
    std::memcpy(message + j * stamp_stride, &v, sizeof v);
  }
}

// Checks message i's stamps and folds them into `sum`.
void verify(const std::uint8_t* message, u64 seed, u64 i, checksum& sum) {
  for (std::size_t j = 0; j < stamps_per_message; ++j) {
    u64 v;
    std::memcpy(&v, message + j * stamp_stride, sizeof v);
    const u64 k = i * stamps_per_message + j;
    if (v != value_of(seed, k)) mismatch(nth("consumer", i) + ", page " + std::to_string(j), v, value_of(seed, k));
    sum.add(v);
  }
}

measured large_memcpy(const options&, long n, u64 seed) {
  // Allocated and touched once per program: the copies read memory, not page faults.
  static std::vector<std::vector<std::uint8_t>> sources = [] {
    std::vector<std::vector<std::uint8_t>> s;
    for (std::size_t i = 0; i < memcpy_pool; ++i) s.push_back(filled_message());
    return s;
  }();
  static std::vector<std::uint8_t> target = filled_message();
  checksum sum;
  const auto t0 = clock_type::now();
  for (long i = 0; i < n; ++i) {
    std::uint8_t* source = sources[static_cast<std::size_t>(i) % memcpy_pool].data();
    stamp(source, seed, static_cast<u64>(i));  // as a producer would
    std::memcpy(target.data(), source, large_bytes);
    verify(target.data(), seed, static_cast<u64>(i), sum);  // as a consumer would
  }
  const auto t1 = clock_type::now();
  if (sum.h != expected_checksum(seed, static_cast<u64>(n) * stamps_per_message)) {
    program.die("memcpy: checksum mismatch");
  }
  return {t1 - t0, static_cast<double>(n) * large_bytes};
}

template <template <class> class Queue>
measured large_queue(const options& o, long n, u64 seed) {
  const std::string what = std::string("queue-large ") + Queue<std::vector<std::uint8_t>>::name;
  Queue<std::vector<std::uint8_t>> q(o);
  auto producer = start_child([q, n, seed]() mutable {
    std::vector<std::uint8_t> message = filled_message();
    for (long i = 0; i < n; ++i) {
      stamp(message.data(), seed, static_cast<u64>(i));
      q.put(message);
    }
  });
  checksum sum;
  const auto take = [&](long i) {
    const auto message = q.get();
    if (message.size() != large_bytes) {
      program.die(what + ": message " + std::to_string(i) + " has " + std::to_string(message.size()) + " bytes");
    }
    verify(message.data(), seed, static_cast<u64>(i), sum);
  };
  take(0);
  const auto t0 = clock_type::now();
  for (long i = 1; i < n; ++i) take(i);
  const auto t1 = clock_type::now();
  join_child(producer, what + " producer");
  if (sum.h != expected_checksum(seed, static_cast<u64>(n) * stamps_per_message)) {
    program.die(what + ": checksum mismatch");
  }
  return {t1 - t0, static_cast<double>(n - 1) * large_bytes};
}

// ---- ping-pong ------------------------------------------------------------------------

template <template <class> class Queue>
measured ping_pong(const options& o, long n, u64 seed) {
  const std::string what = std::string("ping-pong ") + Queue<u64>::name;
  Queue<u64> requests(o);
  Queue<u64> answers(o);
  const long total = n + o.warmup;
  auto echo = start_child([requests, answers, total, seed]() mutable {
    for (long i = 0; i < total; ++i) {
      const u64 v = requests.get();
      const u64 want = value_of(seed, static_cast<u64>(i));
      if (v != want) mismatch(nth("echo", static_cast<u64>(i)), v, want);
      answers.put(~v);
    }
  });
  checksum sum;
  const auto round_trip = [&](long i) {
    const u64 v = value_of(seed, static_cast<u64>(i));
    requests.put(v);
    const u64 answer = answers.get();
    if (answer != ~v) mismatch(nth("ping-pong parent", static_cast<u64>(i)) + "'s answer", answer, ~v);
    sum.add(~answer);
  };
  for (long i = 0; i < o.warmup; ++i) round_trip(i);
  const auto t0 = clock_type::now();
  for (long i = o.warmup; i < total; ++i) round_trip(i);
  const auto t1 = clock_type::now();
  join_child(echo, what + " echo");
  if (sum.h != expected_checksum(seed, static_cast<u64>(total))) program.die(what + ": checksum mismatch");
  return {t1 - t0, static_cast<double>(n)};
}

// ---- raw peers: a hand-written ring and a futex ping-pong ----------------------------

// A T in anonymous MAP_SHARED memory, which a child forked after its construction shares
// with the parent (at the same address); unmapped with the owner. No name anywhere: nothing
// is left behind in /dev/shm, whatever way the program ends.
template <class T>
class shared_object {
 public:
  shared_object() {
    void* p = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) program.die_errno("mmap");
    object_ = ::new (p) T();
  }
  shared_object(const shared_object&) = delete;
  shared_object& operator=(const shared_object&) = delete;
  ~shared_object() {
    object_->~T();
    ::munmap(object_, sizeof(T));
  }
  T* get() const { return object_; }

 private:
  T* object_;
};

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spins until ready() holds, with the budget of mproc's queues (wait_for_condition in
// src/wait/futex.hpp): 255 pauses, then sched_yield, for 20 µs. Returns whether ready() held;
// `forever` keeps yielding past the budget instead of giving up.
template <class Ready>
bool spin_until(Ready ready, bool forever) {
  if (ready()) return true;
  const auto give_up = clock_type::now() + std::chrono::microseconds(20);
  for (unsigned i = 1;; ++i) {
    if (i < 256) {
      cpu_relax();
    } else {
      ::sched_yield();
    }
    if (ready()) return true;
    if (!forever && i % 32 == 0 && clock_type::now() >= give_up) return false;
  }
}

// hand_ring: the ceiling of queue-small, what moving 8-byte messages through shared memory
// one at a time costs with nothing else: a single-producer single-consumer ring of u64,
// each side publishing its index with one release store and reading the other's only when
// its cached copy runs out. Neither side ever sleeps: a side waits spinning, then yielding
// (spin_until forever), which spares it the store-load fence per message that a ring able
// to sleep needs (see futex_pingpong). 16384 slots (128 KiB): the producer can run far
// ahead before it finds the ring full, and the ring stays in the L2 cache (1 MiB per core
// on the 2-core development VM).
//
// hand_ring_16: the same ring with 16-byte slots, the value and its index (both checked):
// a message takes the bytes of mproc's record of a std::uint64_t (an 8-byte head, then the
// value), four to a cache line where hand_ring has eight. The consumer reads each line the
// producer wrote, and a line moving between two cores costs the same whatever it holds,
// so this ring's rate is the ceiling of any queue that moves 16 bytes per message: mproc's
// gap to it is its software, the gap between the two rings is the record's size.
constexpr std::size_t ring_slots = 16384;

template <std::size_t Words>
struct hand_ring {
  alignas(64) std::atomic<u64> head{0};  // messages published, by the producer
  alignas(64) std::atomic<u64> tail{0};  // messages taken, by the consumer
  alignas(64) u64 slots[ring_slots * Words];
};

template <std::size_t Words>
measured small_ring(const options&, long n, u64 seed) {
  static_assert(Words == 1 || Words == 2);
  const shared_object<hand_ring<Words>> shared;
  hand_ring<Words>* ring = shared.get();
  auto producer = start_child([ring, n, seed] {
    u64 tail = 0;  // the consumer's index, as last read
    for (u64 i = 0; i < static_cast<u64>(n); ++i) {
      if (i - tail == ring_slots) {
        spin_until([&] { return i - (tail = ring->tail.load(std::memory_order_acquire)) < ring_slots; }, true);
      }
      u64* slot = &ring->slots[Words * (i % ring_slots)];
      slot[0] = value_of(seed, i);
      if constexpr (Words == 2) slot[1] = i;
      ring->head.store(i + 1, std::memory_order_release);
    }
  });
  checksum sum;
  u64 head = 0;  // the producer's index, as last read
  const auto take = [&](u64 i) {
    if (i == head) spin_until([&] { return (head = ring->head.load(std::memory_order_acquire)) != i; }, true);
    const u64* slot = &ring->slots[Words * (i % ring_slots)];
    const u64 v = slot[0];
    if constexpr (Words == 2) {
      if (slot[1] != i) mismatch(nth("consumer's index", i), slot[1], i);
    }
    ring->tail.store(i + 1, std::memory_order_release);
    if (v != value_of(seed, i)) mismatch(nth("consumer", i), v, value_of(seed, i));
    sum.add(v);
  };
  take(0);
  const auto t0 = clock_type::now();
  for (long i = 1; i < n; ++i) take(static_cast<u64>(i));
  const auto t1 = clock_type::now();
  join_child(producer, "queue-small hand_ring producer");
  if (sum.h != expected_checksum(seed, static_cast<u64>(n))) program.die("queue-small hand_ring: checksum mismatch");
  return {t1 - t0, static_cast<double>(n - 1)};
}

// futex_pingpong: the floor of a queue round trip with mproc's waiting policy. Parent and
// child take turns on one futex word, `turn` (2i + 1: request i posted, 2i + 2: answered),
// the value beside it on the same cache line. A side waits spinning as mproc's queues do,
// then sleeps with FUTEX_WAIT; the other makes the FUTEX_WAKE syscall only when `sleepers`
// says a side is asleep or about to be (a seq_cst store and load on each side: either the
// poster sees the sleeper, or the sleeper sees the new turn).
struct pingpong_line {
  alignas(64) std::atomic<std::uint32_t> turn{0};
  std::atomic<std::uint32_t> sleepers{0};
  u64 value = 0;  // request i, then its answer: written before `turn` moves on
};
static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t) &&
              std::atomic<std::uint32_t>::is_always_lock_free);

void wait_turn(pingpong_line& line, std::uint32_t want) {
  if (spin_until([&] { return line.turn.load(std::memory_order_acquire) == want; }, false)) return;
  for (;;) {
    line.sleepers.fetch_add(1, std::memory_order_seq_cst);
    const std::uint32_t seen = line.turn.load(std::memory_order_seq_cst);
    if (seen != want) {
      // Not FUTEX_PRIVATE_FLAG: the word is shared between processes. Returns at once
      // (EAGAIN) if `turn` moved on since `seen`; EINTR and spurious wake-ups loop.
      ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&line.turn), FUTEX_WAIT, seen, nullptr, nullptr, 0);
    }
    line.sleepers.fetch_sub(1, std::memory_order_seq_cst);
    if (line.turn.load(std::memory_order_acquire) == want) return;
  }
}

void pass_turn(pingpong_line& line, std::uint32_t next) {
  line.turn.store(next, std::memory_order_seq_cst);
  if (line.sleepers.load(std::memory_order_seq_cst) != 0) {
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&line.turn), FUTEX_WAKE, 1, nullptr, nullptr, 0);
  }
}

measured futex_ping_pong(const options& o, long n, u64 seed) {
  const shared_object<pingpong_line> shared;
  pingpong_line* line = shared.get();
  const long total = n + o.warmup;
  auto echo = start_child([line, total, seed] {
    for (long i = 0; i < total; ++i) {
      const auto turn = static_cast<std::uint32_t>(2 * i);
      wait_turn(*line, turn + 1);
      const u64 v = line->value;
      const u64 want = value_of(seed, static_cast<u64>(i));
      if (v != want) mismatch(nth("echo", static_cast<u64>(i)), v, want);
      line->value = ~v;
      pass_turn(*line, turn + 2);
    }
  });
  checksum sum;
  const auto round_trip = [&](long i) {
    const auto turn = static_cast<std::uint32_t>(2 * i);
    const u64 v = value_of(seed, static_cast<u64>(i));
    line->value = v;
    pass_turn(*line, turn + 1);
    wait_turn(*line, turn + 2);
    const u64 answer = line->value;
    if (answer != ~v) mismatch(nth("ping-pong parent", static_cast<u64>(i)) + "'s answer", answer, ~v);
    sum.add(~answer);
  };
  for (long i = 0; i < o.warmup; ++i) round_trip(i);
  const auto t0 = clock_type::now();
  for (long i = o.warmup; i < total; ++i) round_trip(i);
  const auto t1 = clock_type::now();
  join_child(echo, "ping-pong futex_pingpong echo");
  if (sum.h != expected_checksum(seed, static_cast<u64>(total))) {
    program.die("ping-pong futex_pingpong: checksum mismatch");
  }
  return {t1 - t0, static_cast<double>(n)};
}

// ---- rows -----------------------------------------------------------------------------

struct contender {
  const char* name;
  measured (*session)(const options&, long n, u64 seed);
  // Moves scale x --iterations messages (at least 2 per session): the fast ones need more
  // to time, and a slow one (boost in ping-pong) fewer to keep the round short.
  double scale = 1;
};

struct row {
  const char* name;
  const char* metric_name;
  metric kind;
  long iterations;
  long warmup;
  long maxsize;
  long boost_slots;  // Boost's queues' bound when maxsize is 0 (see the top of this file)
  std::vector<contender> contenders;
};

const std::array rows = {
    row{"queue-small",
        "msgs_per_s",
        metric::rate,
        2'000'000,
        100'000,
        0,
        65536,
        {{"mproc", small_single<mproc_queue>},
         {"mproc_batch", small_batch, 8},
         {"hand_ring", small_ring<1>, 32},
         {"hand_ring_16", small_ring<2>, 16},
         {"boost", small_single<boost_queue>}}},
    // The bounds users write, each beside Boost with as many slots (see the top of this file).
    // Iterations: about 0.2-0.5 s a round on the 2-core development VM (Boost at 64 slots
    // moves 1.5-5M msg/s, at 1024 and up ~10M); queue-mpsc: 4 and 8 producers get fewer
    // messages, as Boost slows down with them (3 and 2M msg/s).
    row{"queue-small-64",
        "msgs_per_s",
        metric::rate,
        500'000,
        50'000,
        64,
        64,
        {{"mproc_64", small_single<mproc_queue>}, {"boost_64", small_single<boost_queue>}}},
    row{"queue-small-1024",
        "msgs_per_s",
        metric::rate,
        1'000'000,
        50'000,
        1024,
        1024,
        {{"mproc_1024", small_single<mproc_queue>}, {"boost_1024", small_single<boost_queue>}}},
    row{"queue-small-65536",
        "msgs_per_s",
        metric::rate,
        1'000'000,
        50'000,
        65536,
        65536,
        {{"mproc_65536", small_single<mproc_queue>}, {"boost_65536", small_single<boost_queue>}}},
    row{"queue-mpsc-1",
        "msgs_per_s",
        metric::rate,
        1'000'000,
        20'000,
        1024,
        1024,
        {{"mproc_p1", mpsc<mproc_queue, 1>}, {"boost_p1", mpsc<boost_queue, 1>}}},
    row{"queue-mpsc-4",
        "msgs_per_s",
        metric::rate,
        600'000,
        20'000,
        1024,
        1024,
        {{"mproc_p4", mpsc<mproc_queue, 4>}, {"boost_p4", mpsc<boost_queue, 4>}}},
    row{"queue-mpsc-8",
        "msgs_per_s",
        metric::rate,
        400'000,
        20'000,
        1024,
        1024,
        {{"mproc_p8", mpsc<mproc_queue, 8>}, {"boost_p8", mpsc<boost_queue, 8>}}},
    row{"queue-large",
        "gb_per_s",
        metric::bandwidth,
        1000,
        50,
        16,
        16,
        {{"memcpy", large_memcpy, 8}, {"mproc", large_queue<mproc_queue>}, {"boost", large_queue<boost_queue>, 2}}},
    row{"ping-pong",
        "per_op_us",
        metric::latency,
        100'000,
        1000,
        0,
        16,
        {{"mproc", ping_pong<mproc_queue>},
         {"futex_pingpong", futex_ping_pong},
         {"boost", ping_pong<boost_queue>, 0.2}}},
};

// Session seeds: distinct for every session of every round and contender.
u64 seed_of(int round, int slice, std::size_t contender) {
  return (u64(round) << 40) ^ (u64(slice) << 20) ^ (u64(contender) << 8) ^ 0x5eed'0000'0000'0001ULL;
}

}  // namespace

int main(int argc, char** argv) {
  options opts = parse(argc, argv);
  const auto found = std::find_if(rows.begin(), rows.end(), [&](const row& r) { return opts.row == r.name; });
  if (found == rows.end()) {
    std::string names;
    for (const row& r : rows) names += (names.empty() ? "" : ", ") + std::string(r.name);
    program.misuse("--row must be one of " + names);
  }
  const row& r = *found;
  if (opts.iterations == 0) opts.iterations = r.iterations;
  if (opts.warmup < 0) opts.warmup = r.warmup;
  if (opts.maxsize < 0) opts.maxsize = r.maxsize;
  opts.boost_slots = opts.maxsize > 0 ? opts.maxsize : r.boost_slots;
  // Each session times all but its first message: at least two per session.
  opts.iterations = std::max(opts.iterations, 2L);
  opts.slices = static_cast<int>(std::clamp<long>(opts.iterations / 2, 1, opts.slices));
  if (!bench::any_selected(r.contenders, opts.only)) {
    program.die("row " + std::string(r.name) + " has no contender named '" + std::string(opts.only) + "'");
  }
  try {
    if (r.kind != metric::latency && opts.warmup >= 2) {
      bench::for_each_selected(r.contenders, opts.only, [&](std::size_t i) {
        r.contenders[i].session(opts, opts.warmup, seed_of(0, 0, i) + 1);
      });
    }
    bench::print_rounds(r, opts, [&](std::size_t i, int round, int slice, long n) {
      const contender& c = r.contenders[i];
      return c.session(opts, std::max(2L, std::lround(static_cast<double>(n) * c.scale)), seed_of(round, slice, i));
    });
  } catch (const std::exception& e) {
    program.die(e.what());
  }
  return 0;
}
