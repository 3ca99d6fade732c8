// Cancellation: async_result::cancel, cancelled, running and pool::cancel_pending, with
// real workers. A task is cancelled only if no worker started it, and then never runs;
// a cancel that races a worker's start has exactly one outcome; workers killed meanwhile
// change nothing of that. Runs are counted in shared memory by the tasks themselves.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <random>
#include <thread>
#include <vector>

#include "mproc/pool.hpp"
#include "mproc/shared.hpp"
#include "mproc/sync.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;

// Counts its run in `runs[i]`, then returns i.
int count_run(mproc::shared_array<int> runs, int i) {
  std::atomic_ref<int>(runs[static_cast<std::size_t>(i)]).fetch_add(1);
  return i;
}

// Holds its worker until `go` is set.
int hold(mproc::event go, int x) {
  go.wait();
  return x;
}

int worker_pid(int) { return static_cast<int>(::getpid()); }

TEST(PoolCancel, AQueuedTaskCancelledNeverRunsAndFailsWithCancelledError) {
  mproc::pool p(1);
  mproc::event go;
  mproc::shared_array<int> runs(3);
  auto blocker = p.apply_async(hold, go, 7);
  ASSERT_TRUE(mproc_test::eventually([&] { return blocker.running(); }));
  auto a = p.apply_async(count_run, runs, 0);
  auto b = p.apply_async(count_run, runs, 1);
  auto c = p.apply_async(count_run, runs, 2);
  int error_callbacks = 0;
  b.then([](const int&) { ADD_FAILURE() << "a cancelled task has no value"; },
         [&](std::exception_ptr e) {
           try {
             std::rethrow_exception(e);
           } catch (const mproc::cancelled_error&) {
             ++error_callbacks;
           } catch (...) {
           }
         });
  EXPECT_FALSE(b.running());
  EXPECT_TRUE(b.cancel());
  EXPECT_TRUE(b.ready());
  EXPECT_TRUE(b.cancelled());
  EXPECT_FALSE(b.successful());
  EXPECT_THROW(b.get(), mproc::cancelled_error);
  EXPECT_FALSE(b.cancel());  // once is all
  go.set();
  EXPECT_EQ(blocker.get(), 7);
  EXPECT_EQ(a.get(), 0);
  EXPECT_EQ(c.get(), 2);
  p.close();
  p.join();  // after every callback
  EXPECT_EQ(error_callbacks, 1);
  EXPECT_EQ(runs[0], 1);
  EXPECT_EQ(runs[1], 0);
  EXPECT_EQ(runs[2], 1);
  EXPECT_FALSE(a.cancelled());
}

// Every word of the board has served a settled task before (40k tasks, 16384 words): a
// task settles its word free, so a queued task can still be cancelled on its own.
TEST(PoolCancel, AQueuedTaskIsCancellableAfterTensOfThousandsOfTasks) {
  mproc::pool p(1);
  std::vector<mproc::async_result<int>> earlier;
  earlier.reserve(40'000);
  for (int i = 0; i < 40'000; ++i) earlier.push_back(p.apply_async(worker_pid, i));
  for (auto& r : earlier) (void)r.get();
  mproc::event go;
  mproc::shared_array<int> runs(1);
  auto blocker = p.apply_async(hold, go, 7);
  ASSERT_TRUE(mproc_test::eventually([&] { return blocker.running(); }));
  auto queued = p.apply_async(count_run, runs, 0);
  EXPECT_TRUE(queued.cancel());
  go.set();
  EXPECT_EQ(blocker.get(), 7);
  p.close();
  p.join();
  EXPECT_TRUE(queued.cancelled());
  EXPECT_EQ(runs[0], 0);
}

TEST(PoolCancel, ARunningOrFinishedTaskIsNotCancelled) {
  mproc::pool p(1);
  mproc::event go;
  auto running = p.apply_async(hold, go, 1);
  ASSERT_TRUE(mproc_test::eventually([&] { return running.running(); }));
  EXPECT_FALSE(running.cancel());
  EXPECT_FALSE(running.cancelled());
  go.set();
  EXPECT_EQ(running.get(), 1);
  EXPECT_FALSE(running.running());
  EXPECT_FALSE(running.cancel());
  EXPECT_FALSE(running.cancelled());
}

TEST(PoolCancel, CancelPendingFailsEveryQueuedTaskAndRunningOnesFinish) {
  mproc::pool p(2);
  mproc::event go;
  mproc::shared_array<int> runs(200);
  std::vector<mproc::async_result<int>> blockers;
  for (int k = 0; k < 2; ++k) blockers.push_back(p.apply_async(hold, go, k));
  ASSERT_TRUE(mproc_test::eventually([&] { return blockers[0].running() && blockers[1].running(); }));
  std::vector<mproc::async_result<int>> queued;
  for (int i = 0; i < 200; ++i) queued.push_back(p.apply_async(count_run, runs, i));
  auto map = p.map_async(worker_pid, std::vector<int>(1000));
  p.cancel_pending();
  for (auto& r : queued) {
    EXPECT_TRUE(r.ready());
    EXPECT_TRUE(r.cancelled());
  }
  EXPECT_TRUE(map.cancelled());
  EXPECT_THROW(map.get(), mproc::cancelled_error);
  go.set();
  EXPECT_EQ(blockers[0].get(), 0);
  EXPECT_EQ(blockers[1].get(), 1);
  EXPECT_EQ(p.apply(count_run, runs, 5), 5);  // the pool goes on
  p.close();
  p.join();
  int total = 0;
  for (std::size_t i = 0; i < 200; ++i) total += runs[i];
  EXPECT_EQ(total, 1);
}

TEST(PoolCancel, CancelPendingAfterCloseStillLetsJoinEnd) {
  mproc::pool p(1);
  mproc::event go;
  auto blocker = p.apply_async(hold, go, 1);
  ASSERT_TRUE(mproc_test::eventually([&] { return blocker.running(); }));
  std::vector<mproc::async_result<int>> queued;
  mproc::shared_array<int> runs(50);
  for (int i = 0; i < 50; ++i) queued.push_back(p.apply_async(count_run, runs, i));
  p.close();
  p.cancel_pending();  // the close's sentinels stay queued
  go.set();
  p.join();
  EXPECT_EQ(blocker.get(), 1);
  for (auto& r : queued) EXPECT_TRUE(r.cancelled() || r.successful());
}

// Cancels race the workers' starts: every task either ran once and succeeded, or was
// cancelled and never ran.
TEST(PoolCancel, ACancelRacingAStartHasExactlyOneOutcome) {
  mproc::pool p(2);
  constexpr int n = 20000;
  mproc::shared_array<int> runs(n);
  std::vector<mproc::async_result<int>> results;
  results.reserve(n);
  std::mt19937 random(12345);
  int cancelled = 0;
  for (int i = 0; i < n; ++i) {
    results.push_back(p.apply_async(count_run, runs, i));
    // Cancel a recent task: some are queued, some are being taken right now.
    const auto back = static_cast<std::size_t>(random() % 8);
    if (results.size() > back && results[results.size() - 1 - back].cancel()) ++cancelled;
  }
  int ran = 0;
  for (int i = 0; i < n; ++i) {
    auto& r = results[static_cast<std::size_t>(i)];
    r.wait();
    if (r.cancelled()) {
      EXPECT_EQ(runs[static_cast<std::size_t>(i)], 0) << "task " << i << " was cancelled and ran";
    } else {
      ASSERT_EQ(r.get(), i);
      EXPECT_EQ(runs[static_cast<std::size_t>(i)], 1) << "task " << i;
      ++ran;
    }
  }
  EXPECT_EQ(ran + cancelled, n);
  EXPECT_GT(cancelled, 0);
  p.close();
  p.join();
  for (int i = 0; i < n; ++i) {  // nothing ran late
    EXPECT_EQ(runs[static_cast<std::size_t>(i)], results[static_cast<std::size_t>(i)].cancelled() ? 0 : 1);
  }
}

// Workers SIGKILLed while cancels race their starts (the window between a worker's start
// of a task and its take's commit among them): a cancelled task still never ran, a task
// that succeeded ran, and one lost with its worker ran at most once.
TEST(PoolCancel, WorkersKilledWhileCancelsRaceKeepEveryOutcomeTrue) {
  mproc::pool p(2);
  constexpr int n = 4000;
  mproc::shared_array<int> runs(n);
  std::atomic<bool> stop{false};
  std::thread killer([&] {
    std::mt19937 random(777);
    while (!stop.load()) {
      try {
        const int pid = p.apply(worker_pid, 0);
        ::kill(pid, SIGKILL);
      } catch (const mproc::error&) {
      }
      std::this_thread::sleep_for(std::chrono::microseconds(random() % 3000));
    }
  });
  std::vector<mproc::async_result<int>> results;
  results.reserve(n);
  std::mt19937 random(4242);
  for (int i = 0; i < n; ++i) {
    results.push_back(p.apply_async(count_run, runs, i));
    const auto back = static_cast<std::size_t>(random() % 4);
    if (results.size() > back) results[results.size() - 1 - back].cancel();
  }
  int cancelled = 0;
  int lost = 0;
  for (int i = 0; i < n; ++i) {
    auto& r = results[static_cast<std::size_t>(i)];
    const int count = runs[static_cast<std::size_t>(i)];
    try {
      EXPECT_EQ(r.get(), i);
      EXPECT_EQ(runs[static_cast<std::size_t>(i)], 1) << "task " << i;
    } catch (const mproc::cancelled_error&) {
      ++cancelled;
      EXPECT_EQ(count, 0) << "task " << i << " was cancelled and ran";
    } catch (const mproc::worker_lost&) {
      ++lost;
      EXPECT_LE(runs[static_cast<std::size_t>(i)], 1) << "task " << i;
    }
  }
  stop = true;
  killer.join();
  p.close();
  p.join();
  for (int i = 0; i < n; ++i) {
    if (results[static_cast<std::size_t>(i)].cancelled()) {
      EXPECT_EQ(runs[static_cast<std::size_t>(i)], 0) << i;
    }
  }
  EXPECT_GT(cancelled, 0);
}

}  // namespace
