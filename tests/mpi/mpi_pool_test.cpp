// mproc::mpi::pool against mproc::pool's behaviour, run under mpirun (tests/mpi/CMakeLists.txt
// runs it with 2 ranks over shared memory and over TCP, with 1 rank, and without mpirun).
// Every rank constructs the pool; rank 0 runs the tests, the others serve tasks.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "mproc/mpi.hpp"

namespace {

mproc::mpi::pool* the_pool = nullptr;
constexpr auto timeout = std::chrono::milliseconds(2500);

int square(int x) { return x * x; }
MPROC_REMOTE(square);

int not_registered(int x) { return x + 1; }

int mul(int a, int b) { return a * b; }
MPROC_REMOTE(mul);
// The tutorial's calculate(func, args): the function travels as an argument, by name.
int calculate(int (*f)(int, int), std::tuple<int, int> args) { return f(std::get<0>(args), std::get<1>(args)); }
MPROC_REMOTE(calculate);

// The rank whose pool runs the task: mpirun tells every rank (and the workers it forked).
int rank_of_worker(int) {
  const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
  return rank != nullptr ? std::atoi(rank) : 0;
}
MPROC_REMOTE(rank_of_worker);

int rank_after_a_while(int x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return rank_of_worker(x);
}
MPROC_REMOTE(rank_after_a_while);

int expected_ranks() {
  const char* n = std::getenv("MPROC_TEST_RANKS");
  return n != nullptr ? std::atoi(n) : 1;
}

class custom_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

TEST(MpiPool, HasTheRanksMpirunStarted) {
  EXPECT_EQ(the_pool->ranks(), expected_ranks());
  EXPECT_EQ(the_pool->size(), 2U * static_cast<unsigned>(expected_ranks()));
}

TEST(MpiPool, AppliesARegisteredFunctionAndALambda) {
  EXPECT_EQ(the_pool->apply(square, 7), 49);
  EXPECT_EQ(the_pool->apply([](int a, const std::string& b) { return b + std::to_string(a); }, 5, std::string("x")),
            "x5");
}

TEST(MpiPool, AnUnregisteredFunctionPointerIsAClearError) {
  try {
    the_pool->apply(not_registered, 1);
    FAIL() << "no error";
  } catch (const mproc::error& e) {
    EXPECT_NE(std::string(e.what()).find("MPROC_REMOTE"), std::string::npos) << e.what();
  }
}

TEST(MpiPool, MapsInOrderOverEveryRank) {
  std::vector<int> items(20000);
  std::iota(items.begin(), items.end(), -100);
  const auto squares = the_pool->map(square, items);
  ASSERT_EQ(squares.size(), items.size());
  for (std::size_t i = 0; i < items.size(); ++i) ASSERT_EQ(squares[i], items[i] * items[i]) << i;

  const auto ranks = the_pool->map(rank_after_a_while, std::vector<int>(400), 1);
  const std::set<int> seen(ranks.begin(), ranks.end());
  EXPECT_EQ(static_cast<int>(seen.size()), the_pool->ranks());
}

TEST(MpiPool, AFunctionTravelsAsAnArgumentToEveryRank) {
  std::vector<std::tuple<int (*)(int, int), std::tuple<int, int>>> jobs;
  std::vector<int> expected;
  for (int i = 0; i < 200; ++i) {
    jobs.emplace_back(mul, std::tuple(i, 3));
    expected.push_back(3 * i);
  }
  EXPECT_EQ(the_pool->starmap(calculate, jobs, 1), expected);
}

TEST(MpiPool, StarmapImapAndImapUnordered) {
  const std::vector<std::tuple<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
  EXPECT_EQ(the_pool->starmap([](int a, int b) { return a * b; }, pairs), (std::vector<int>{2, 12, 30}));

  std::vector<int> in(500);
  std::iota(in.begin(), in.end(), 0);
  std::vector<int> ordered;
  for (int v : the_pool->imap(square, in, 7)) ordered.push_back(v);
  std::vector<int> expected;
  for (int v : in) expected.push_back(v * v);
  EXPECT_EQ(ordered, expected);

  std::vector<int> unordered;
  for (int v : the_pool->imap_unordered(square, in, 3)) unordered.push_back(v);
  std::sort(unordered.begin(), unordered.end());
  EXPECT_EQ(unordered, expected);
}

TEST(MpiPool, ExceptionsKeepTheirType) {
  std::vector<mproc::async_result<int>> results;
  for (int i = 0; i < 40; ++i)
    results.push_back(the_pool->apply_async([](int) -> int { throw std::out_of_range("index 9 of 3"); }, i));
  for (auto& r : results) EXPECT_THROW(r.get(timeout), std::out_of_range);
  mproc::register_exception<custom_error>();
  try {
    the_pool->apply([](int) -> int { throw custom_error("custom"); }, 1);
    FAIL() << "no error";
  } catch (const custom_error& e) {
    EXPECT_STREQ(e.what(), "custom");
  }
}

TEST(MpiPool, CallbacksRunOnceEach) {
  std::atomic<int> sum{0};
  std::atomic<int> calls{0};
  std::vector<mproc::async_result<int>> results;
  for (int i = 1; i <= 200; ++i)
    results.push_back(the_pool->apply_async(square, i).then([&](const int& v) {
      sum += v;
      ++calls;
    }));
  for (auto& r : results) r.get(timeout);
  // A callback runs on the result thread after its result is in: wait for the last one.
  for (int i = 0; i < 2000 && calls.load() < 200; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(calls.load(), 200);
  EXPECT_EQ(sum.load(), 200 * 201 * 401 / 6);
}

TEST(MpiPool, TenThousandTasks) {
  std::vector<mproc::async_result<int>> results;
  for (int i = 0; i < 10000; ++i) results.push_back(the_pool->apply_async(square, i % 1000));
  long long total = 0;
  for (auto& r : results) total += r.get(std::chrono::seconds(30));
  EXPECT_EQ(total, 10LL * (999LL * 1000 * 1999 / 6));
}

TEST(MpiPool, AsCompletedYieldsEachOnce) {
  std::vector<mproc::async_result<int>> results;
  for (int i = 0; i < 300; ++i) results.push_back(the_pool->apply_async(square, i));
  std::vector<int> seen(results.size(), 0);
  for (std::size_t i : mproc::as_completed(results, std::chrono::seconds(20))) {
    ++seen[i];
    EXPECT_EQ(results[i].get(), static_cast<int>(i * i));
  }
  EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
}

TEST(MpiPool, ACrashingTaskIsWorkerLostAndTheRunGoesOn) {
  std::vector<mproc::async_result<int>> results;
  for (int i = 0; i < 8; ++i)
    results.push_back(the_pool->apply_async(
        [](int crash) -> int {
          if (crash % 2 == 0) ::raise(SIGSEGV);
          ::raise(SIGKILL);
          return 0;
        },
        i));
  for (auto& r : results) EXPECT_THROW(r.get(std::chrono::seconds(20)), mproc::worker_lost);
  EXPECT_EQ(the_pool->apply(square, 12), 144);
}

TEST(MpiPool, TaskTimeoutKillsTheTask) {
  // The pool runs with task_timeout = 3 s (main): a task of a minute fails with timeout_error.
  std::vector<mproc::async_result<int>> results;
  for (int i = 0; i < 2 * the_pool->ranks(); ++i)
    results.push_back(the_pool->apply_async(
        [](int) {
          std::this_thread::sleep_for(std::chrono::minutes(1));
          return 0;
        },
        i));
  for (auto& r : results) EXPECT_THROW(r.get(std::chrono::seconds(30)), mproc::timeout_error);
  EXPECT_EQ(the_pool->apply(square, 3), 9);
}

TEST(MpiPool, CancelsATaskThatWaitsOnTheRoot) {
  // Fill every window (16 per worker plus 16 on each rank) with slow tasks; the last ones
  // wait on the root and can be cancelled.
  std::vector<mproc::async_result<int>> results;
  const int windows = the_pool->ranks() * 16 + static_cast<int>(the_pool->size()) * 16;
  for (int i = 0; i < windows + 40; ++i) results.push_back(the_pool->apply_async(rank_after_a_while, i));
  auto& last = results.back();
  ASSERT_TRUE(last.cancel());
  EXPECT_TRUE(last.cancelled());
  EXPECT_THROW(last.get(timeout), mproc::cancelled_error);
  for (std::size_t i = 0; i + 1 < results.size(); ++i) {
    try {
      results[i].get(std::chrono::seconds(20));
    } catch (const mproc::cancelled_error&) {
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  mproc::mpi::pool_options options;
  options.processes_per_rank = 2;
  options.task_timeout = std::chrono::seconds(3);
  mproc::mpi::pool pool(argc, argv, options);
  if (!pool) return 0;  // another rank: it served the root's tasks
  the_pool = &pool;
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
