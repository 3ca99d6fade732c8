// biased_mutex: the thread that made it locks it for free until another thread locks it;
// from then on, exclusion between every thread, the owner included.
#include "wait/biased_mutex.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>

#include "os/asymmetric_fence.hpp"

namespace {

using mproc::detail::biased_mutex;

TEST(BiasedMutex, TheOwnerAloneKeepsTheBias) {
  biased_mutex m;
  for (int i = 0; i < 1000; ++i) {
    std::lock_guard guard(m);
  }
  EXPECT_EQ(m.biased(), mproc::detail::heavy_fence_available());
}

// A thread that comes while the owner holds the lock waits until the owner unlocks.
TEST(BiasedMutex, ALockerWaitsForTheOwnerToLeave) {
  std::atomic<bool> other_started{false};
  std::atomic<bool> other_entered{false};
  bool entered_while_held = true;
  std::unique_ptr<biased_mutex> m;
  std::atomic<bool> held{false};
  std::thread owner([&] {
    m = std::make_unique<biased_mutex>();
    m->lock();
    held.store(true);
    while (!other_started.load()) {
    }
    // Time for a wrong lock() to get in; a right one waits whatever the time.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    entered_while_held = other_entered.load();
    m->unlock();
  });
  while (!held.load()) {
  }
  std::thread other([&] {
    other_started.store(true);
    m->lock();
    other_entered.store(true);
    m->unlock();
  });
  owner.join();
  other.join();
  EXPECT_FALSE(entered_while_held) << "the second thread got in while the owner held the lock";
  EXPECT_TRUE(other_entered.load());
}

// The owner and another thread hammer one plain counter: each sees itself alone inside,
// and no increment is lost, whether the other thread came while the owner was inside or not.
TEST(BiasedMutex, AnotherThreadRevokesTheBiasAndBothExcludeEachOther) {
  constexpr int rounds = 20;
  constexpr int per_thread = 20000;
  for (int round = 0; round < rounds; ++round) {
    std::atomic<bool> go{false};
    std::atomic<int> inside{0};
    std::atomic<int> overlaps{0};
    long counter = 0;
    const auto hammer = [&](biased_mutex& m) {
      while (!go.load()) {
      }
      for (int i = 0; i < per_thread; ++i) {
        std::lock_guard guard(m);
        if (inside.fetch_add(1, std::memory_order_relaxed) != 0) overlaps.fetch_add(1);
        counter = counter + 1;
        inside.fetch_sub(1, std::memory_order_relaxed);
      }
    };
    std::unique_ptr<biased_mutex> m;
    std::thread owner([&] {
      m = std::make_unique<biased_mutex>();  // made here: this thread is the owner
      go.store(true);
      hammer(*m);
    });
    while (!go.load()) {
    }
    std::thread other([&] { hammer(*m); });
    owner.join();
    other.join();
    ASSERT_EQ(overlaps.load(), 0) << "round " << round;
    ASSERT_EQ(counter, 2L * per_thread) << "round " << round;
    EXPECT_FALSE(m->biased());
  }
}

}  // namespace
