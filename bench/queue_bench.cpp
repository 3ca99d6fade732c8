// The queue rows of DESIGN.md's performance contract, one row per run (--row):
//   queue-small  1 producer process -> 1 consumer process, 8-byte messages
//                (mproc::queue<std::uint64_t>): put/get one at a time ("mproc") and in
//                batches of --batch with put_many/get_many ("mproc_batch"). msgs_per_s.
//   queue-large  the same with 1 MiB messages (mproc::queue<std::vector<std::uint8_t>>,
//                "mproc"), beside the physical limit: one memcpy of 1 MiB per message from
//                a pool of sources larger than the last-level cache ("memcpy"). gb_per_s
//                (10^9 bytes of payload per second).
//   ping-pong    a round trip between two processes through two queue<std::uint64_t>:
//                the parent puts on one, the child answers on the other. per_op_us.
// Python's multiprocessing peers are in bench/queue_bench.py.
//
// Output (stdout), CSV, one line per contender per round after a header:
//   round,contender,<metric>
// Each round runs every contender over --iterations messages (round trips; the fast
// mproc_batch and memcpy over 8 times as many, so that they run long enough to time),
// split into --slices sessions that alternate between the contenders (A B, B A, ...), and
// rounds alternate which one starts, as in bench/spawn_bench.cpp. A session forks a fresh
// child (a daemon mproc::process), and the fork is not timed:
// - queue rows: the child produces, the parent consumes. The clock starts when the parent
//   has received the first message (or batch) and stops at the last one; the rate counts
//   the messages in between. That is the end-to-end throughput, whichever side is slower.
// - ping-pong: the clock runs over --iterations round trips after --warmup untimed ones.
// A message lost on the way leaves the consumer waiting: the driver's timeout reports it.
// Verification, so that a broken queue cannot look fast: every message carries values
// derived from (session seed, index); the consumer checks the count, each value and its
// order (8-byte messages: the value itself; 1 MiB messages: the size and one 8-byte stamp
// in every 4 KiB page) and folds them into a checksum compared with the expected one. The
// ping-pong child checks each request likewise and the parent each answer. A child that
// finds a mismatch throws (exit code 1), which the parent reports; any failure exits 2.
//
// --only runs one contender (for profiling it alone with perf or strace).
#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iterator>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mproc/process.hpp"
#include "mproc/queue.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
using u64 = std::uint64_t;

constexpr std::size_t large_bytes = std::size_t{1} << 20;  // 1 MiB
constexpr std::size_t stamp_stride = 4096;                  // one stamp per page
constexpr std::size_t stamps_per_message = large_bytes / stamp_stride;
// Sources of the memcpy peer: larger than the last-level cache (32 MiB on the
// development VM), so that each copy reads from RAM.
constexpr std::size_t memcpy_pool = 64;

struct options {
  std::string_view row;
  int rounds = 7;
  long iterations = 0;  // 0: the row's default
  long warmup = -1;     // -1: the row's default
  int start_round = 0;
  int slices = 2;
  long batch = 256;
  long maxsize = -1;  // -1: the row's default
  std::string_view only;
};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "queue_bench: %s\n", what.c_str());
  std::exit(2);
}

[[noreturn]] void usage(int code) {
  std::fprintf(code == 0 ? stdout : stderr,
               "usage: mproc_queue_bench --row queue-small|queue-large|ping-pong [--rounds R]\n"
               "         [--iterations N] [--slices S] [--warmup W] [--start-round K]\n"
               "         [--batch B] [--maxsize M] [--only CONTENDER]\n"
               "  R rounds (default 7). Per round each contender moves N messages (ping-pong:\n"
               "  round trips; defaults 2000000, 1000, 100000; mproc_batch and memcpy move 8 N)\n"
               "  in S sessions (default 2) that alternate between the contenders, after one\n"
               "  untimed warm-up session of W messages per invocation (ping-pong: W untimed\n"
               "  round trips per session). Rounds are numbered from K (default 0). B: the\n"
               "  batch size of mproc_batch (default 256). M: the queues' maxsize (0: unbounded;\n"
               "  default 0, queue-large 16). Contenders: queue-small mproc, mproc_batch;\n"
               "  queue-large memcpy, mproc; ping-pong mproc. --only runs one (to profile it).\n"
               "Prints CSV: round,contender,<msgs_per_s|gb_per_s|per_op_us>\n");
  std::exit(code);
}

long parse_long(std::string_view flag, const char* text, long min) {
  long value = 0;
  const std::string_view s(text);
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc{} || end != s.data() + s.size() || value < min) {
    std::fprintf(stderr, "queue_bench: %.*s needs an integer >= %ld, got '%s'\n", static_cast<int>(flag.size()),
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
    } else if (arg == "--start-round") {
      o.start_round = static_cast<int>(parse_long(arg, value, 0));
    } else if (arg == "--slices") {
      o.slices = static_cast<int>(parse_long(arg, value, 1));
    } else if (arg == "--batch") {
      o.batch = parse_long(arg, value, 1);
    } else if (arg == "--maxsize") {
      o.maxsize = parse_long(arg, value, 0);
    } else if (arg == "--only") {
      o.only = value;
    } else {
      std::fprintf(stderr, "queue_bench: unknown option '%s'\n", argv[i - 1]);
      usage(2);
    }
  }
  return o;
}

// The value of message (or stamp) i of a session: distinct per session, so that stale
// bytes from an earlier session cannot pass for fresh ones.
u64 value_of(u64 seed, u64 i) { return seed + i * 0x9e37'79b9'7f4a'7c15ULL; }

// An order-sensitive checksum of the values received (FNV-1a over 64-bit words).
struct checksum {
  u64 h = 0xcbf2'9ce4'8422'2325ULL;
  void add(u64 v) { h = (h ^ v) * 0x100'0000'01b3ULL; }
};

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

// A child (a daemon, so that a parent that dies mid-session takes it along) running `body`.
template <class F>
mproc::process start_child(F body) {
  mproc::process p(std::move(body));
  p.set_daemon(true);
  p.start();
  return p;
}

void join_child(mproc::process& p, const char* what) {
  p.join();
  const auto code = p.exitcode();
  if (code != 0) die(std::string(what) + ": child exited with " + (code ? std::to_string(*code) : "?"));
}

// What a session measured: `units` (messages, bytes or round trips) in `elapsed`.
struct measured {
  clock_type::duration elapsed{};
  double units = 0;
};

// ---- queue-small ----------------------------------------------------------------------

measured small_single(const options& o, long n, u64 seed) {
  mproc::queue<u64> q(static_cast<std::size_t>(o.maxsize));
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
  join_child(producer, "queue-small mproc producer");
  if (sum.h != expected_checksum(seed, static_cast<u64>(n))) die("queue-small mproc: checksum mismatch");
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
    if (values.empty()) die("queue-small mproc_batch: get_many returned nothing");
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
  if (got != static_cast<u64>(n)) die("queue-small mproc_batch: received more messages than were put");
  if (sum.h != expected_checksum(seed, got)) die("queue-small mproc_batch: checksum mismatch");
  if (got == first) die("queue-small mproc_batch: the first batch held every message; raise --iterations");
  return {t1 - t0, static_cast<double>(got - first)};
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

std::vector<std::uint8_t> filled_message() {
  std::vector<std::uint8_t> m(large_bytes);
  for (std::size_t i = 0; i < m.size(); ++i) m[i] = static_cast<std::uint8_t>(i * 131 + 7);
  return m;
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
  if (sum.h != expected_checksum(seed, static_cast<u64>(n) * stamps_per_message)) die("memcpy: checksum mismatch");
  return {t1 - t0, static_cast<double>(n) * large_bytes};
}

measured large_queue(const options& o, long n, u64 seed) {
  mproc::queue<std::vector<std::uint8_t>> q(static_cast<std::size_t>(o.maxsize));
  auto producer = start_child([q, n, seed]() mutable {
    std::vector<std::uint8_t> message = filled_message();
    for (long i = 0; i < n; ++i) {
      stamp(message.data(), seed, static_cast<u64>(i));
      q.put(message);
    }
  });
  checksum sum;
  const auto take = [&](long i) {
    const std::vector<std::uint8_t> message = q.get();
    if (message.size() != large_bytes) {
      die("queue-large mproc: message " + std::to_string(i) + " has " + std::to_string(message.size()) + " bytes");
    }
    verify(message.data(), seed, static_cast<u64>(i), sum);
  };
  take(0);
  const auto t0 = clock_type::now();
  for (long i = 1; i < n; ++i) take(i);
  const auto t1 = clock_type::now();
  join_child(producer, "queue-large mproc producer");
  if (sum.h != expected_checksum(seed, static_cast<u64>(n) * stamps_per_message)) {
    die("queue-large mproc: checksum mismatch");
  }
  return {t1 - t0, static_cast<double>(n - 1) * large_bytes};
}

// ---- ping-pong ------------------------------------------------------------------------

measured ping_pong(const options& o, long n, u64 seed) {
  mproc::queue<u64> requests(static_cast<std::size_t>(o.maxsize));
  mproc::queue<u64> answers(static_cast<std::size_t>(o.maxsize));
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
  join_child(echo, "ping-pong echo");
  if (sum.h != expected_checksum(seed, static_cast<u64>(total))) die("ping-pong: checksum mismatch");
  return {t1 - t0, static_cast<double>(n)};
}

// ---- rows -----------------------------------------------------------------------------

struct contender {
  const char* name;
  measured (*session)(const options&, long n, u64 seed);
  long scale = 1;  // moves scale x --iterations messages: the fast ones need more to time
};

enum class metric { rate, bandwidth, latency };

struct row {
  const char* name;
  const char* metric_name;
  metric kind;
  long iterations;
  long warmup;
  long maxsize;
  std::vector<contender> contenders;
};

const std::array rows = {
    row{"queue-small", "msgs_per_s", metric::rate, 2'000'000, 100'000, 0,
        {{"mproc", small_single}, {"mproc_batch", small_batch, 8}}},
    row{"queue-large", "gb_per_s", metric::bandwidth, 1000, 50, 16, {{"memcpy", large_memcpy, 8}, {"mproc", large_queue}}},
    row{"ping-pong", "per_op_us", metric::latency, 100'000, 1000, 0, {{"mproc", ping_pong}}},
};

double figure(const row& r, const measured& m) {
  const double seconds = std::chrono::duration<double>(m.elapsed).count();
  switch (r.kind) {
    case metric::rate:
      return m.units / seconds;
    case metric::bandwidth:
      return m.units / seconds / 1e9;
    case metric::latency:
      break;
  }
  return seconds * 1e6 / m.units;
}

bool selected(const contender& c, const options& o) { return o.only.empty() || o.only == c.name; }

// Session seeds: distinct for every session of every round and contender.
u64 seed_of(int round, int slice, std::size_t contender) {
  return (u64(round) << 40) ^ (u64(slice) << 20) ^ (u64(contender) << 8) ^ 0x5eed'0000'0000'0001ULL;
}

std::vector<double> run_round(const row& r, int round, const options& o) {
  const std::size_t count = r.contenders.size();
  std::vector<measured> total(count);
  for (int slice = 0; slice < o.slices; ++slice) {
    const long n = o.iterations / o.slices + (slice < o.iterations % o.slices ? 1 : 0);
    for (std::size_t k = 0; k < count; ++k) {
      // Even slices (of even rounds) run the contenders in table order, odd ones in reverse.
      const std::size_t i = (round + slice) % 2 == 0 ? k : count - 1 - k;
      if (!selected(r.contenders[i], o)) continue;
      const measured m = r.contenders[i].session(o, n * r.contenders[i].scale, seed_of(round, slice, i));
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
    std::fprintf(stderr, "queue_bench: --row must be queue-small, queue-large or ping-pong\n");
    usage(2);
  }
  const row& r = *found;
  if (opts.iterations == 0) opts.iterations = r.iterations;
  if (opts.warmup < 0) opts.warmup = r.warmup;
  if (opts.maxsize < 0) opts.maxsize = r.maxsize;
  // Each session times all but its first message: at least two per session.
  opts.iterations = std::max(opts.iterations, 2L);
  opts.slices = static_cast<int>(std::clamp<long>(opts.iterations / 2, 1, opts.slices));
  if (std::none_of(r.contenders.begin(), r.contenders.end(), [&](const contender& c) { return selected(c, opts); })) {
    die("row " + std::string(r.name) + " has no contender named '" + std::string(opts.only) + "'");
  }
  try {
    if (r.kind != metric::latency && opts.warmup >= 2) {
      for (std::size_t i = 0; i < r.contenders.size(); ++i) {
        if (selected(r.contenders[i], opts)) r.contenders[i].session(opts, opts.warmup, seed_of(0, 0, i) + 1);
      }
    }
    std::printf("round,contender,%s\n", r.metric_name);
    std::fflush(stdout);
    for (int round = opts.start_round; round < opts.start_round + opts.rounds; ++round) {
      const std::vector<double> figures = run_round(r, round, opts);
      for (std::size_t i = 0; i < r.contenders.size(); ++i) {
        if (selected(r.contenders[i], opts)) std::printf("%d,%s,%.6g\n", round, r.contenders[i].name, figures[i]);
      }
      std::fflush(stdout);  // the driver may read rounds as they come
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "queue_bench: %s\n", e.what());
    return 2;
  }
  return 0;
}
