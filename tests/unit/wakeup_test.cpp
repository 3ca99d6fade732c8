// wakeup::announce_one (src/wait/futex.hpp): one wake until the woken sleeper is back.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "wait/futex.hpp"

namespace {

using mproc::detail::deadline;
using mproc::detail::first_slice;
using mproc::detail::monotonic_ns;
using mproc::detail::wakeup;

// A wakeup with one sleeper counted in, trusted to be awake within a second.
void count_a_sleeper(wakeup& w) {
  w.will_wake_by(monotonic_ns() + 1'000'000'000);
  w.sleepers.store(1);
}

TEST(Wakeup, AnnounceOneWakesOnceUntilTheSleeperReturns) {
  wakeup w;
  EXPECT_FALSE(w.announce_one()) << "nobody sleeps";
  count_a_sleeper(w);
  EXPECT_TRUE(w.announce_one());
  EXPECT_FALSE(w.announce_one()) << "the sleeper woken has not run yet";
  w.sleeper_returned();
  EXPECT_TRUE(w.announce_one());
  EXPECT_TRUE(w.announce(1)) << "a plain announce is never skipped";
}

TEST(Wakeup, ASleeperWokenAndNotBackIsTrustedForAFirstSliceOnly) {
  wakeup w;
  count_a_sleeper(w);
  ASSERT_TRUE(w.announce_one());
  std::this_thread::sleep_for(first_slice);
  EXPECT_TRUE(w.announce_one()) << "a sleeper woken and killed before it ran must not silence the others";
}

TEST(Wakeup, ASleeperInWaitForConditionIsWokenByAnnounceOne) {
  wakeup w;
  std::atomic<bool> flag{false};
  std::atomic<bool> woke{false};
  std::thread sleeper([&] {
    woke = mproc::detail::wait_for_condition(
        w, [&] { return flag.load(); }, deadline::never());
  });
  while (w.sleepers.load() == 0) std::this_thread::yield();
  flag.store(true);
  while (!w.announce_one() && w.sleepers.load() != 0) std::this_thread::yield();
  sleeper.join();
  EXPECT_TRUE(woke.load());
}

}  // namespace
