// mproc::redis against a real redis-server that each test starts (redis_test_support.hpp),
// with workers that are this binary re-run as `--serve`: parity with mproc::pool, and the
// failures of issue 16 (workers, clients and Redis itself killed with SIGKILL).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "mproc/detail/pool/registry.hpp"
#include "mproc/redis.hpp"
#include "pool/remote_runner.hpp"
#include "redis/redis_names.hpp"
#include "redis_test_support.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using mproc_test::redis_server;
using mproc_test::worker_process;

int square(int x) { return x * x; }
MPROC_REMOTE(square);

int mul(int a, int b) { return a * b; }
MPROC_REMOTE(mul);
int calculate(int (*f)(int, int), std::tuple<int, int> args) { return f(std::get<0>(args), std::get<1>(args)); }
MPROC_REMOTE(calculate);

int slow_square(int x) {
  std::this_thread::sleep_for(20ms);
  return x * x;
}
MPROC_REMOTE(slow_square);

// Kills the serve process that runs it (its pid is in the environment its workers inherit).
int kill_my_server(int) {
  if (const char* pid = std::getenv("MPROC_TEST_SERVE_PID")) ::kill(std::atoi(pid), SIGKILL);
  std::this_thread::sleep_for(10s);
  return 0;
}
MPROC_REMOTE(kill_my_server);

#ifdef MPROC_TEST_OTHER_BUILD
int only_in_the_other_build(int x) { return x; }
MPROC_REMOTE(only_in_the_other_build);
#endif

struct custom_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

mproc::redis::pool_options options_for(const redis_server& server, const std::string& name) {
  mproc::redis::pool_options o;
  o.url = server.client_url();
  o.name = name;
  o.claim_idle = 1s;
  o.no_worker_timeout = 15s;
  return o;
}

// A server, two workers of one process each, and a client: the common setting.
struct RedisPool : ::testing::Test {
  redis_server server;
  std::string name = mproc_test::fresh_name();
  worker_process first{server.client_url(), name};
  worker_process second{server.client_url(), name};
  mproc::redis::pool pool{options_for(server, name)};
};

TEST_F(RedisPool, AppliesARegisteredFunctionAndALambda) {
  EXPECT_EQ(pool.apply(square, 7), 49);
  EXPECT_EQ(pool.apply([](int a, int b) { return a - b; }, 10, 3), 7);
  EXPECT_EQ(pool.apply([](const std::string& s) { return s + "!"; }, std::string("hi")), "hi!");
}

TEST_F(RedisPool, AnUnregisteredFunctionPointerIsAClearError) {
  int (*f)(int) = [](int x) { return x; };
  try {
    pool.apply(f, 1);
    FAIL() << "no error";
  } catch (const mproc::error& e) {
    EXPECT_NE(std::string(e.what()).find("MPROC_REMOTE"), std::string::npos) << e.what();
  }
}

TEST_F(RedisPool, MapsStarmapsAndImapsInOrder) {
  std::vector<int> items(1000);
  for (int i = 0; i < 1000; ++i) items[static_cast<std::size_t>(i)] = i;
  const auto squares = pool.map(square, items);
  ASSERT_EQ(squares.size(), items.size());
  for (std::size_t i = 0; i < items.size(); ++i) ASSERT_EQ(squares[i], items[i] * items[i]) << i;
  const std::vector<std::tuple<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
  EXPECT_EQ(pool.starmap(mul, pairs), (std::vector<int>{2, 12, 30}));
  std::vector<int> ordered;
  for (int v : pool.imap(square, items, 7)) ordered.push_back(v);
  EXPECT_EQ(ordered, squares);
  std::vector<int> unordered;
  for (int v : pool.imap_unordered(square, items, 3)) unordered.push_back(v);
  std::sort(unordered.begin(), unordered.end());
  EXPECT_EQ(unordered, squares);
}

TEST_F(RedisPool, AFunctionTravelsAsAnArgument) { EXPECT_EQ(pool.apply(calculate, mul, std::tuple{6, 7}), 42); }

TEST_F(RedisPool, ExceptionsKeepTheirType) {
  EXPECT_THROW(pool.apply([](int) -> int { throw std::out_of_range("index 9 of 3"); }, 1), std::out_of_range);
  mproc::register_exception<custom_error>();
  try {
    pool.apply([](int) -> int { throw custom_error("custom"); }, 1);
    FAIL() << "no error";
  } catch (const custom_error& e) {
    EXPECT_STREQ(e.what(), "custom");
  }
}

TEST_F(RedisPool, CallbacksRunOnceEachAndAsCompletedYieldsEachOnce) {
  std::atomic<int> calls{0};
  std::atomic<int> sum{0};
  std::vector<mproc::async_result<int>> results;
  for (int i = 1; i <= 200; ++i)
    results.push_back(pool.apply_async(square, i).then([&](const int& v) {
      sum += v;
      ++calls;
    }));
  std::vector<int> seen(results.size(), 0);
  for (std::size_t i : mproc::as_completed(results, 30s)) ++seen[i];
  EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
  for (int i = 0; i < 2000 && calls.load() < 200; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(calls.load(), 200);
  EXPECT_EQ(sum.load(), 200 * 201 * 401 / 6);
}

TEST_F(RedisPool, TenThousandTasksAndTheStreamIsEmptyAfter) {
  std::vector<mproc::async_result<int>> results;
  for (int i = 0; i < 10000; ++i) results.push_back(pool.apply_async(square, i % 1000));
  long long total = 0;
  for (auto& r : results) total += r.get(60s);
  EXPECT_EQ(total, 10LL * (999LL * 1000 * 1999 / 6));
  // Acknowledged entries leave the stream: it does not grow without bound.
  const auto table = mproc::detail::registry_table();
  const mproc::detail::redis_names names(name, table->hash());
  auto redis = server.connect();
  EXPECT_EQ(mproc::detail::integer_of(redis->command({"XLEN", names.tasks()}).get()), 0);
}

TEST_F(RedisPool, ACrashingTaskIsWorkerLostAtOnceAndTheRunGoesOn) {
  std::vector<mproc::async_result<int>> results;
  for (int i = 0; i < 4; ++i)
    results.push_back(pool.apply_async(
        [](int crash) -> int {
          if (crash % 2 == 0) ::raise(SIGSEGV);
          ::raise(SIGKILL);
          return 0;
        },
        i));
  for (auto& r : results) EXPECT_THROW(r.get(30s), mproc::worker_lost);
  EXPECT_EQ(pool.apply(square, 12), 144);
}

TEST(RedisPoolTimeout, TaskTimeoutKillsTheTaskAndTheWorkerGoesOn) {
  redis_server server;
  const std::string name = mproc_test::fresh_name();
  worker_process worker(server.client_url(), name);
  auto o = options_for(server, name);
  o.task_timeout = 500ms;
  mproc::redis::pool pool(o);
  const auto started = std::chrono::steady_clock::now();
  EXPECT_THROW(pool.apply(
                   [](int) {
                     std::this_thread::sleep_for(1min);
                     return 0;
                   },
                   1),
               mproc::timeout_error);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 20s);
  EXPECT_EQ(pool.apply(square, 3), 9);
}

TEST(RedisPoolCancel, CancelsWhatIsNotSentYet) {
  redis_server server;
  const std::string name = mproc_test::fresh_name();
  worker_process worker(server.client_url(), name);
  mproc::redis::pool pool(options_for(server, name));
  // Writes paused: the sender's first batch waits in Redis, the rest in the client.
  auto redis = server.connect();
  redis->command({"CLIENT", "PAUSE", "1500", "WRITE"});
  std::vector<mproc::async_result<int>> results;
  for (int i = 0; i < 2000; ++i) results.push_back(pool.apply_async(square, i));
  pool.cancel_pending();
  int done = 0;
  int cancelled = 0;
  for (std::size_t i = 0; i < results.size(); ++i) {
    try {
      EXPECT_EQ(results[i].get(60s), static_cast<int>(i * i));
      ++done;
    } catch (const mproc::cancelled_error&) {
      EXPECT_TRUE(results[i].cancelled());
      ++cancelled;
    }
  }
  EXPECT_EQ(done + cancelled, 2000);
  EXPECT_GE(cancelled, 2000 - 256) << "at most one batch of 256 was in the sender's hands";
  EXPECT_EQ(pool.apply(square, 5), 25);
}

// Every task completes although its worker is SIGKILLed holding a batch of them: the
// other worker takes them over after claim_idle (at least once).
TEST(RedisFailure, AWorkerKilledMidBatchLosesNoTask) {
  redis_server server;
  const std::string name = mproc_test::fresh_name();
  worker_process doomed(server.client_url(), name, 1, 64);
  mproc::redis::pool pool(options_for(server, name));
  std::vector<mproc::async_result<int>> results;
  for (int i = 0; i < 400; ++i) results.push_back(pool.apply_async(slow_square, i));
  EXPECT_EQ(results[0].get(30s), 0);  // the doomed worker runs, with a batch in hand
  doomed.kill_now();
  worker_process survivor(server.client_url(), name, 2, 64);
  const auto killed = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < results.size(); ++i) EXPECT_EQ(results[i].get(60s), static_cast<int>(i * i)) << i;
  std::printf("400 tasks done %.1f s after the SIGKILL of the worker holding them\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count());
}

// A task that kills its worker's serve process each time fails with worker_lost after
// max_retries deliveries; workers are restarted as a supervisor (systemd) would.
TEST(RedisFailure, ATaskThatKillsEveryWorkerFailsAfterMaxRetries) {
  redis_server server;
  const std::string name = mproc_test::fresh_name();
  auto o = options_for(server, name);
  o.max_retries = 2;
  mproc::redis::pool pool(o);
  std::vector<std::unique_ptr<worker_process>> workers;
  workers.push_back(std::make_unique<worker_process>(server.client_url(), name));
  auto doomed = pool.apply_async(kill_my_server, 0);
  int restarts = 0;
  const auto give_up = std::chrono::steady_clock::now() + 60s;
  while (!doomed.ready() && std::chrono::steady_clock::now() < give_up) {
    if (workers.back()->exited()) {
      ++restarts;
      workers.push_back(std::make_unique<worker_process>(server.client_url(), name));
    }
    std::this_thread::sleep_for(20ms);
  }
  try {
    doomed.get(1s);
    FAIL() << "no error";
  } catch (const mproc::worker_lost& e) {
    EXPECT_NE(std::string(e.what()).find("max_retries is 2"), std::string::npos) << e.what();
  }
  EXPECT_EQ(restarts, 2) << "two deliveries, each killing its worker";
  EXPECT_EQ(pool.apply(square, 4), 16);
}

// A client SIGKILLed with tasks queued: its unstarted tasks are dropped, its keys expire.
TEST(RedisFailure, AKilledClientsTasksAreDroppedAndItsKeysExpire) {
  redis_server server;
  const std::string name = mproc_test::fresh_name();
  const mproc::detail::redis_names names(name, mproc::detail::registry_table()->hash());
  const pid_t client = ::fork();
  if (client == 0) {
    auto o = options_for(server, name);
    o.no_worker_timeout = 1s;  // its liveness key lives 5 s
    mproc::redis::pool pool(o);
    std::vector<mproc::async_result<int>> results;
    for (int i = 0; i < 300; ++i) results.push_back(pool.apply_async(slow_square, i));
    std::this_thread::sleep_for(1h);  // SIGKILLed before this ends
    ::_exit(0);
  }
  auto redis = server.connect();
  for (int i = 0; i < 500 && mproc::detail::integer_of(redis->command({"XLEN", names.tasks()}).get()) < 300; ++i)
    std::this_thread::sleep_for(10ms);
  ASSERT_EQ(mproc::detail::integer_of(redis->command({"XLEN", names.tasks()}).get()), 300);
  mproc_test::kill_and_reap(client);
  worker_process worker(server.client_url(), name, 1, 4);
  // 300 tasks of 20 ms would take 6 s; once the client's key is gone (5 s after its last
  // heartbeat) the worker drops what is left, unstarted.
  const auto give_up = std::chrono::steady_clock::now() + 30s;
  while (mproc::detail::integer_of(redis->command({"XLEN", names.tasks()}).get()) != 0 &&
         std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(50ms);
  EXPECT_EQ(mproc::detail::integer_of(redis->command({"XLEN", names.tasks()}).get()), 0);
  // The client's key and reply stream: gone, or expiring within a minute.
  const auto keys = redis->command({"KEYS", names.prefix + ":*"});
  for (std::size_t k = 0; k < keys->elements; ++k) {
    const std::string key(mproc::detail::text_of(keys->element[k]));
    if (key == names.tasks()) continue;
    const auto ttl = mproc::detail::integer_of(redis->command({"PTTL", key}).get());
    EXPECT_GT(ttl, 0) << key;
    EXPECT_LE(ttl, 60000) << key;
  }
}

// Redis SIGKILLed and restarted on its append-only file: no task is lost.
TEST(RedisFailure, RedisKilledAndRestartedWithAofLosesNothing) {
  redis_server server({.tcp = false, .append_only = true, .password = {}, .user = {}});
  const std::string name = mproc_test::fresh_name();
  worker_process worker(server.client_url(), name, 2);
  mproc::redis::pool pool(options_for(server, name));
  std::vector<mproc::async_result<int>> results;
  for (int i = 0; i < 300; ++i) results.push_back(pool.apply_async(slow_square, i));
  EXPECT_EQ(results[10].get(30s), 100);
  server.kill_now();
  std::this_thread::sleep_for(500ms);
  server.start();
  for (int i = 300; i < 400; ++i) results.push_back(pool.apply_async(slow_square, i));
  for (std::size_t i = 0; i < results.size(); ++i) EXPECT_EQ(results[i].get(60s), static_cast<int>(i * i)) << i;
}

// Redis gone for good: every pending result fails with a clear error in bounded time.
TEST(RedisFailure, RedisGoneForGoodFailsEveryPendingTaskInBoundedTime) {
  auto server = std::make_unique<redis_server>();
  const std::string name = mproc_test::fresh_name();
  worker_process worker(server->client_url(), name);
  auto o = options_for(*server, name);
  o.no_worker_timeout = 2s;
  mproc::redis::pool pool(o);
  std::vector<mproc::async_result<int>> results;
  for (int i = 0; i < 200; ++i) results.push_back(pool.apply_async(slow_square, i));
  EXPECT_EQ(results[0].get(30s), 0);
  server.reset();
  const auto gone = std::chrono::steady_clock::now();
  int failed = 0;
  for (auto& r : results) {
    try {
      r.get(20s);
    } catch (const mproc::timeout_error&) {
      ADD_FAILURE() << "a result still pending 20 s after Redis went away";
    } catch (const mproc::error& e) {
      ++failed;
      EXPECT_NE(std::string(e.what()).find("lost the connection"), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(failed, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - gone, 8s);
  EXPECT_THROW(pool.apply_async(square, 1), mproc::error);
}

// A worker told to stop while Redis is gone does not wait for it forever.
TEST(RedisFailure, AWorkerStopsWithinSecondsWhenRedisIsGone) {
  auto server = std::make_unique<redis_server>();
  const std::string name = mproc_test::fresh_name();
  worker_process worker(server->client_url(), name);
  {
    mproc::redis::pool pool(options_for(*server, name));
    EXPECT_EQ(pool.apply(square, 2), 4);
  }
  server.reset();
  std::this_thread::sleep_for(300ms);  // the worker finds Redis gone and starts retrying
  const auto stopped = std::chrono::steady_clock::now();
  const int status = worker.stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_LT(std::chrono::steady_clock::now() - stopped, 10s);
}

// Foreign and corrupt entries on the task stream: serialization_error for a task that names
// its client, a skipped entry for the rest, and the worker goes on.
// The processes under `pid`: its children, theirs, and so on.
std::vector<pid_t> descendants(pid_t pid) {
  std::vector<pid_t> found;
  for (const pid_t child : mproc_test::children_of(pid)) {
    found.push_back(child);
    const std::vector<pid_t> below = descendants(child);
    found.insert(found.end(), below.begin(), below.end());
  }
  return found;
}

// The Redis kill storm: while a client streams tasks, serve processes and the pool
// processes under them are SIGKILLed at random and the serve processes restarted, as a
// supervisor would. A killed serve loses no task: other workers claim what it held (at least
// once). A killed pool process fails the one task it ran with worker_lost, as with the local
// pool, so worker_lost is bounded by those kills. Every other result is right, the stream
// ends empty with nothing pending, and no process of a killed serve is left.
TEST(RedisStorm, WorkersAndTheirProcessesKilledAtRandomLoseNoTask) {
  redis_server server;
  const std::string name = mproc_test::fresh_name();
  auto o = options_for(server, name);
  o.max_retries = 1000;  // a task may be held by several of the workers killed
  mproc::redis::pool pool(o);
  constexpr int slots = 3;
  std::vector<std::unique_ptr<worker_process>> workers;
  for (int k = 0; k < slots; ++k) workers.push_back(std::make_unique<worker_process>(server.client_url(), name, 2, 16));

  std::mt19937 random(std::random_device{}());
  std::vector<mproc::async_result<int>> results;
  std::vector<pid_t> left_behind;  // every process of a killed serve, to be gone at the end
  int serve_kills = 0;
  int process_kills = 0;
  constexpr int kills = 24;
  constexpr int tasks_per_kill = 150;
  for (int kill = 0; kill < kills; ++kill) {
    for (int k = 0; k < tasks_per_kill; ++k) {
      const int i = static_cast<int>(results.size());
      results.push_back(pool.apply_async(slow_square, i));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + random() % 200));
    auto& victim = workers[random() % slots];
    // The pool's workers: the children of its zygote, which is the serve process's child.
    std::vector<pid_t> pool_processes;
    for (const pid_t zygote : mproc_test::children_of(victim->pid())) {
      const std::vector<pid_t> workers_of_pool = mproc_test::children_of(zygote);
      pool_processes.insert(pool_processes.end(), workers_of_pool.begin(), workers_of_pool.end());
    }
    if (random() % 2 == 0 && !pool_processes.empty()) {
      ::kill(pool_processes[random() % pool_processes.size()], SIGKILL);
      ++process_kills;
    } else {
      const std::vector<pid_t> below = descendants(victim->pid());
      left_behind.insert(left_behind.end(), below.begin(), below.end());
      victim->kill_now();
      victim = std::make_unique<worker_process>(server.client_url(), name, 2, 16);
      ++serve_kills;
    }
  }

  int right = 0;
  int lost = 0;
  const auto give_up = std::chrono::steady_clock::now() + 60s;  // for all of them: a lost task fails once
  for (std::size_t i = 0; i < results.size(); ++i) {
    try {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(give_up - std::chrono::steady_clock::now());
      EXPECT_EQ(results[i].get(std::max(left, std::chrono::milliseconds(1))), static_cast<int>(i * i)) << i;
      ++right;
    } catch (const mproc::worker_lost&) {
      ++lost;
    }
  }
  std::printf("%zu tasks: %d right, %d worker_lost; %d serve processes and %d pool processes SIGKILLed\n",
              results.size(), right, lost, serve_kills, process_kills);
  EXPECT_LE(lost, process_kills) << "only a killed pool process loses its task";
  EXPECT_EQ(right + lost, static_cast<int>(results.size()));
  EXPECT_GT(serve_kills, 0);

  const auto table = mproc::detail::registry_table();
  const mproc::detail::redis_names names(name, table->hash());
  auto redis = server.connect();
  const auto stream_empty = [&] {
    const auto pending = redis->command({"XPENDING", names.tasks(), mproc::detail::redis_names::group});
    return mproc::detail::integer_of(redis->command({"XLEN", names.tasks()}).get()) == 0 &&
           pending->type == REDIS_REPLY_ARRAY && pending->elements > 0 &&
           mproc::detail::integer_of(pending->element[0]) == 0;
  };
  EXPECT_TRUE(mproc_test::eventually(stream_empty, 10s)) << "every task entry acknowledged and deleted";
  for (auto& w : workers) EXPECT_EQ(w->stop(), 0) << "a live worker stops cleanly on SIGTERM";
  for (const pid_t p : left_behind) {
    // Gone, or a zombie of init's once reparented.
    EXPECT_TRUE(mproc_test::eventually([p] { return !mproc_test::running(p); }, 10s))
        << "process " << p << " of a killed serve is left";
  }
}

TEST(RedisFailure, ForeignAndCorruptEntriesDoNotStopTheWorker) {
  redis_server server;
  const std::string name = mproc_test::fresh_name();
  const mproc::detail::redis_names names(name, mproc::detail::registry_table()->hash());
  mproc::redis::pool pool(options_for(server, name));
  auto bad_function = pool.apply_async(square, 3);
  auto bad_arguments = pool.apply_async([](const std::string& s) { return s.size(); }, std::string("twelve bytes"));
  auto redis = server.connect();
  // The client's entries, taken off the stream before any worker runs, come back corrupt.
  std::vector<std::pair<std::string, std::string>> taken;  // client, task bytes
  for (int i = 0; i < 500 && taken.size() < 2; ++i) {
    const auto entries = redis->command({"XRANGE", names.tasks(), "-", "+"});
    if (entries->elements < 2) {
      std::this_thread::sleep_for(10ms);
      continue;
    }
    for (std::size_t e = 0; e < entries->elements; ++e) {
      const auto* fields = entries->element[e]->element[1];
      std::pair<std::string, std::string> entry;
      for (std::size_t f = 0; f + 1 < fields->elements; f += 2) {
        const auto key = mproc::detail::text_of(fields->element[f]);
        if (key == "c") entry.first = mproc::detail::text_of(fields->element[f + 1]);
        if (key == "t") entry.second = mproc::detail::text_of(fields->element[f + 1]);
      }
      taken.push_back(entry);
      redis->command({"XDEL", names.tasks(), mproc::detail::text_of(entries->element[e]->element[0])});
    }
  }
  ASSERT_EQ(taken.size(), 2U);
  auto [client, function_task] = taken[0];
  mproc::detail::remote_task_header h{};
  std::memcpy(&h, function_task.data(), sizeof h);
  h.invoker = 0xfffffff0U;  // no such entry in the function table
  std::memcpy(function_task.data(), &h, sizeof h);
  std::string arguments_task = taken[1].second;
  for (std::size_t k = sizeof h; k < arguments_task.size(); ++k) arguments_task[k] = '\xff';
  redis->command({"XADD", names.tasks(), "*", "hello", "world"});
  redis->command({"XADD", names.tasks(), "*", "c", client, "t", "short"});
  redis->command({"XADD", names.tasks(), "*", "c", client, "t", function_task});
  redis->command({"XADD", names.tasks(), "*", "c", client, "t", arguments_task});
  worker_process worker(server.client_url(), name);
  EXPECT_THROW(bad_function.get(30s), mproc::serialization_error);
  EXPECT_THROW(bad_arguments.get(30s), mproc::serialization_error);
  EXPECT_EQ(pool.apply(square, 6), 36);
  EXPECT_EQ(mproc::detail::integer_of(redis->command({"XLEN", names.tasks()}).get()), 0);
}

// A pool given `credentials` ending in the wrong password "nope": a clear error, which
// does not print the password.
void expect_refused_without_printing(const redis_server& server, const std::string& name,
                                     const std::string& credentials) {
  auto wrong = options_for(server, name);
  wrong.url = server.url(credentials);
  try {
    mproc::redis::pool pool(wrong);
    FAIL() << "no error";
  } catch (const mproc::error& e) {
    EXPECT_NE(std::string(e.what()).find("refused the URL's credentials"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("nope"), std::string::npos) << "the password is not printed";
  }
}

TEST(RedisSecurity, APasswordProtectedServer) {
  redis_server server({.tcp = true, .append_only = false, .password = "s3cret", .user = {}});
  const std::string name = mproc_test::fresh_name();
  expect_refused_without_printing(server, name, ":nope");
  auto none = options_for(server, name);
  none.url = server.url();
  EXPECT_THROW(mproc::redis::pool{none}, mproc::error);
  worker_process worker(server.client_url(), name);
  mproc::redis::pool pool(options_for(server, name));
  EXPECT_EQ(pool.apply(square, 8), 64);
}

// The README's advice for a shared server: an ACL user of its own, with keys under mproc:
// and no @dangerous command, is all that mproc needs, workers, clients and queues alike.
TEST(RedisSecurity, AnAclUserLimitedToMprocKeys) {
  redis_server server({.tcp = false, .append_only = false, .password = "app-s3cret", .user = "mproc_app"});
  const std::string name = mproc_test::fresh_name();
  expect_refused_without_printing(server, name, "mproc_app:nope");
  auto as_default = options_for(server, name);
  as_default.url = server.url(":app-s3cret");  // the default user, who is off
  EXPECT_THROW(mproc::redis::pool{as_default}, mproc::error);

  worker_process worker(server.client_url(), name);
  mproc::redis::pool pool(options_for(server, name));
  EXPECT_EQ(pool.apply(square, 9), 81);
  EXPECT_EQ(pool.map(square, std::vector<int>{1, 2, 3, 4}), (std::vector<int>{1, 4, 9, 16}));
  mproc::redis::queue<std::string> q(server.client_url(), name, 2);  // bounded: a server-side script
  q.put("a");
  q.put("b");
  EXPECT_THROW(q.put_nowait("c"), mproc::queue_full);
  EXPECT_EQ(q.get(), "a");
  EXPECT_EQ(q.get(), "b");
  // What the user may not do, it may not do: the limit is real.
  const auto denied = server.connect()->command({"SET", "outside", "1"});
  EXPECT_TRUE(mproc::detail::text_of(denied.get()).starts_with("NOPERM")) << mproc::detail::text_of(denied.get());
}

TEST(RedisBuilds, AClientWithOnlyWorkersOfAnotherBuildFailsClearly) {
  redis_server server;
  const std::string name = mproc_test::fresh_name();
  worker_process other(server.client_url(), name, 1, 0, MPROC_TEST_OTHER_BUILD_EXE);
  auto o = options_for(server, name);
  o.no_worker_timeout = 2s;
  mproc::redis::pool pool(o);
  const auto started = std::chrono::steady_clock::now();
  try {
    pool.apply(square, 2);
    FAIL() << "no error";
  } catch (const mproc::error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("no live worker of this build"), std::string::npos) << what;
    EXPECT_NE(what.find("live workers of other builds"), std::string::npos) << what;
    EXPECT_NE(what.find("pid " + std::to_string(other.pid())), std::string::npos) << what;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - started, 10s);
}

TEST(RedisUrl, ParsesTheFormsAndRejectsTheRest) {
  using mproc::detail::redis_url;
  const auto tcp = redis_url::parse("redis://me:pw@db.example:6380/2");
  EXPECT_EQ(tcp.host, "db.example");
  EXPECT_EQ(tcp.port, 6380);
  EXPECT_EQ(tcp.user, "me");
  EXPECT_EQ(tcp.password, "pw");
  EXPECT_EQ(tcp.db, 2);
  EXPECT_EQ(tcp.printable(), "redis://me:***@db.example:6380/2");
  const auto unix_socket = redis_url::parse("unix://:pw@/run/redis.sock?db=3");
  EXPECT_EQ(unix_socket.socket_path, "/run/redis.sock");
  EXPECT_EQ(unix_socket.password, "pw");
  EXPECT_EQ(unix_socket.db, 3);
  EXPECT_EQ(redis_url::parse("redis://localhost").port, 6379);
  for (const char* bad : {"http://x", "redis://", "redis://h:99999", "redis://h:12ab", "unix://relative.sock",
                          "unix:///s?x=1", "redis://h/db"})
    EXPECT_THROW(redis_url::parse(bad), mproc::error) << bad;
}

TEST(RedisQueue, AFifoAcrossProcessesWithTimeoutsAndABound) {
  redis_server server;
  const std::string name = mproc_test::fresh_name();
  mproc::redis::queue<std::string> q(server.client_url(), name, 3);
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.maxsize(), 3U);
  const pid_t child = ::fork();
  if (child == 0) {  // the handle works in a forked child, on its own connection
    for (int i = 0; i < 3; ++i) q.put("v" + std::to_string(i));
    ::_exit(q.qsize() == 3 ? 0 : 1);
  }
  int status = -1;
  ::waitpid(child, &status, 0);
  EXPECT_EQ(status, 0);
  EXPECT_TRUE(q.full());
  EXPECT_THROW(q.put_nowait("x"), mproc::queue_full);
  const auto started = std::chrono::steady_clock::now();
  EXPECT_THROW(q.put("x", 200ms), mproc::queue_full);
  EXPECT_GE(std::chrono::steady_clock::now() - started, 200ms);
  EXPECT_FALSE(q.try_put("x"));
  EXPECT_EQ(q.get(), "v0");
  EXPECT_TRUE(q.try_put_for("v3", 1s));
  EXPECT_EQ(q.get_nowait(), "v1");
  EXPECT_EQ(q.try_get(), "v2");
  EXPECT_EQ(q.try_get_for(1s), "v3");
  EXPECT_THROW(q.get_nowait(), mproc::queue_empty);
  EXPECT_THROW(q.get(150ms), mproc::queue_empty);
  EXPECT_FALSE(q.try_get_for(50ms).has_value());
}

TEST(RedisQueue, AGetWaitsForAPutFromAnotherProcess) {
  redis_server server;
  const std::string name = mproc_test::fresh_name();
  mproc::redis::queue<std::vector<int>> q(server.client_url(), name);
  const pid_t child = ::fork();
  if (child == 0) {
    std::this_thread::sleep_for(300ms);
    mproc::redis::queue<std::vector<int>> mine(server.client_url(), name);
    mine.put({1, 2, 3});
    ::_exit(0);
  }
  EXPECT_EQ(q.get(10s), (std::vector<int>{1, 2, 3}));
  int status = -1;
  ::waitpid(child, &status, 0);
  EXPECT_EQ(status, 0);
}

TEST(RedisQueue, ABadUrlOrAWrongTypeIsAClearError) {
  EXPECT_THROW(mproc::redis::queue<int>("unix:///nonexistent/redis.sock", "q"), mproc::error);
  redis_server server;
  mproc::redis::queue<std::string> strings(server.client_url(), "shared");
  strings.put("not an int");
  mproc::redis::queue<int> ints(server.client_url(), "shared");
  EXPECT_THROW(ints.get(1s), mproc::serialization_error);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 6 && std::strcmp(argv[1], "--serve") == 0) {
    ::setenv("MPROC_TEST_SERVE_PID", std::to_string(::getpid()).c_str(), 1);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a test killed by its timeout leaves no worker behind
    mproc::redis::worker_options o;
    o.url = argv[2];
    o.name = argv[3];
    o.processes = static_cast<unsigned>(std::atoi(argv[4]));
    o.prefetch = static_cast<unsigned>(std::atoi(argv[5]));
    try {
      mproc::redis::serve(o);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "serve: %s\n", e.what());
      return 1;
    }
    return 0;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
