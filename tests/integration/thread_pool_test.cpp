// mproc::thread_pool: the pool's API on threads. The same code runs on both kinds of pool;
// any callable works; cancel, wait, as_completed, lazy imap and terminate behave as with
// processes.
#include "mproc/thread_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "mproc/pool.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;

int square(int x) { return x * x; }
int add(int a, int b) { return a + b; }

// One program, written once, for either kind of pool.
template <class Pool>
std::vector<int> everything(Pool& p) {
  std::vector<int> out;
  out.push_back(p.apply(square, 3));
  out.push_back(p.apply_async(add, 4, 5).get());
  std::vector<int> items{1, 2, 3, 4, 5, 6, 7};
  for (int r : p.map(square, items, 2)) out.push_back(r);
  for (int r : p.map_async(square, items).get()) out.push_back(r);
  std::vector<std::tuple<int, int>> pairs{{1, 2}, {3, 4}};
  for (int r : p.starmap(add, pairs)) out.push_back(r);
  for (int r : p.imap(square, items, 3)) out.push_back(r);
  std::multiset<int> unordered;
  for (int r : p.imap_unordered(square, items)) unordered.insert(r);
  out.insert(out.end(), unordered.begin(), unordered.end());
  out.push_back(p.apply(mproc::partial(add, 100), 1));
  return out;
}

TEST(ThreadPool, TheSameCodeGivesTheSameResultsOnThreadsAndProcesses) {
  mproc::pool processes(2);
  mproc::thread_pool threads(2);
  const auto on_processes = everything(processes);
  const auto on_threads = everything(threads);
  EXPECT_EQ(on_threads, on_processes);
  EXPECT_EQ(on_threads.size(), 2u + 7u + 7u + 2u + 7u + 7u + 1u);
}

TEST(ThreadPool, AnyCallableRunsWithItsStateAndMoveOnlyArguments) {
  mproc::thread_pool p(2);
  std::string suffix = " and more";  // state only a thread pool's task can capture
  EXPECT_EQ(p.apply([suffix](std::string s) { return s + suffix; }, std::string("this")), "this and more");
  std::function<std::string(std::string)> shout = [](std::string s) { return s + "!"; };
  EXPECT_EQ(p.apply(shout, std::string("hi")), "hi!");
  auto owned = std::make_unique<int>(7);
  EXPECT_EQ(p.apply([](std::unique_ptr<int> v) { return *v * 2; }, std::move(owned)), 14);
  std::atomic<int> calls{0};
  p.map([&calls](int) { ++calls; }, std::vector<int>(100));  // a void function: returns once all ran
  EXPECT_EQ(calls.load(), 100);
}

TEST(ThreadPool, ExceptionsKeepTheirTypeAndCallbacksRunOnTheCallbackThread) {
  mproc::thread_pool p(2);
  EXPECT_THROW(p.apply([] { throw std::invalid_argument("no"); }), std::invalid_argument);
  EXPECT_THROW(p.map([](int x) { return x == 3 ? throw std::out_of_range("three") : x; }, std::vector<int>{1, 2, 3}),
               std::out_of_range);
  const auto caller = std::this_thread::get_id();
  std::promise<std::thread::id> where;
  p.apply_async(square, 2).then([&](const int&) { where.set_value(std::this_thread::get_id()); });
  EXPECT_NE(where.get_future().get(), caller);
  mproc::pool_options timed;
  timed.task_timeout = 1s;
  EXPECT_THROW(mproc::thread_pool{timed}, mproc::error);
}

TEST(ThreadPool, CancelIsExactAndCancelPendingFailsTheQueue) {
  mproc::thread_pool p(1);
  std::promise<void> go;
  auto gate = go.get_future().share();
  auto blocker = p.apply_async([gate] {
    gate.wait();
    return 1;
  });
  ASSERT_TRUE(mproc_test::eventually([&] { return blocker.running(); }));
  std::atomic<int> ran{0};
  auto a = p.apply_async([&ran] { return ++ran; });
  auto b = p.apply_async([&ran] { return ++ran; });
  EXPECT_TRUE(a.cancel());
  EXPECT_TRUE(a.cancelled());
  EXPECT_THROW(a.get(), mproc::cancelled_error);
  std::vector<mproc::async_result<int>> more;
  for (int i = 0; i < 50; ++i) more.push_back(p.apply_async([&ran] { return ++ran; }));
  p.cancel_pending();
  for (auto& r : more) EXPECT_TRUE(r.cancelled());
  EXPECT_TRUE(b.cancelled());
  go.set_value();
  EXPECT_EQ(blocker.get(), 1);
  p.close();
  p.join();
  EXPECT_EQ(ran.load(), 0);
}

TEST(ThreadPool, ACancelRacingAStartHasExactlyOneOutcome) {
  mproc::thread_pool p(2);
  constexpr int n = 20000;
  std::vector<std::atomic<int>> runs(n);
  std::vector<mproc::async_result<int>> results;
  results.reserve(n);
  for (int i = 0; i < n; ++i) {
    results.push_back(p.apply_async(
        [&runs](int k) {
          runs[static_cast<std::size_t>(k)].fetch_add(1);
          return k;
        },
        i));
    if (i >= 3) results[static_cast<std::size_t>(i - 3)].cancel();
  }
  p.close();
  p.join();
  int cancelled = 0;
  for (int i = 0; i < n; ++i) {
    auto& r = results[static_cast<std::size_t>(i)];
    if (r.cancelled()) {
      ++cancelled;
      EXPECT_EQ(runs[static_cast<std::size_t>(i)].load(), 0) << i;
    } else {
      EXPECT_EQ(r.get(), i);
      EXPECT_EQ(runs[static_cast<std::size_t>(i)].load(), 1) << i;
    }
  }
  EXPECT_GT(cancelled, 0);
}

TEST(ThreadPool, AsCompletedAndWaitMixThreadsAndProcesses) {
  mproc::pool processes(1);
  mproc::thread_pool threads(1);
  std::promise<void> go;
  auto gate = go.get_future().share();
  std::vector<mproc::async_result<int>> results;
  results.push_back(threads.apply_async([gate] {
    gate.wait();
    return 1;
  }));
  results.push_back(processes.apply_async(square, 3));
  std::vector<std::size_t> order;
  for (std::size_t i : mproc::as_completed(results)) {
    order.push_back(i);
    if (i == 1) go.set_value();
  }
  EXPECT_EQ(order, (std::vector<std::size_t>{1, 0}));
  EXPECT_TRUE(mproc::wait(results).not_done.empty());
}

TEST(ThreadPool, ImapIsLazyAndLeavingItEarlyCancelsTheRest) {
  mproc::thread_pool p(2);
  std::atomic<long long> read{0};
  std::atomic<int> ran{0};
  {
    mproc_test::generated input(-1, [&read](long long x) {
      ++read;
      return static_cast<int>(x);
    });
    int taken = 0;
    for (int r : p.imap(
             [&ran](int x) {
               ++ran;
               return x;
             },
             input)) {
      EXPECT_EQ(r, taken);
      if (++taken == 100) break;
    }
  }
  p.close();
  p.join();
  EXPECT_LE(read.load(), 100 + 4 + 1);  // a window of two chunks per thread
  EXPECT_LE(ran.load(), read.load());
}

TEST(ThreadPool, AThrowingInitializerLeavesNoTaskWaiting) {
  mproc::pool_options options;
  options.processes = 2;
  options.initializer = [] { throw std::runtime_error("no setup"); };
  mproc::thread_pool p(options);
  EXPECT_EQ(p.apply(square, 6), 36);
  EXPECT_EQ(p.map(square, std::vector<int>{1, 2, 3}), (std::vector<int>{1, 4, 9}));
}

TEST(ThreadPool, TerminateFailsTheQueueAndLetsRunningTasksFinish) {
  mproc::thread_pool p(1);
  std::promise<void> go;
  auto gate = go.get_future().share();
  auto running = p.apply_async([gate] {
    gate.wait();
    return 5;
  });
  ASSERT_TRUE(mproc_test::eventually([&] { return running.running(); }));
  auto queued = p.apply_async(square, 2);
  p.terminate();
  EXPECT_THROW(queued.get(), mproc::closed_error);
  EXPECT_THROW(p.apply(square, 1), mproc::closed_error);
  go.set_value();
  p.join();
  EXPECT_EQ(running.get(), 5);
}

}  // namespace
