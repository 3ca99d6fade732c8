// mproc::pool with real worker processes.
#include "mproc/pool.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <numeric>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mproc/process.hpp"
#include "mproc/queue.hpp"
#include "mproc/sync.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;

int square(int x) { return x * x; }
int my_pid(int) { return static_cast<int>(::getpid()); }
void nothing() {}
int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

struct custom_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct unregistered_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::vector<int> iota_vector(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

std::vector<int> squares_of(const std::vector<int>& v) {
  std::vector<int> out;
  for (int x : v) out.push_back(x * x);
  return out;
}

TEST(Pool, ApplyRunsInAWorker) {
  mproc::pool p(2);
  EXPECT_EQ(p.size(), 2U);
  EXPECT_EQ(p.apply(square, 7), 49);
  EXPECT_NE(p.apply(my_pid, 0), ::getpid());
  EXPECT_EQ(p.apply([](std::string s, int n) { return s + std::to_string(n); }, std::string("x"), 5), "x5");
}

TEST(Pool, VoidTasks) {
  mproc::pool p(2);
  p.apply(nothing);
  auto r = p.apply_async([](int) {}, 1);
  r.get();
  EXPECT_TRUE(r.ready());
  EXPECT_TRUE(r.successful());
}

TEST(Pool, DefaultSizeIsCpuCount) {
  mproc::pool p;
  EXPECT_EQ(p.size(), mproc::cpu_count());
}

TEST(Pool, MapKeepsInputOrderForEveryChunksize) {
  mproc::pool p(3);
  const auto input = iota_vector(2000);
  const auto expected = squares_of(input);
  for (std::size_t chunksize : {std::size_t{1}, std::size_t{7}, std::size_t{1000}, std::size_t{0}}) {
    EXPECT_EQ(p.map(square, input, chunksize), expected) << "chunksize " << chunksize;
  }
  EXPECT_TRUE(p.map(square, std::vector<int>{}).empty());
}

TEST(Pool, MapAsyncAndStarmap) {
  mproc::pool p(2);
  auto r = p.map_async(square, iota_vector(100));
  EXPECT_EQ(r.get(), squares_of(iota_vector(100)));
  std::vector<std::tuple<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
  EXPECT_EQ(p.starmap([](int a, int b) { return a * b; }, pairs), (std::vector<int>{2, 12, 30}));
  EXPECT_EQ(p.starmap_async([](int a, int b) { return a + b; }, pairs).get(), (std::vector<int>{3, 7, 11}));
}

TEST(Pool, ImapYieldsInOrderAndUnorderedYieldsAll) {
  mproc::pool p(3);
  std::vector<int> got;
  for (int x : p.imap(square, iota_vector(50))) got.push_back(x);
  EXPECT_EQ(got, squares_of(iota_vector(50)));
  std::multiset<int> unordered;
  for (int x : p.imap_unordered(square, iota_vector(50), 4)) unordered.insert(x);
  const auto expected = squares_of(iota_vector(50));
  EXPECT_EQ(unordered, std::multiset<int>(expected.begin(), expected.end()));
  // Completion order: a slow first item comes last.
  std::vector<int> order;
  for (int x : p.imap_unordered(sleep_ms, std::vector<int>{400, 1, 1})) order.push_back(x);
  EXPECT_EQ(order.back(), 400);
}

TEST(Pool, ImapRethrowsWhereIterationReachesTheFailure) {
  mproc::pool p(2);
  auto results = p.imap(
      [](int x) {
        if (x == 3) throw std::out_of_range("three");
        return x;
      },
      iota_vector(6));
  std::vector<int> before;
  try {
    for (int x : results) before.push_back(x);
    FAIL() << "no exception";
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "three");
  }
  EXPECT_EQ(before, (std::vector<int>{0, 1, 2}));
}

TEST(Pool, StdExceptionsKeepTheirType) {
  mproc::pool p(1);
  EXPECT_THROW(p.apply([](int) -> int { throw std::invalid_argument("a"); }, 0), std::invalid_argument);
  EXPECT_THROW(p.apply([](int) -> int { throw std::overflow_error("b"); }, 0), std::overflow_error);
  EXPECT_THROW(p.apply([](int) -> int { throw std::bad_alloc(); }, 0), std::bad_alloc);
  EXPECT_THROW(p.apply([](int) -> int { throw mproc::queue_empty("c"); }, 0), mproc::queue_empty);
  try {
    p.apply([](int) -> int { throw std::logic_error("the message"); }, 0);
  } catch (const std::logic_error& e) {
    EXPECT_STREQ(e.what(), "the message");
  }
}

// Registered exceptions keep their type; others become remote_error.
TEST(Pool, RegisteredExceptionsKeepTheirType) {
  mproc::register_exception<custom_error>();
  mproc::pool p(1);
  EXPECT_THROW(p.apply([](int) -> int { throw custom_error("mine"); }, 0), custom_error);
  try {
    p.apply([](int) -> int { throw unregistered_error("theirs"); }, 0);
    FAIL() << "no exception";
  } catch (const mproc::remote_error& e) {
    EXPECT_NE(e.type_name().find("unregistered_error"), std::string::npos) << e.type_name();
    EXPECT_STREQ(e.what(), "theirs");
  }
  try {
    p.apply([](int) -> int { throw 42; }, 0);
    FAIL() << "no exception";
  } catch (const mproc::remote_error& e) {
    EXPECT_EQ(e.type_name(), "int");
  }
}

struct unencodable {
  template <class Archive>
  void save(Archive&) const {
    throw std::runtime_error("cannot encode me");
  }
  template <class Archive>
  void load(Archive&) {}
};

TEST(Pool, AResultThatCannotBeSerialisedFailsItsTaskNotTheWorker) {
  mproc::pool p(1);
  const int pid = p.apply(my_pid, 0);
  EXPECT_THROW(p.apply([](int) { return unencodable{}; }, 0), mproc::serialization_error);
  EXPECT_EQ(p.apply(my_pid, 0), pid) << "the worker was replaced";
}

TEST(Pool, WorkerAbortFailsItsTaskWithWorkerLostAndThePoolGoesOn) {
  mproc::pool p(2);
  try {
    p.apply([](int) -> int { std::abort(); }, 0);
    FAIL() << "no exception";
  } catch (const mproc::worker_lost& e) {
    EXPECT_EQ(e.exitcode(), -SIGABRT);
  }
  EXPECT_EQ(p.apply(square, 4), 16);
}

TEST(Pool, EveryWayOfDyingIsWorkerLost) {
  mproc::pool p(2);
  const auto lost_code = [&](auto task) {
    try {
      p.apply(task, 0);
    } catch (const mproc::worker_lost& e) {
      return e.exitcode();
    }
    return 12345;
  };
  EXPECT_EQ(lost_code([](int) { ::_exit(3); }), 3);
#if defined(__SANITIZE_ADDRESS__)
  EXPECT_NE(lost_code([](int) { ::raise(SIGSEGV); }), 12345);  // ASan turns SIGSEGV into exit(1)
#else
  EXPECT_EQ(lost_code([](int) { ::raise(SIGSEGV); }), -SIGSEGV);
#endif
  EXPECT_EQ(lost_code([](int) { ::kill(::getpid(), SIGKILL); }), -SIGKILL);
  EXPECT_EQ(lost_code([](int) { std::exit(0); }), 0);
  EXPECT_EQ(p.map(square, iota_vector(20)), squares_of(iota_vector(20)));
}

TEST(Pool, WorkerKilledFromOutsideFailsOnlyItsTask) {
  mproc::pool p(2);
  mproc::queue<int> started;
  auto victim = p.apply_async(
      [](mproc::queue<int> q) {
        q.put(static_cast<int>(::getpid()));
        for (;;) ::pause();
      },
      started);
  auto bystander = p.apply_async(sleep_ms, 300);
  const int pid = started.get(30s);
  ::kill(pid, SIGKILL);
  const auto begin = std::chrono::steady_clock::now();
  EXPECT_THROW(victim.get(), mproc::worker_lost);
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 1s);
  EXPECT_EQ(bystander.get(), 300);
}

TEST(Pool, TaskTimeoutKillsAndReplacesTheWorker) {
  mproc::pool_options options;
  options.processes = 1;
  options.task_timeout = 200ms;
  mproc::pool p(options);
  const int first = p.apply(my_pid, 0);
  const auto begin = std::chrono::steady_clock::now();
  EXPECT_THROW(p.apply(sleep_ms, 5000), mproc::timeout_error);
  const auto took = std::chrono::steady_clock::now() - begin;
  EXPECT_GE(took, 200ms);
  EXPECT_LT(took, 3s);
  EXPECT_NE(p.apply(my_pid, 0), first) << "the timed-out worker was not replaced";
  EXPECT_EQ(p.apply(sleep_ms, 10), 10);
}

// A timeout too long to count in nanoseconds, or in poll(2)'s int of milliseconds, is
// simply long: no task is killed early, and the pool works.
TEST(Pool, AHugeTaskTimeoutNeverKillsEarly) {
  for (const auto timeout :
       {std::chrono::milliseconds::max(), std::chrono::milliseconds(std::chrono::hours(24 * 40))}) {
    mproc::pool_options options;
    options.processes = 1;
    options.task_timeout = timeout;
    mproc::pool p(options);
    EXPECT_EQ(p.apply(sleep_ms, 50), 50);
    EXPECT_EQ(p.apply(sleep_ms, 1), 1);
  }
}

TEST(Pool, MaxTasksPerChildRecyclesWorkers) {
  mproc::pool_options options;
  options.processes = 2;
  options.max_tasks_per_child = 2;
  mproc::pool p(options);
  std::set<int> pids;
  for (int i = 0; i < 10; ++i) pids.insert(p.apply(my_pid, i));
  EXPECT_GE(pids.size(), 5U);
}

int initializer_count = 0;

TEST(Pool, InitializerRunsOnceInEachWorker) {
  mproc::pool_options options;
  options.processes = 2;
  options.initializer = [] { ++initializer_count; };
  mproc::pool p(options);
  const auto counts = p.map([](int) { return initializer_count; }, iota_vector(40), 1);
  for (int c : counts) EXPECT_EQ(c, 1);
  EXPECT_EQ(initializer_count, 0) << "the initializer ran in the parent";
}

TEST(Pool, ClosedPoolRefusesTasks) {
  mproc::pool p(1);
  p.close();
  EXPECT_THROW(p.apply(square, 1), mproc::closed_error);
  EXPECT_THROW(p.map(square, iota_vector(3)), mproc::closed_error);
  p.join();
}

TEST(Pool, JoinBeforeCloseThrows) {
  mproc::pool p(1);
  EXPECT_THROW(p.join(), mproc::error);
}

TEST(Pool, CloseJoinWaitsForQueuedTasks) {
  mproc::pool p(2);
  std::vector<mproc::async_result<int>> results;
  for (int i = 0; i < 10; ++i) results.push_back(p.apply_async(sleep_ms, 20));
  p.close();
  p.join();
  for (auto& r : results) {
    EXPECT_TRUE(r.ready());
    EXPECT_EQ(r.get(), 20);
  }
}

TEST(Pool, TerminateWithThousandPendingLongTasksReturnsPromptly) {
  std::vector<int> pids;
  std::vector<mproc::async_result<int>> results;
  const auto begin = std::chrono::steady_clock::now();
  {
    mproc::pool p(2);
    for (int i = 0; i < 2; ++i) pids.push_back(p.apply(my_pid, 0));
    for (int i = 0; i < 1000; ++i) results.push_back(p.apply_async(sleep_ms, 10000));
    p.terminate();
    p.join();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 2s);
  for (auto& r : results) EXPECT_THROW(r.get(), mproc::closed_error);
  for (int pid : pids) EXPECT_FALSE(mproc_test::read_proc_stat(pid).has_value()) << "worker " << pid << " left";
  EXPECT_TRUE(mproc_test::children_of_self().empty());
}

TEST(Pool, DestructorClosesAndJoins) {
  mproc::async_result<int> r = [] {
    mproc::pool p(1);
    return p.apply_async(sleep_ms, 100);
  }();
  EXPECT_TRUE(r.ready());
  EXPECT_EQ(r.get(), 100);
  EXPECT_TRUE(mproc_test::children_of_self().empty());
}

TEST(Pool, AsyncResultGetTimeoutWaitAndSuccessful) {
  mproc::pool p(1);
  auto r = p.apply_async(sleep_ms, 300);
  EXPECT_THROW((void)r.successful(), mproc::error);
  EXPECT_FALSE(r.wait(10ms));
  EXPECT_THROW(r.get(10ms), mproc::timeout_error);
  EXPECT_TRUE(r.wait(10s));
  EXPECT_TRUE(r.successful());
  EXPECT_EQ(r.get(1s), 300);
  auto bad = p.apply_async([](int) -> int { throw std::runtime_error("x"); }, 0);
  bad.wait();
  EXPECT_FALSE(bad.successful());
}

TEST(Pool, CallbacksRunOnceEachInCompletionOrderOnOneThread) {
  std::mutex m;
  std::vector<int> order;
  std::set<std::thread::id> threads;
  std::atomic<int> errors{0};
  {
    mproc::pool p(2);
    p.apply_async(sleep_ms, 300).then([&](const int& v) {
      std::lock_guard lock(m);
      order.push_back(v);
      threads.insert(std::this_thread::get_id());
    });
    p.apply_async(sleep_ms, 10).then([&](const int& v) {
      std::lock_guard lock(m);
      order.push_back(v);
      threads.insert(std::this_thread::get_id());
    });
    p.apply_async([](int) -> int { throw std::runtime_error("e"); }, 0)
        .then([&](const int&) { ADD_FAILURE() << "value callback for a failed task"; },
              [&](std::exception_ptr) { ++errors; });
    p.close();
    p.join();  // returns after every callback ran
    std::lock_guard lock(m);
    EXPECT_EQ(order, (std::vector<int>{10, 300}));
  }
  EXPECT_EQ(threads.size(), 1U);
  EXPECT_EQ(threads.count(std::this_thread::get_id()), 0U) << "callbacks ran on the caller's thread";
  EXPECT_EQ(errors, 1);
}

// Callbacks of a result that get() reads still run on the result thread, first (before
// get() returns).
// get() reads results itself for a while (pump_results); callbacks must still run on the
// result thread, and before get() returns, as in Python.
TEST(Pool, CallbacksStayOnTheResultThreadWhenGetReads) {
  mproc::pool p(1);
  mproc::event registered;  // the task finishes only once its callback is registered
  const auto caller = std::this_thread::get_id();
  int on_caller = 0;
  int missing = 0;
  for (int i = 0; i < 300; ++i) {
    std::thread::id where;
    bool ran = false;
    auto r = p.apply_async(
        [](mproc::event go, int x) {
          go.wait();
          return x * x;
        },
        registered, i);
    r.then([&, i](const int& v) {
      where = std::this_thread::get_id();
      ran = v == i * i;
    });
    registered.set();
    ASSERT_EQ(r.get(), i * i);
    registered.clear();
    if (!ran) ++missing;  // get() returned before its callback ran
    if (where == caller) ++on_caller;
  }
  EXPECT_EQ(missing, 0);
  EXPECT_EQ(on_caller, 0);
}

// A thread blocked on a long task must not hold back other results or their callbacks.
TEST(Pool, AThreadBlockedOnALongTaskDoesNotDelayOtherCallbacks) {
  mproc::pool p(2);
  auto slow = p.apply_async(sleep_ms, 3000);
  std::mutex m;
  std::condition_variable cv;
  int done = 0;
  std::thread other([&] {
    for (int i = 0; i < 20; ++i) {
      p.apply_async(square, i).then([&](const int&) {
        std::lock_guard lock(m);
        ++done;
        cv.notify_all();
      });
    }
  });
  std::thread blocked([&] { EXPECT_EQ(slow.get(), 3000); });
  {
    std::unique_lock lock(m);
    EXPECT_TRUE(cv.wait_for(lock, 2s, [&] { return done == 20; })) << done << " of 20 callbacks ran";
  }
  EXPECT_FALSE(slow.ready());
  other.join();
  blocked.join();
}

TEST(Pool, AThrowingCallbackIsReportedAndTheResultThreadGoesOn) {
  mproc::pool p(1);
  testing::internal::CaptureStderr();
  p.apply_async(square, 2).then([](const int&) { throw std::runtime_error("callback failed"); });
  std::atomic<int> later{0};
  auto r = p.apply_async(square, 3);
  r.then([&](const int& v) { later = v; });
  p.close();
  p.join();
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("callback failed"), std::string::npos) << err;
  EXPECT_EQ(later, 9);
}

// then() racing the result's arrival (a task that returns at once): each callback runs
// exactly once, with the value, and every get() returns, whichever side wins each race.
TEST(Pool, ACallbackAddedAsItsResultArrivesRunsExactlyOnce) {
  mproc::pool p(2);
  constexpr int tasks = 3000;
  std::vector<std::atomic<int>> runs(tasks);
  std::vector<mproc::async_result<int>> results;
  results.reserve(tasks);
  for (int i = 0; i < tasks; ++i) {
    results.push_back(p.apply_async(square, i));
    results.back().then([&runs, i](const int& v) { runs[static_cast<std::size_t>(i)] += v == i * i ? 1 : 1000; });
  }
  for (int i = 0; i < tasks; ++i) ASSERT_EQ(results[static_cast<std::size_t>(i)].get(10s), i * i);
  p.close();
  p.join();  // the result thread has run every callback
  for (int i = 0; i < tasks; ++i) ASSERT_EQ(runs[static_cast<std::size_t>(i)].load(), 1) << "task " << i;
}

TEST(Pool, ThenOnAFinishedResultStillRuns) {
  mproc::pool p(1);
  auto r = p.apply_async(square, 5);
  r.wait();
  std::atomic<int> seen{0};
  r.then([&](const int& v) { seen = v; });
  p.close();
  p.join();
  EXPECT_EQ(seen, 25);
}

TEST(Pool, QueuePassedToTasksLetsWorkersTalk) {
  mproc::pool p(2);
  mproc::queue<int> q;
  auto writer = p.apply_async(
      [](mproc::queue<int> to) {
        for (int i = 0; i < 5; ++i) to.put(i);
      },
      q);
  auto reader = p.apply_async(
      [](mproc::queue<int> from) {
        int sum = 0;
        for (int i = 0; i < 5; ++i) sum += from.get();
        return sum;
      },
      q);
  writer.get();
  EXPECT_EQ(reader.get(10s), 10);
}

TEST(Pool, FourThreadsSubmitAtOnce) {
  mproc::pool p(2);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        if (p.apply(square, t * 1000 + i) != (t * 1000 + i) * (t * 1000 + i)) ++wrong;
      }
      const auto v = p.map(square, iota_vector(500));
      if (v != squares_of(iota_vector(500))) ++wrong;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong, 0);
}

// The table of task functions is written by the parent only: workers map it read-only, so
// a worker gone rogue cannot redirect the others.
TEST(Pool, WorkersMapTheFunctionTableReadOnly) {
  mproc::pool p(1);
  const auto table_mapping = [](int) {
    std::ifstream maps("/proc/self/maps");
    std::string line;
    std::string found;
    while (std::getline(maps, line)) {
      if (line.find("memfd:mproc-pool") != std::string::npos) found += line.substr(line.find(' ') + 1, 4) + ";";
    }
    return found;
  };
  const std::string perms = p.apply(table_mapping, 0);
  EXPECT_EQ(perms.rfind("r--s;", 0), 0U) << perms;             // the table first, read-only
  EXPECT_NE(perms.find("rw-s;"), std::string::npos) << perms;  // then the workers' slots
}

TEST(Pool, WorkersIgnoreSigint) {
  mproc::pool p(1);
  const int pid = p.apply(my_pid, 0);
  ::kill(pid, SIGINT);
  EXPECT_EQ(p.apply(my_pid, 0), pid);
}

TEST(Pool, PoolInAChildThatIsSigkilledLeavesNoWorkerAlive) {
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);  // orphans come to us, to be counted
  mproc_test::test_pipe out;
  mproc::process owner([&out] {
    mproc::pool p(2);
    std::set<int> pids;
    while (pids.size() < 2) {
      for (int pid : p.map(my_pid, iota_vector(8), 1)) pids.insert(pid);
    }
    std::string line;
    for (int pid : pids) line += std::to_string(pid) + " ";
    out.write(line + "\n");
    for (;;) ::pause();
  });
  owner.start();
  out.close_write();
  const std::string line = out.read_line().value_or("");
  std::vector<pid_t> workers;
  std::istringstream pids(line);
  for (pid_t pid; pids >> pid;) workers.push_back(pid);
  ASSERT_EQ(workers.size(), 2U) << line;
  owner.kill();
  owner.join();
  const bool gone = mproc_test::eventually(
      [&] {
        while (::waitpid(-1, nullptr, WNOHANG) > 0) {
        }
        for (pid_t w : workers) {
          if (mproc_test::read_proc_stat(w).has_value()) return false;
        }
        return true;
      },
      2s);
  EXPECT_TRUE(gone) << "a worker outlived its pool's SIGKILLed owner";
}

// What a forked child says: it runs `attempts` in order, noting "no error|" for each that
// returned and describe(e) + "|" for each that threw mproc::error e, then `then`, and
// writes its notes back. The parent waits at most `limit` for it to end.
struct forked_child {
  pid_t pid = -1;
  std::string said;
  bool ended = false;
  int status = 0;
};
forked_child run_in_forked_child(const std::vector<std::function<void()>>& attempts,
                                 const std::function<std::string(const mproc::error&)>& describe,
                                 const std::function<void()>& then, std::chrono::seconds limit) {
  mproc_test::test_pipe out;
  forked_child c;
  c.pid = ::fork();
  if (c.pid < 0) return c;
  if (c.pid == 0) {
    std::string said;
    for (const auto& attempt : attempts) {
      try {
        attempt();
        said += "no error|";
      } catch (const mproc::error& e) {
        said += describe(e) + "|";
      }
    }
    then();
    out.write(said + "\n");
    ::_exit(0);
  }
  out.close_write();
  c.said = out.read_line().value_or("");
  c.ended = mproc_test::eventually([&] { return ::waitpid(c.pid, &c.status, WNOHANG) == c.pid; }, limit);
  if (!c.ended) {
    ::kill(c.pid, SIGKILL);
    ::waitpid(c.pid, &c.status, 0);
  }
  return c;
}

// A forked child waiting on a result of its parent's pool would wait for a result that
// can only reach the parent: every wait, timed or not, says so at once.
TEST(Pool, AForkedChildWaitingOnItsParentsResultIsToldSo) {
  mproc::pool pool(1);
  auto slow = pool.apply_async(sleep_ms, 3000);
  const forked_child child = run_in_forked_child(
      {[&] { (void)slow.get(); }, [&] { (void)slow.get(std::chrono::seconds(10)); },
       [&] { (void)slow.wait(std::chrono::seconds(10)); }, [&] { slow.wait(); }},
      [](const mproc::error& e) -> std::string {
        if (dynamic_cast<const mproc::timeout_error*>(&e) != nullptr) return "timed out";
        return std::string(e.what()).find("belongs to process") != std::string::npos ? "told" : e.what();
      },
      [] {}, 30s);
  ASSERT_GT(child.pid, 0);
  ASSERT_TRUE(child.ended);
  EXPECT_EQ(child.said, "told|told|told|told|");
  EXPECT_EQ(slow.get(), 3000);  // the parent's result is whole
}

// A pool belongs to the process that made it. A forked child's copy must neither work
// (its task ids would mix with the parent's in the shared channels, and no thread of the
// child reads results: Python's Pool hangs there) nor, destroyed, hang the child or touch
// the parent's workers: it throws a clear error, and its destruction is a no-op.
TEST(Pool, AForkedChildCannotUseItsParentsPoolAndLeavesItWhole) {
  auto pool = std::make_unique<mproc::pool>(2);
  std::set<int> workers;
  while (workers.size() < 2) {
    for (int pid : pool->map(my_pid, iota_vector(8), 1)) workers.insert(pid);
  }
  const forked_child child = run_in_forked_child(
      {[&] { (void)pool->apply(square, 3); }, [&] { pool->close(); }, [&] { pool->terminate(); }},
      [](const mproc::error& e) { return std::string(e.what()); },
      [&] { pool.reset(); },  // closes and joins a running pool, in the owner; nothing here
      10s);
  ASSERT_GT(child.pid, 0);
  ASSERT_TRUE(child.ended) << "destroying the copy of a pool hung the child";
  EXPECT_TRUE(WIFEXITED(child.status) && WEXITSTATUS(child.status) == 0) << child.status;
  const std::string& said = child.said;
  EXPECT_THAT(said, ::testing::HasSubstr("mproc::pool::apply: called in process " + std::to_string(child.pid) +
                                         ", but the pool belongs to process " + std::to_string(::getpid())));
  EXPECT_THAT(said, ::testing::HasSubstr("mproc::pool::close: called in process"));
  EXPECT_THAT(said, ::testing::HasSubstr("mproc::pool::terminate: called in process"));
  EXPECT_THAT(said, ::testing::Not(::testing::HasSubstr("no error")));
  // The parent's pool still serves, with the same workers (none was killed).
  EXPECT_EQ(pool->apply(square, 7), 49);
  std::set<int> after;
  for (int pid : pool->map(my_pid, iota_vector(64), 1)) after.insert(pid);
  for (int pid : after) EXPECT_EQ(workers.count(pid), 1U) << "worker " << pid << " was replaced";
}

TEST(Pool, NoZombiesAfterAPoolEnds) {
  for (int i = 0; i < 3; ++i) {
    mproc::pool p(2);
    EXPECT_EQ(p.apply(square, i), i * i);
  }
  EXPECT_TRUE(mproc_test::children_of_self().empty());
}

}  // namespace

namespace {

// What a worker says of itself and its parent.
std::tuple<std::string, bool, int, std::string> worker_identity(int) {
  const auto self = mproc::current_process();
  const auto parent = mproc::parent_process();
  return {self.name, self.daemon, parent ? static_cast<int>(parent->pid) : -1, parent ? parent->name : ""};
}

TEST(Pool, AWorkerNamesItselfAndItsParentIsThePoolsOwner) {
  mproc::pool p(2);
  std::set<std::string> names;
  for (const auto& [name, daemon, parent_pid, parent_name] : p.map(worker_identity, std::vector<int>(64), 1)) {
    names.insert(name);
    EXPECT_TRUE(daemon);
    EXPECT_EQ(parent_pid, static_cast<int>(::getpid()));
    EXPECT_EQ(parent_name, mproc::current_process().name);
  }
  for (const auto& name : names) EXPECT_TRUE(name == "pool-worker-1" || name == "pool-worker-2") << name;
  EXPECT_FALSE(names.empty());
}

}  // namespace
