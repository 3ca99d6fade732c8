// pool::map and starmap fed a window of chunks at a time (detail::map_feed): order, close()
// and join() while a feed still submits, failures that stop the feed, a worker killed
// mid-map, terminate() from another thread, and map_async's ownership of its input.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

#include "mproc/pool.hpp"
#include "mproc/shared.hpp"

namespace {

using namespace std::chrono_literals;

std::int64_t square(int x) { return std::int64_t{x} * x; }

std::vector<int> iota_vector(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

std::vector<std::int64_t> squares_of(const std::vector<int>& v) {
  std::vector<std::int64_t> out;
  out.reserve(v.size());
  for (int x : v) out.push_back(square(x));
  return out;
}

// A file the tasks append one byte to each time one runs: counts runs across workers.
class run_log {
 public:
  run_log() : path_(::testing::TempDir() + "mproc-map-runs-" + std::to_string(::getpid())) { ::unlink(path_.c_str()); }
  ~run_log() { ::unlink(path_.c_str()); }
  const std::string& path() const { return path_; }
  long runs() const {
    struct stat st {};
    return ::stat(path_.c_str(), &st) == 0 ? static_cast<long>(st.st_size) : 0;
  }

 private:
  std::string path_;
};

void log_run(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot open the run log");
  const char byte = 'x';
  const bool written = ::write(fd, &byte, 1) == 1;
  ::close(fd);
  if (!written) throw std::runtime_error("cannot write the run log");
}

TEST(PoolMap, ManyMoreChunksThanTheWindowKeepInputOrder) {
  mproc::pool p(2);
  const auto input = iota_vector(100'000);
  EXPECT_EQ(p.map(square, input, 10), squares_of(input));  // 10,000 chunks
  std::vector<std::string> words;
  for (int i = 0; i < 5'000; ++i)
    words.push_back(std::string(static_cast<std::size_t>(i % 50), 'a') + std::to_string(i));
  const auto sizes = p.map([](const std::string& s) { return s.size(); }, words, 3);
  ASSERT_EQ(sizes.size(), words.size());
  for (std::size_t i = 0; i < words.size(); ++i) ASSERT_EQ(sizes[i], words[i].size()) << "item " << i;
  std::vector<std::tuple<int, int>> pairs;
  for (int i = 0; i < 20'000; ++i) pairs.emplace_back(i, 3);
  const auto products = p.starmap([](int a, int b) { return a * b; }, pairs, 7);
  ASSERT_EQ(products.size(), pairs.size());
  for (int i = 0; i < 20'000; ++i) ASSERT_EQ(products[static_cast<std::size_t>(i)], 3 * i);
}

TEST(PoolMap, MapAsyncThenCloseAndJoinFinishesEveryChunk) {
  mproc::pool p(2);
  const auto input = iota_vector(50'000);
  auto result = p.map_async(square, input, 5);  // 10,000 chunks: most are submitted after close()
  p.close();
  EXPECT_THROW(p.apply_async(square, 1), mproc::closed_error);  // a feed admits only its own chunks
  p.join();
  ASSERT_TRUE(result.ready());
  EXPECT_EQ(result.get(), squares_of(input));
}

TEST(PoolMap, MapAsyncKeepsACopyOfItsInput) {
  mproc::pool p(2);
  auto result = [&] {
    std::vector<int> input = iota_vector(20'000);
    auto r = p.map_async(square, input, 4);
    std::fill(input.begin(), input.end(), -1);  // then freed: the map must not read it
    return r;
  }();
  EXPECT_EQ(result.get(), squares_of(iota_vector(20'000)));
}

TEST(PoolMap, AFailedChunkStopsTheFeed) {
  mproc::pool p(2);
  run_log log;
  std::vector<std::tuple<std::string, int>> items;
  for (int i = 0; i < 10'000; ++i) items.emplace_back(log.path(), i);
  try {
    p.starmap(
        [](const std::string& path, int x) {
          log_run(path);
          if (x == 0) throw std::out_of_range("item zero");
          std::this_thread::sleep_for(20ms);  // item 0's failure is dispatched while these run
          return x;
        },
        items, 1);
    FAIL() << "the map did not fail";
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "item zero");
  }
  p.close();
  p.join();  // the chunks still in flight have run
  // A window is 8 chunks (4 per worker): the chunks submitted before the failure was seen.
  EXPECT_GE(log.runs(), 1);
  EXPECT_LE(log.runs(), 64) << "the map went on submitting after its first failure";
}

TEST(PoolMap, AWorkerKilledMidMapFailsTheMapAndThePoolGoesOn) {
  mproc::pool p(2);
  const auto input = iota_vector(20'000);
  auto result = p.map_async(
      [](int x) {
        if (x == 10'000) ::kill(::getpid(), SIGKILL);
        return square(x);
      },
      input, 10);
  try {
    (void)result.get();
    FAIL() << "the map did not fail";
  } catch (const mproc::worker_lost& e) {
    EXPECT_EQ(e.exitcode(), -SIGKILL);
  }
  EXPECT_EQ(p.map(square, input, 10), squares_of(input));  // a replacement worker serves
  p.close();
  p.join();  // the failed feed ended: join does not wait for it
}

TEST(PoolMap, TerminateFromAnotherThreadFailsARunningMap) {
  mproc::pool p(2);
  const auto input = iota_vector(100'000);
  std::thread terminator([&] {
    std::this_thread::sleep_for(50ms);
    p.terminate();
  });
  EXPECT_THROW((void)p.map(
                   [](int x) {
                     std::this_thread::sleep_for(1ms);
                     return x;
                   },
                   input, 1),
               mproc::error);
  terminator.join();
  p.join();
}

}  // namespace

namespace {

void mark(mproc::shared_array<int> marks, int i) {
  std::atomic_ref<int>(marks[static_cast<std::size_t>(i)]).fetch_add(1);
}

// Python's map of a function returning None: mproc's map of a void function returns once
// every call ran.
TEST(PoolMap, AMapOfAVoidFunctionReturnsOnceEveryCallRan) {
  mproc::pool p(2);
  mproc::shared_array<int> marks(5000);
  static_assert(std::is_void_v<decltype(p.map(mproc::partial(mark, marks), iota_vector(5000)))>);
  p.map(mproc::partial(mark, marks), iota_vector(5000), 7);
  for (std::size_t i = 0; i < 5000; ++i) ASSERT_EQ(marks[i], 1) << i;
  std::vector<std::tuple<mproc::shared_array<int>, int>> pairs;
  for (int i = 0; i < 100; ++i) pairs.emplace_back(marks, i);
  p.starmap(mark, pairs);
  for (std::size_t i = 0; i < 100; ++i) ASSERT_EQ(marks[i], 2) << i;
}

}  // namespace
