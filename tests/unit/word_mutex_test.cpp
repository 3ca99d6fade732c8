// word_mutex: the mutex of one futex word under async_state's rarely taken lock.
#include "mproc/detail/wait/word_mutex.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

namespace {

using mproc::detail::word_mutex;

static_assert(sizeof(word_mutex) == 4);

// Four threads hammer one plain counter: each finds itself alone inside, and no increment
// is lost, through the sleeping path too (a holder that yields inside makes the others
// sleep on the word).
TEST(WordMutex, ThreadsExcludeEachOtherAndLoseNoIncrement) {
  word_mutex m;
  long counter = 0;
  std::atomic<int> inside{0};
  std::atomic<bool> overlapped{false};
  constexpr int threads = 4;
  constexpr int rounds = 20000;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      for (int i = 0; i < rounds; ++i) {
        std::lock_guard guard(m);
        if (inside.fetch_add(1) != 0) overlapped.store(true);
        ++counter;
        if (i % 64 == 0) std::this_thread::yield();
        inside.fetch_sub(1);
      }
    });
  }
  for (std::thread& w : workers) w.join();
  EXPECT_FALSE(overlapped.load()) << "two threads held the mutex at once";
  EXPECT_EQ(counter, long{threads} * rounds);
}

// A thread that comes while another holds the mutex gets it only after the unlock.
TEST(WordMutex, ALockerWaitsForTheHolder) {
  word_mutex m;
  std::atomic<bool> released{false};
  std::atomic<bool> got_it_early{false};
  m.lock();
  std::thread other([&] {
    std::lock_guard guard(m);
    if (!released.load()) got_it_early.store(true);
  });
  // Long enough for a wrong lock() to get in; a right one waits however long this is.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  released.store(true);
  m.unlock();
  other.join();
  EXPECT_FALSE(got_it_early.load());
}

}  // namespace
