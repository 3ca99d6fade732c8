// Boost.Interprocess 1.74's message_queue, the peer DESIGN.md's performance contract names
// for the queue rows, one row per run (--row), contender "boost":
//   queue-small  1 producer process -> 1 consumer process, 8-byte messages (one uint64_t
//                per send/receive), in a queue of --capacity messages (default 65536,
//                see below). msgs_per_s.
//   queue-large  the same with 1 MiB messages, capacity 16 as mproc's row (maxsize 16).
//                gb_per_s (10^9 bytes of payload per second).
//   ping-pong    a round trip between two processes through two queues: the parent sends
//                on one, the child answers on the other. per_op_us.
// mproc's side of these rows is bench/queue_bench.cpp, whose contract this program keeps:
// the same flags, CSV, sessions, timing and verification, so that bench/compare.py runs
// both side by side.
//
// Output (stdout), CSV, one line per round after a header:
//   round,contender,<metric>
// Each round moves --iterations messages (round trips) in --slices sessions; a session
// forks a fresh child (a daemon mproc::process), and the fork is not timed:
// - queue rows: the child produces, the parent consumes. The clock starts when the parent
//   has received the first message and stops at the last one; the rate counts the
//   messages in between.
// - ping-pong: the clock runs over --iterations round trips after --warmup untimed ones.
// Verification, as in bench/queue_bench.cpp, so that a broken peer cannot look fast: every
// message carries values derived from (session seed, index); the consumer checks each
// message's size, each value and its order (8-byte messages: the value itself; 1 MiB
// messages: one 8-byte stamp in every 4 KiB page) and folds them into a checksum compared
// with the expected one. The ping-pong child checks each request likewise and the parent
// each answer. A child that finds a mismatch throws (exit code 1), which the parent
// reports; any failure exits 2.
//
// The queues: each session creates its queues under a name unique to this process (pid +
// counter) and removes the name at once, before forking: the child uses the mapping it
// inherits, as mproc's children do. So no /dev/shm entry outlives the constructor that made
// it, whatever way the program ends later (die() calls std::exit, which unwinds no stack).
//
// Capacity of queue-small (--capacity, default 65536): Boost preallocates max_num_msg
// slots (32 bytes each for 8-byte messages: a header, the payload, an index entry) where
// mproc's row queue is unbounded, and a Boost queue that runs full or empty costs a
// condition-variable sleep and wake-up. Too few slots hold Boost back: on the 2-core
// development VM, in its faster runs, 64 slots gave 1.5-5.6M msg/s, 256 12M, 1024 15M,
// 65536 18-19M and 262144 14-16M (in its slower runs every capacity from 256 up, and
// mproc too, gave 6.5-9M). 65536 slots (2 MiB) are Boost's best, so that its bound cannot
// be what it loses on; --capacity lets anyone check.
#include <boost/interprocess/creation_tags.hpp>
#include <boost/interprocess/ipc/message_queue.hpp>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "mproc/process.hpp"

namespace {

namespace bip = boost::interprocess;

using bench::checksum;
using bench::clock_type;
using bench::measured;
using bench::metric;
using bench::start_child;
using bench::u64;

constexpr std::size_t large_bytes = std::size_t{1} << 20;  // 1 MiB
constexpr std::size_t stamp_stride = 4096;                  // one stamp per page
constexpr std::size_t stamps_per_message = large_bytes / stamp_stride;

constexpr bench::program program{
    "boost_queue_bench",
    "usage: mproc_boost_queue_bench --row queue-small|queue-large|ping-pong [--rounds R]\n"
    "         [--iterations N] [--slices S] [--warmup W] [--start-round K]\n"
    "         [--capacity C] [--only boost]\n"
    "  R rounds (default 7). Per round Boost's message_queue moves N messages\n"
    "  (ping-pong: round trips; defaults 2000000, 2000, 20000) in S sessions\n"
    "  (default 2), after one untimed warm-up session of W messages per invocation\n"
    "  (ping-pong: W untimed round trips per session). Rounds are numbered from K\n"
    "  (default 0). C: the queues' max_num_msg (default queue-small 65536, queue-large\n"
    "  16, ping-pong 16). The one contender is boost.\n"
    "Prints CSV: round,contender,<msgs_per_s|gb_per_s|per_op_us>\n"};

struct options : bench::round_options {
  long warmup = -1;    // -1: the row's default
  long capacity = -1;  // -1: the row's default
};

options parse(int argc, char** argv) {
  options o;
  program.parse(argc, argv, o, {{"--warmup", &o.warmup, 0}, {"--capacity", &o.capacity, 1}});
  if (o.slices == 0) o.slices = 2;
  return o;
}

// As bench/queue_bench.cpp: the value of message (or stamp) i of a session, distinct per
// session, so that stale bytes from an earlier session cannot pass for fresh ones.
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

void join_child(mproc::process& p, const char* what) {
  p.join();
  const auto code = p.exitcode();
  if (code != 0) program.die(std::string(what) + ": child exited with " + (code ? std::to_string(*code) : "?"));
}

// ---- the queues ---------------------------------------------------------------------------

// A message_queue of `capacity` messages of up to `message_bytes` each, whose name is
// already gone from /dev/shm: created under a name unique to this process, then removed,
// on success and on failure alike. A forked child uses the parent's object: it inherits
// the MAP_SHARED mapping at the same address.
std::unique_ptr<bip::message_queue> make_queue(long capacity, std::size_t message_bytes) {
  static unsigned counter = 0;
  const std::string name =
      "mproc_bench_boost." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  struct remover {
    const std::string& name;
    ~remover() { bip::message_queue::remove(name.c_str()); }
  } remove_name{name};
  return std::make_unique<bip::message_queue>(bip::create_only, name.c_str(),
                                              static_cast<bip::message_queue::size_type>(capacity),
                                              static_cast<bip::message_queue::size_type>(message_bytes));
}

// Receives one message of u64 from q, which must be 8 bytes.
u64 receive_value(bip::message_queue& q, const char* who, u64 i) {
  u64 v = 0;
  bip::message_queue::size_type got = 0;
  unsigned priority = 0;
  q.receive(&v, sizeof v, got, priority);
  if (got != sizeof v) mismatch(nth(who, i) + "'s size", got, sizeof v);
  return v;
}

void send_value(bip::message_queue& q, u64 v) { q.send(&v, sizeof v, 0); }

// ---- queue-small ----------------------------------------------------------------------

measured small_queue(const options& o, long n, u64 seed) {
  const auto q = make_queue(o.capacity, sizeof(u64));
  auto producer = start_child([q = q.get(), n, seed] {
    for (long i = 0; i < n; ++i) send_value(*q, value_of(seed, static_cast<u64>(i)));
  });
  checksum sum;
  const auto take = [&](u64 i) {
    const u64 v = receive_value(*q, "consumer", i);
    if (v != value_of(seed, i)) mismatch(nth("consumer", i), v, value_of(seed, i));
    sum.add(v);
  };
  take(0);
  const auto t0 = clock_type::now();
  for (long i = 1; i < n; ++i) take(static_cast<u64>(i));
  const auto t1 = clock_type::now();
  join_child(producer, "queue-small boost producer");
  if (sum.h != expected_checksum(seed, static_cast<u64>(n))) program.die("queue-small boost: checksum mismatch");
  return {t1 - t0, static_cast<double>(n - 1)};
}

// ---- queue-large ----------------------------------------------------------------------

// As bench/queue_bench.cpp: message i's stamps, one 8-byte value at the start of every
// 4 KiB page.
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

std::vector<std::uint8_t> filled_message() {
  std::vector<std::uint8_t> m(large_bytes);
  for (std::size_t i = 0; i < m.size(); ++i) m[i] = static_cast<std::uint8_t>(i * 131 + 7);
  return m;
}

measured large_queue(const options& o, long n, u64 seed) {
  const auto q = make_queue(o.capacity, large_bytes);
  auto producer = start_child([q = q.get(), n, seed] {
    std::vector<std::uint8_t> message = filled_message();
    for (long i = 0; i < n; ++i) {
      stamp(message.data(), seed, static_cast<u64>(i));
      q->send(message.data(), message.size(), 0);
    }
  });
  // Boost receives into the caller's buffer (mproc's get() returns a fresh vector): one
  // buffer, allocated and touched before the clock starts.
  std::vector<std::uint8_t> message = filled_message();
  checksum sum;
  const auto take = [&](long i) {
    bip::message_queue::size_type got = 0;
    unsigned priority = 0;
    q->receive(message.data(), message.size(), got, priority);
    if (got != large_bytes) {
      program.die("queue-large boost: message " + std::to_string(i) + " has " + std::to_string(got) + " bytes");
    }
    verify(message.data(), seed, static_cast<u64>(i), sum);
  };
  take(0);
  const auto t0 = clock_type::now();
  for (long i = 1; i < n; ++i) take(i);
  const auto t1 = clock_type::now();
  join_child(producer, "queue-large boost producer");
  if (sum.h != expected_checksum(seed, static_cast<u64>(n) * stamps_per_message)) {
    program.die("queue-large boost: checksum mismatch");
  }
  return {t1 - t0, static_cast<double>(n - 1) * large_bytes};
}

// ---- ping-pong ------------------------------------------------------------------------

measured ping_pong(const options& o, long n, u64 seed) {
  const auto requests = make_queue(o.capacity, sizeof(u64));
  const auto answers = make_queue(o.capacity, sizeof(u64));
  const long total = n + o.warmup;
  auto echo = start_child([requests = requests.get(), answers = answers.get(), total, seed] {
    for (long i = 0; i < total; ++i) {
      const u64 v = receive_value(*requests, "echo", static_cast<u64>(i));
      const u64 want = value_of(seed, static_cast<u64>(i));
      if (v != want) mismatch(nth("echo", static_cast<u64>(i)), v, want);
      send_value(*answers, ~v);
    }
  });
  checksum sum;
  const auto round_trip = [&](long i) {
    const u64 v = value_of(seed, static_cast<u64>(i));
    send_value(*requests, v);
    const u64 answer = receive_value(*answers, "ping-pong parent", static_cast<u64>(i));
    if (answer != ~v) mismatch(nth("ping-pong parent", static_cast<u64>(i)) + "'s answer", answer, ~v);
    sum.add(~answer);
  };
  for (long i = 0; i < o.warmup; ++i) round_trip(i);
  const auto t0 = clock_type::now();
  for (long i = o.warmup; i < total; ++i) round_trip(i);
  const auto t1 = clock_type::now();
  join_child(echo, "ping-pong boost echo");
  if (sum.h != expected_checksum(seed, static_cast<u64>(total))) program.die("ping-pong boost: checksum mismatch");
  return {t1 - t0, static_cast<double>(n)};
}

// ---- rows -----------------------------------------------------------------------------

struct contender {
  const char* name;
  measured (*session)(const options&, long n, u64 seed);
};

struct row {
  const char* name;
  const char* metric_name;
  metric kind;
  long iterations;
  long warmup;
  long capacity;
  std::vector<contender> contenders;
};

// Ping-pong's capacity hardly matters (each queue holds at most one message); 16 as in
// queue-large.
const std::array rows = {
    row{"queue-small", "msgs_per_s", metric::rate, 2'000'000, 100'000, 65536, {{"boost", small_queue}}},
    row{"queue-large", "gb_per_s", metric::bandwidth, 2000, 50, 16, {{"boost", large_queue}}},
    row{"ping-pong", "per_op_us", metric::latency, 20'000, 1000, 16, {{"boost", ping_pong}}},
};

// Session seeds: distinct for every session of every round and contender.
u64 seed_of(int round, int slice, std::size_t contender) {
  return (u64(round) << 40) ^ (u64(slice) << 20) ^ (u64(contender) << 8) ^ 0x5eed'0000'0000'0001ULL;
}

}  // namespace

int main(int argc, char** argv) {
  options opts = parse(argc, argv);
  const auto found = std::find_if(rows.begin(), rows.end(), [&](const row& r) { return opts.row == r.name; });
  if (found == rows.end()) program.misuse("--row must be queue-small, queue-large or ping-pong");
  const row& r = *found;
  if (opts.iterations == 0) opts.iterations = r.iterations;
  if (opts.warmup < 0) opts.warmup = r.warmup;
  if (opts.capacity < 0) opts.capacity = r.capacity;
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
      return r.contenders[i].session(opts, n, seed_of(round, slice, i));
    });
  } catch (const std::exception& e) {
    program.die(e.what());
  }
  return 0;
}
