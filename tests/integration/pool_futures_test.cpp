// mproc::wait and mproc::as_completed (concurrent.futures' wait and as_completed) over
// results of real pools: completion order across pools, a worker killed while waited on,
// timeouts, return_when, cancelled results. The order is driven by events the test sets
// as each result comes, never by sleeps.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <set>
#include <stdexcept>
#include <vector>

#include "mproc/pool.hpp"
#include "mproc/sync.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;

int hold(mproc::event go, int x) {
  go.wait();
  return x;
}
int at_once(int x) { return x; }
int die_when(mproc::event go, int) {
  go.wait();
  ::raise(SIGKILL);
  return 0;
}
int fail_with(int x) { throw std::invalid_argument("bad item " + std::to_string(x)); }

TEST(PoolFutures, AsCompletedYieldsInCompletionOrderAcrossPools) {
  mproc::pool first(2);
  mproc::pool second(1);
  mproc::event go_a;
  mproc::event go_b;
  std::vector<mproc::async_result<int>> results;
  results.push_back(first.apply_async(hold, go_a, 10));   // 0: last
  results.push_back(second.apply_async(hold, go_b, 20));  // 1: second
  results.push_back(first.apply_async(at_once, 30));      // 2: first
  std::vector<std::size_t> order;
  for (std::size_t i : mproc::as_completed(results)) {
    order.push_back(i);
    if (i == 2) go_b.set();
    if (i == 1) go_a.set();
  }
  EXPECT_EQ(order, (std::vector<std::size_t>{2, 1, 0}));
  EXPECT_EQ(results[0].get(), 10);
  EXPECT_EQ(results[1].get(), 20);
}

TEST(PoolFutures, AWorkerKilledWhileWaitedOnComesOutAsWorkerLostInItsTurn) {
  mproc::pool p(3);
  mproc::event go_a;
  mproc::event go_kill;
  std::vector<mproc::async_result<int>> results;
  results.push_back(p.apply_async(hold, go_a, 1));
  results.push_back(p.apply_async(die_when, go_kill, 0));
  results.push_back(p.apply_async(at_once, 3));
  std::vector<std::size_t> order;
  for (std::size_t i : mproc::as_completed(results)) {
    order.push_back(i);
    if (i == 2) go_kill.set();
    if (i == 1) {
      EXPECT_THROW(results[1].get(), mproc::worker_lost);
      go_a.set();
    }
  }
  EXPECT_EQ(order, (std::vector<std::size_t>{2, 1, 0}));
  EXPECT_EQ(results[0].get(), 1);
  EXPECT_EQ(p.apply(at_once, 5), 5);  // the worker was replaced
}

TEST(PoolFutures, AsCompletedPastItsTimeoutThrowsTimeoutError) {
  mproc::pool p(2);
  mproc::event go;
  std::vector<mproc::async_result<int>> results;
  results.push_back(p.apply_async(at_once, 1));
  results.push_back(p.apply_async(hold, go, 2));
  results[0].wait();
  std::vector<std::size_t> seen;
  EXPECT_THROW(
      {
        for (std::size_t i : mproc::as_completed(results, 100ms)) seen.push_back(i);
      },
      mproc::timeout_error);
  EXPECT_EQ(seen, (std::vector<std::size_t>{0}));
  go.set();
  EXPECT_EQ(results[1].get(), 2);
}

TEST(PoolFutures, WaitHonoursReturnWhen) {
  mproc::pool p(3);  // two held, one free
  mproc::event go;
  std::vector<mproc::async_result<int>> results;
  results.push_back(p.apply_async(hold, go, 0));
  results.push_back(p.apply_async(at_once, 1));
  auto first = mproc::wait(results, mproc::return_when::first_completed);
  EXPECT_EQ(first.done, (std::vector<std::size_t>{1}));
  EXPECT_EQ(first.not_done, (std::vector<std::size_t>{0}));

  auto timed = mproc::wait(results, mproc::return_when::all_completed, 50ms);
  EXPECT_EQ(timed.not_done, (std::vector<std::size_t>{0}));

  std::vector<mproc::async_result<int>> failing;
  failing.push_back(p.apply_async(hold, go, 0));
  failing.push_back(p.apply_async(fail_with, 7));
  auto failed = mproc::wait(failing, mproc::return_when::first_exception);
  EXPECT_EQ(failed.done, (std::vector<std::size_t>{1}));
  EXPECT_THROW(failing[1].get(), std::invalid_argument);

  go.set();
  auto all = mproc::wait(std::span(results));
  EXPECT_TRUE(all.not_done.empty());
  EXPECT_EQ(std::set<std::size_t>(all.done.begin(), all.done.end()), (std::set<std::size_t>{0, 1}));
  EXPECT_EQ(mproc::wait(failing).not_done.size(), 0u);
}

TEST(PoolFutures, ACancelledResultCountsAsDone) {
  mproc::pool p(1);
  mproc::event go;
  std::vector<mproc::async_result<int>> results;
  results.push_back(p.apply_async(hold, go, 0));
  ASSERT_TRUE(mproc_test::eventually([&] { return results[0].running(); }));
  results.push_back(p.apply_async(at_once, 1));
  ASSERT_TRUE(results[1].cancel());
  auto first = mproc::wait(results, mproc::return_when::first_completed);
  EXPECT_EQ(first.done, (std::vector<std::size_t>{1}));
  // Task 0 may finish only once the cancelled one has been yielded: were go set before
  // the loop, task 0 could be done before as_completed looked, and come first.
  std::vector<std::size_t> order;
  for (std::size_t i : mproc::as_completed(results)) {
    order.push_back(i);
    go.set();
  }
  EXPECT_EQ(order, (std::vector<std::size_t>{1, 0}));
}

TEST(PoolFutures, AsCompletedOverManyResultsYieldsEachOnce) {
  mproc::pool p(2);
  std::vector<mproc::async_result<int>> results;
  constexpr int n = 20000;
  for (int i = 0; i < n; ++i) results.push_back(p.apply_async(at_once, i));
  std::vector<int> seen(n, 0);
  for (std::size_t i : mproc::as_completed(results)) {
    ++seen[i];
    EXPECT_EQ(results[i].get(), static_cast<int>(i));
  }
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), n);
  std::vector<mproc::async_result<int>> none;
  EXPECT_TRUE(mproc::wait(none, mproc::return_when::first_completed).done.empty());
  for (std::size_t i : mproc::as_completed(none)) ADD_FAILURE() << i;
}

}  // namespace
