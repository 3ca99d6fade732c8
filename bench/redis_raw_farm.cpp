// The raw hiredis peer of the redis-async row (bench/redis_bench.cpp): a task farm on Redis
// Streams written with plain hiredis calls, the floor a pool on Redis adds its costs to.
//   mproc_redis_raw_farm --row async --redis redis://127.0.0.1:6379
// --iterations (default 100000) tasks of int64 square(int64), all submitted, then every
// result collected. Per session, on fresh keys mproc-bench-raw:<pid>:<session>:{tasks,replies}:
// - the client creates the task stream with a consumer group and forks 2 worker processes,
//   each with its own connection, and waits until both have connected (each creates its
//   consumer in the group, then reads), so that neither fork nor connect is timed;
// - clock starts. The client XADDs the tasks, one entry of 8 bytes (x, native order) each,
//   pipelined in batches of 256 with one batch in flight while it reads the replies of the
//   one before;
// - each worker XREADGROUPs COUNT 64 BLOCK, runs square on the batch, and answers it in one
//   transaction pipelined as one write: MULTI { XADD to the reply stream, XACK of the
//   batch's ids } EXEC;
// - the client XREADs the reply stream (BLOCK, 1024 entries at a time) until it has a
//   result for every task; clock stops;
// - the workers are stopped (SIGTERM) and reaped, and both keys deleted.
// Contenders, which differ in the transaction's XADDs only:
//   raw_hiredis           one reply entry for the whole batch, its (x, square(x)) pairs in
//                         one value: the best a hand-written farm does;
//   raw_hiredis_per_task  a reply entry per task, (x, square(x)): results that stay
//                         separate entries, as a pool's results do when each is its own.
// Both do less than a pool must: the reply stream is known to the workers in advance (no
// reply address in each task), nothing is trimmed, no liveness key, no retry.
// Output (stdout), CSV, one line per contender per round after a header:
//   round,contender,tasks_per_s
// Verification, as bench/redis_bench.cpp's: every task gets exactly one result, each is
// compared with x*x of its own input, in order, and folded into a checksum; a mismatch, a
// Redis error or a worker that dies exits with 2.
#include <hiredis/hiredis.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench_support.hpp"
#include "mproc/process.hpp"

namespace {

using bench::checksum;
using bench::clock_type;
using bench::measured;
using bench::metric;
using bench::u64;

constexpr bench::program program{"redis_raw_farm",
                                 "usage: mproc_redis_raw_farm --row async --redis URL [--rounds R] [--iterations N]\n"
                                 "         [--slices S] [--warmup W] [--start-round K]\n"
                                 "         [--only raw_hiredis|raw_hiredis_per_task]\n"
                                 "  URL: redis://HOST:PORT or unix:///PATH (no AUTH). R rounds (default 7).\n"
                                 "  Per round N tasks (default 100000) in S sessions (default 1), after one\n"
                                 "  untimed warm-up session of W tasks (default 2000) per contender. Rounds are\n"
                                 "  numbered from K (default 0). Each session forks its 2 workers and uses\n"
                                 "  fresh keys. --only runs one contender.\n"
                                 "Prints CSV: round,contender,tasks_per_s\n"};

struct options : bench::round_options {
  long warmup = -1;  // -1: the row's default
  std::string_view url;
};

constexpr int workers = 2;          // the row's "2 workers"
constexpr int read_count = 64;      // XREADGROUP COUNT: the batch a worker answers at once
constexpr long submit_batch = 256;  // XADDs per pipelined write of the client
constexpr int reply_count = 1024;   // XREAD COUNT of the client, in reply entries
constexpr int poll_ms = 1000;       // XREAD BLOCK of the client, between checks on its workers
const char* const group = "farm";

std::int64_t square(std::int64_t x) { return x * x; }

// ---- hiredis, owned ------------------------------------------------------------------------
// Errors throw std::runtime_error: the client turns them into program.die (exit 2); in a
// worker, mproc::process prints it and exits with 1, which the client sees.

struct free_reply {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using reply_ptr = std::unique_ptr<redisReply, free_reply>;

struct free_context {
  void operator()(redisContext* c) const { redisFree(c); }
};
using context_ptr = std::unique_ptr<redisContext, free_context>;

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what); }

// redis://HOST:PORT (either part may be left out: 127.0.0.1, 6379) or unix:///PATH.
context_ptr connect(std::string_view url) {
  context_ptr c;
  if (url.starts_with("unix://")) {
    c.reset(redisConnectUnix(std::string(url.substr(7)).c_str()));
  } else if (url.starts_with("redis://")) {
    std::string_view rest = url.substr(8);
    rest = rest.substr(0, rest.find('/'));
    if (rest.find('@') != std::string_view::npos) fail("--redis: the raw farm takes no AUTH in its URL");
    const auto colon = rest.rfind(':');
    const std::string host(colon == std::string_view::npos ? rest : rest.substr(0, colon));
    const int port = colon == std::string_view::npos ? 6379 : std::stoi(std::string(rest.substr(colon + 1)));
    c.reset(redisConnect(host.empty() ? "127.0.0.1" : host.c_str(), port));
  } else {
    fail("--redis: expected redis://HOST:PORT or unix:///PATH, got '" + std::string(url) + "'");
  }
  if (!c) fail("redisConnect: out of memory");
  if (c->err != 0) fail("cannot connect to " + std::string(url) + ": " + c->errstr);
  return c;
}

// The next reply of the pipeline (flushing what was appended), which must not be an error.
reply_ptr next_reply(redisContext* c) {
  void* raw = nullptr;
  if (redisGetReply(c, &raw) != REDIS_OK) fail(std::string("redis: ") + c->errstr);
  reply_ptr r(static_cast<redisReply*>(raw));
  if (r->type == REDIS_REPLY_ERROR) fail(std::string("redis: ") + r->str);
  return r;
}

// One command, printf-style as redisCommand, and its reply.
template <class... A>
reply_ptr command(redisContext* c, const char* format, A... args) {
  if (redisAppendCommand(c, format, args...) != REDIS_OK) fail(std::string("redis: ") + c->errstr);
  return next_reply(c);
}

void expect(const reply_ptr& r, int type, const char* what) {
  if (r->type != type) fail(std::string(what) + ": unexpected reply type " + std::to_string(r->type));
}

// ---- a session's keys and workers ------------------------------------------------------------

struct keys {
  std::string tasks;
  std::string replies;
};

keys session_keys(long session) {
  const std::string prefix = "mproc-bench-raw:" + std::to_string(::getpid()) + ":" + std::to_string(session);
  return {prefix + ":tasks", prefix + ":replies"};
}

// A worker's batch: the entries of one XREADGROUP reply, [[stream, [[id, [field, value]], ...]]].
const redisReply& entries_of(const redisReply& r) {
  if (r.type != REDIS_REPLY_ARRAY || r.elements != 1 || r.element[0]->elements != 2) fail("XREADGROUP: bad reply");
  return *r.element[0]->element[1];
}

// A worker: takes batches of tasks until SIGTERM (which ends it blocked in XREADGROUP).
void serve(const std::string& url, const keys& k, int id, bool per_task) {
  const context_ptr owned = connect(url);
  redisContext* c = owned.get();
  const std::string consumer = "w" + std::to_string(id);
  // The client's sign that this worker is connected (Redis 7 creates no consumer for an
  // XREADGROUP that finds nothing to read).
  command(c, "XGROUP CREATECONSUMER %s %s %s", k.tasks.c_str(), group, consumer.c_str());
  std::vector<std::int64_t> pairs;  // (x, square(x)), the reply entry's value
  std::vector<const char*> ack_argv;
  std::vector<std::size_t> ack_len;
  for (;;) {
    const reply_ptr r = command(c, "XREADGROUP GROUP %s %s COUNT %d BLOCK 0 STREAMS %s >", group, consumer.c_str(),
                                read_count, k.tasks.c_str());
    const redisReply& entries = entries_of(*r);
    pairs.clear();
    ack_argv.assign({"XACK", k.tasks.c_str(), group});
    ack_len.assign({4, k.tasks.size(), std::strlen(group)});
    for (std::size_t i = 0; i < entries.elements; ++i) {
      const redisReply& e = *entries.element[i];
      const redisReply& fields = *e.element[1];
      if (fields.elements != 2 || fields.element[1]->len != sizeof(std::int64_t)) fail("worker: bad task entry");
      std::int64_t x = 0;
      std::memcpy(&x, fields.element[1]->str, sizeof x);
      pairs.push_back(x);
      pairs.push_back(square(x));
      ack_argv.push_back(e.element[0]->str);
      ack_len.push_back(e.element[0]->len);
    }
    // One write: the transaction's four commands, then their four replies.
    redisAppendCommand(c, "MULTI");
    int queued = 1;
    if (per_task) {
      for (std::size_t i = 0; i < pairs.size(); i += 2, ++queued) {
        redisAppendCommand(c, "XADD %s * r %b", k.replies.c_str(), &pairs[i], 2 * sizeof(std::int64_t));
      }
    } else {
      redisAppendCommand(c, "XADD %s * r %b", k.replies.c_str(), pairs.data(), pairs.size() * sizeof(std::int64_t));
      ++queued;
    }
    redisAppendCommandArgv(c, static_cast<int>(ack_argv.size()), ack_argv.data(), ack_len.data());
    redisAppendCommand(c, "EXEC");
    for (int i = 0; i < queued + 1; ++i) next_reply(c);  // OK, QUEUED...
    const reply_ptr exec = next_reply(c);
    expect(exec, REDIS_REPLY_ARRAY, "EXEC");
    for (std::size_t i = 0; i < exec->elements; ++i) {
      if (exec->element[i]->type == REDIS_REPLY_ERROR) fail(std::string("EXEC: ") + exec->element[i]->str);
    }
  }
}

// Waits until the group lists a consumer per worker: each has connected, and reads next.
void wait_for_consumers(redisContext* c, const keys& k, std::vector<mproc::process>& ws) {
  const auto deadline = clock_type::now() + std::chrono::seconds(10);
  for (;;) {
    const reply_ptr r = command(c, "XINFO CONSUMERS %s %s", k.tasks.c_str(), group);
    expect(r, REDIS_REPLY_ARRAY, "XINFO CONSUMERS");
    if (r->elements == ws.size()) return;
    for (auto& w : ws) {
      if (!w.is_alive()) fail("a worker exited before it was ready (exit code " + std::to_string(*w.exitcode()) + ")");
    }
    if (clock_type::now() > deadline) fail("the workers were not ready after 10 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// ---- the client ------------------------------------------------------------------------------

struct context {
  std::string url;
  redisContext* c;
  long sessions = 0;
};

// XADDs tasks base .. base + n - 1, pipelined: batch b is written while the replies of
// batch b - 1 are read.
void submit(redisContext* c, const keys& k, long n, std::int64_t base) {
  long appended = 0;
  long answered = 0;
  while (answered < n) {
    for (const long end = std::min(n, appended + submit_batch); appended < end; ++appended) {
      const std::int64_t x = base + appended;
      redisAppendCommand(c, "XADD %s * x %b", k.tasks.c_str(), &x, sizeof x);
    }
    for (const long upto = appended < n ? appended - submit_batch : n; answered < upto; ++answered) {
      expect(next_reply(c), REDIS_REPLY_STRING, "XADD");
    }
  }
}

// Reads the reply stream until each of the n tasks has its result in results[x - base]
// (-1 until then: a square is never negative).
void collect(redisContext* c, const keys& k, long n, std::int64_t base, std::vector<std::int64_t>& results,
             std::vector<mproc::process>& ws) {
  std::string last = "0";
  long got = 0;
  while (got < n) {
    const reply_ptr r =
        command(c, "XREAD COUNT %d BLOCK %d STREAMS %s %s", reply_count, poll_ms, k.replies.c_str(), last.c_str());
    if (r->type == REDIS_REPLY_NIL) {  // nothing for poll_ms: are the workers still there?
      for (auto& w : ws) {
        if (!w.is_alive()) fail("a worker died (exit code " + std::to_string(*w.exitcode()) + ")");
      }
      continue;
    }
    const redisReply& entries = entries_of(*r);
    for (std::size_t i = 0; i < entries.elements; ++i) {
      const redisReply& e = *entries.element[i];
      last.assign(e.element[0]->str, e.element[0]->len);
      const redisReply& value = *e.element[1]->element[1];
      const std::size_t count = value.len / (2 * sizeof(std::int64_t));
      for (std::size_t j = 0; j < count; ++j) {
        std::int64_t pair[2];
        std::memcpy(pair, value.str + j * sizeof pair, sizeof pair);
        const std::int64_t index = pair[0] - base;
        if (index < 0 || index >= n) fail("a result for task " + std::to_string(pair[0]) + ", not of this session");
        if (results[static_cast<std::size_t>(index)] != -1) fail("two results for task " + std::to_string(pair[0]));
        results[static_cast<std::size_t>(index)] = pair[1];
        ++got;
      }
    }
  }
}

void verify(const std::vector<std::int64_t>& results, std::int64_t base, long n) {
  checksum got;
  checksum want;
  for (long i = 0; i < n; ++i) {
    const std::int64_t r = results[static_cast<std::size_t>(i)];
    if (r != square(base + i)) {
      fail("async: result " + std::to_string(i) + " is " + std::to_string(r) + ", expected " +
           std::to_string(square(base + i)));
    }
    got.add(static_cast<u64>(r));
    want.add(static_cast<u64>(square(base + i)));
  }
  if (got.h != want.h) fail("async: checksum mismatch");
}

// One session on fresh keys: n tasks through 2 freshly forked workers, which answer each
// batch with one reply entry or (per_task) with an entry per task.
measured farm_session(context& cx, long n, std::int64_t base, bool per_task) {
  redisContext* c = cx.c;
  const keys k = session_keys(cx.sessions++);
  expect(command(c, "XGROUP CREATE %s %s $ MKSTREAM", k.tasks.c_str(), group), REDIS_REPLY_STATUS, "XGROUP CREATE");
  std::vector<mproc::process> ws;
  for (int id = 0; id < workers; ++id)
    ws.push_back(bench::start_child([url = cx.url, k, id, per_task] { serve(url, k, id, per_task); }));
  wait_for_consumers(c, k, ws);
  std::vector<std::int64_t> results(static_cast<std::size_t>(n), -1);
  const auto t0 = clock_type::now();
  submit(c, k, n, base);
  collect(c, k, n, base, results, ws);
  const auto t1 = clock_type::now();
  for (auto& w : ws) w.terminate();
  for (auto& w : ws) w.join();
  command(c, "DEL %s %s", k.tasks.c_str(), k.replies.c_str());
  verify(results, base, n);
  return {t1 - t0, static_cast<double>(n)};
}

measured batch_session(context& cx, long n, std::int64_t base) { return farm_session(cx, n, base, false); }
measured per_task_session(context& cx, long n, std::int64_t base) { return farm_session(cx, n, base, true); }

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
  std::array<contender, 2> contenders;
};

const std::array rows = {
    row{"async",
        "tasks_per_s",
        metric::rate,
        100'000,
        2'000,
        1,
        {{{"raw_hiredis", batch_session}, {"raw_hiredis_per_task", per_task_session}}}},
};

// As bench/redis_bench.cpp's (and the MPI programs').
std::int64_t base_of(int round, int slice) {
  return static_cast<std::int64_t>((static_cast<u64>(round) * 7919 + static_cast<u64>(slice) * 104'729 + 26) %
                                   1'000'000);
}

}  // namespace

int main(int argc, char** argv) {
  options opts;
  program.parse(argc, argv, opts, {{"--warmup", &opts.warmup, 0}, {"--redis", &opts.url}});
  const row& r = bench::select_row(rows, opts, program, 10'000'000);
  if (opts.url.empty()) program.misuse("--redis URL is required");
  try {
    const context_ptr c = connect(opts.url);
    context cx{std::string(opts.url), c.get()};
    bench::for_each_selected(r.contenders, opts.only, [&](std::size_t i) {
      if (opts.warmup > 0) r.contenders[i].session(cx, opts.warmup, base_of(0, 0) + 1);
    });
    bench::print_rounds(r, opts, [&](std::size_t i, int round, int slice, long count) {
      return r.contenders[i].session(cx, count, base_of(round, slice));
    });
  } catch (const std::exception& e) {
    program.die(e.what());  // the workers are daemons: the runtime stops them at exit
  }
  return 0;
}
