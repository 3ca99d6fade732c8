// imap and imap_unordered read their input lazily, a window of chunks at a time: an
// unbounded input works, memory stays flat over 10M items, leaving the loop early cancels
// what no worker started, close() queues the rest of a live imap, next(timeout), and a
// failed chunk's error comes when its item is read. Real worker processes throughout.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <ranges>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "mproc/pool.hpp"
#include "mproc/shared.hpp"
#include "mproc/sync.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;

std::int64_t square(std::int64_t x) { return x * x; }

// Counts its run; holds its worker at item `hold_at` until `go` is set.
int count_and_hold(mproc::event go, mproc::shared_array<int> runs, int hold_at, int i) {
  std::atomic_ref<int>(runs[static_cast<std::size_t>(i)]).fetch_add(1);
  if (i == hold_at) go.wait();
  return i;
}

int fail_on_three(int x) {
  if (x == 3) throw std::out_of_range("three");
  return x;
}

// This process's resident memory, from /proc/self/statm.
std::size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages = 0;
  std::size_t resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

#ifdef MPROC_TEST_RANGE_ADAPTORS
TEST(PoolImap, AnUnboundedInputWorksAndTakeStopsIt) {
  mproc::pool p(2);
  std::vector<std::int64_t> got;
  auto doubled = std::views::iota(std::int64_t{0}) | std::views::transform([](std::int64_t x) { return 2 * x; });
  for (std::int64_t r : p.imap(square, doubled) | std::views::take(1000)) got.push_back(r);
  ASSERT_EQ(got.size(), 1000u);
  for (std::size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], square(2 * static_cast<std::int64_t>(i)));
  std::set<std::int64_t> unordered;
  for (std::int64_t r : p.imap_unordered(square, std::views::iota(std::int64_t{0}), 7) | std::views::take(500)) {
    unordered.insert(r);
  }
  EXPECT_EQ(unordered.size(), 500u);
}
#endif

TEST(PoolImap, AnUnboundedInputWorksAndLeavingTheLoopStopsIt) {
  mproc::pool p(2);
  std::int64_t taken = 0;
  for (std::int64_t r : p.imap(square, mproc_test::generated(-1, [](long long x) { return std::int64_t{x}; }))) {
    ASSERT_EQ(r, square(taken));
    if (++taken == 1000) break;
  }
  EXPECT_EQ(taken, 1000);
}

TEST(PoolImap, TheInputIsReadAWindowAhead) {
  mproc::pool p(2);
  int read = 0;
  mproc_test::generated counted(100000, [&read](long long x) {
    ++read;
    return std::int64_t{x};
  });
  auto results = p.imap(square, counted);
  int taken = 0;
  for (std::int64_t r : results) {
    EXPECT_EQ(r, square(taken));
    if (++taken == 10) break;
  }
  // Two chunks of one item per worker ahead of what was read, not the whole input.
  EXPECT_LE(read, 10 + 4 + 1);
  EXPECT_GE(read, 10);
}

TEST(PoolImap, MemoryStaysFlatOverTenMillionItems) {
  mproc::pool p(2);
  constexpr std::int64_t n = 10'000'000;
  std::int64_t expected_sum = 0;
  for (std::int64_t x = 0; x < n; ++x) expected_sum += (x % 1000) * (x % 1000);
  mproc_test::generated input(n, [](long long x) { return std::int64_t{x % 1000}; });
  std::int64_t sum = 0;
  std::int64_t count = 0;
  std::size_t after_first_million = 0;
  for (std::int64_t r : p.imap(square, input, 1000)) {
    sum += r;
    if (++count == 1'000'000) after_first_million = resident_bytes();
  }
  const std::size_t at_end = resident_bytes();
  EXPECT_EQ(count, n);
  EXPECT_EQ(sum, expected_sum);
  // 10M results held at once would be 80 MB; a window of chunks is a few hundred KiB.
#if defined(__SANITIZE_ADDRESS__)
  // ASan keeps freed memory in its quarantine (256 MB by default), so resident memory
  // grows with what was allocated, not with what is alive: the plain build checks it.
  (void)after_first_million;
  (void)at_end;
  GTEST_SKIP() << "resident memory under ASan measures its quarantine";
#endif
  EXPECT_LT(at_end, after_first_million + 8 * 1024 * 1024)
      << "resident after 1M items: " << after_first_million << ", after 10M: " << at_end;
}

TEST(PoolImap, LeavingTheLoopEarlyCancelsWhatNoWorkerStarted) {
  mproc::pool p(1);  // a window of two chunks
  mproc::event go;
  mproc::shared_array<int> runs(1000);
  {
    auto results = p.imap(mproc::partial(count_and_hold, go, runs, 5),
                          mproc_test::generated(1000, [](long long x) { return static_cast<int>(x); }));
    for (int r : results) {
      if (r == 4) break;  // chunk 5 runs (held), chunk 6 is queued
    }
  }  // dropped: chunk 6 is cancelled
  go.set();
  p.close();
  p.join();
  for (std::size_t i = 0; i < 5; ++i) EXPECT_EQ(runs[i], 1) << i;
  EXPECT_LE(runs[5], 1);
  for (std::size_t i = 6; i < 1000; ++i) ASSERT_EQ(runs[i], 0) << "item " << i << " ran after the loop was left";
}

TEST(PoolImap, CloseQueuesTheRestOfALiveImapSoJoinEnds) {
  mproc::pool p(2);
  std::vector<std::int64_t> input(300);
  for (std::size_t i = 0; i < input.size(); ++i) input[i] = static_cast<std::int64_t>(i);
  auto results = p.imap(square, input);
  p.close();
  p.join();  // the workers ran every chunk before retiring
  std::vector<std::int64_t> got;
  for (std::int64_t r : results) got.push_back(r);
  ASSERT_EQ(got.size(), input.size());
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], square(input[i]));
}

TEST(PoolImap, NextTakesATimeoutAndSaysWhenTheInputEnds) {
  mproc::pool p(1);
  mproc::event go;
  mproc::shared_array<int> runs(2);
  auto results = p.imap(mproc::partial(count_and_hold, go, runs, 0), std::vector<int>{0, 1});
  EXPECT_THROW(results.next(30ms), mproc::timeout_error);
  go.set();
  EXPECT_EQ(results.next(), 0);
  EXPECT_EQ(results.next(5s), 1);
  EXPECT_EQ(results.next(), std::nullopt);
}

TEST(PoolImap, AFailedItemThrowsWhenReadAndIterationGoesOn) {
  mproc::pool p(2);
  auto results = p.imap(fail_on_three, std::vector<int>{0, 1, 2, 3, 4, 5});
  std::vector<int> got;
  int errors = 0;
  for (auto it = results.begin(); it != results.end(); ++it) {
    try {
      got.push_back(*it);
    } catch (const std::out_of_range& e) {
      EXPECT_STREQ(e.what(), "three");
      ++errors;
    }
  }
  EXPECT_EQ(errors, 1);
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 4, 5}));
}

}  // namespace
