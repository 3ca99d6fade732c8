// The wakeup under every mproc wait (src/futex.hpp), with real processes: a sleeper killed
// in its sleep must not make every later announce pay a wake syscall, and a live sleeper
// must always be woken.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <new>

#include "test_support.hpp"
#include "wait/futex.hpp"

namespace {

using namespace std::chrono_literals;
using mproc::detail::monotonic_ns;
using mproc::detail::wait_for_condition;
using mproc::detail::wakeup;

struct shared_state {
  wakeup w;
  std::atomic<int> go;
};

class Wakeup : public ::testing::Test {
 protected:
  void SetUp() override {
    memory_ = ::mmap(nullptr, sizeof(shared_state), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(memory_, MAP_FAILED);
    s_ = new (memory_) shared_state{};
  }
  void TearDown() override {
    if (sleeper_ > 0) {
      ::kill(sleeper_, SIGKILL);
      ::waitpid(sleeper_, nullptr, 0);
    }
    ::munmap(memory_, sizeof(shared_state));
  }

  // A child asleep on the wakeup until `go` is set; returns once it counts as a sleeper
  // and the kernel has it asleep.
  void start_sleeper() {
    sleeper_ = ::fork();
    ASSERT_GE(sleeper_, 0);
    if (sleeper_ == 0) {
      wait_for_condition(
          s_->w, [&] { return s_->go.load() != 0; }, mproc::detail::deadline::never());
      ::_exit(0);
    }
    ASSERT_TRUE(mproc_test::eventually(
        [&] {
          const auto st = mproc_test::read_proc_stat(sleeper_);
          return s_->w.sleepers.load() == 1 && st && st->state == 'S';
        },
        10s));
  }

  void* memory_ = nullptr;
  shared_state* s_ = nullptr;
  pid_t sleeper_ = -1;
};

TEST_F(Wakeup, AnnouncesWakeOnlyASleeperThatMayStillBeAsleep) {
  wakeup& w = s_->w;
  EXPECT_FALSE(w.announce()) << "nobody sleeps";
  w.sleepers.store(1);
  w.awake_by_ns.store(monotonic_ns() + std::int64_t{10'000'000'000});
  EXPECT_TRUE(w.announce()) << "a counted sleeper whose sleep has not ended";
  w.awake_by_ns.store(monotonic_ns() - 1);
  EXPECT_FALSE(w.announce()) << "every counted sleeper is dead or awake by now";
  EXPECT_EQ(w.awake_by_ns.load(), 0) << "marked as passed, for the announcers that follow";
  EXPECT_FALSE(w.announce());
  w.will_wake_by(monotonic_ns() + std::int64_t{10'000'000'000});
  EXPECT_TRUE(w.announce()) << "a sleeper that came after the mark";
}

TEST_F(Wakeup, ALiveSleeperIsWokenEveryTime) {
  start_sleeper();
  // Each wake makes the child re-check (go is 0) and sleep again. Between two of its sleeps
  // it does not count as a sleeper and needs no wake, hence `eventually`.
  for (int round = 0; round < 20; ++round) {
    ASSERT_TRUE(mproc_test::eventually([&] { return s_->w.announce(); }, 5s)) << "round " << round;
  }
  s_->go.store(1);
  s_->w.announce();
  int status = 0;
  ASSERT_TRUE(mproc_test::eventually([&] { return ::waitpid(sleeper_, &status, WNOHANG) == sleeper_; }, 10s));
  sleeper_ = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

// A sleeper killed in its sleep costs no wake once its sleep would have ended.
TEST_F(Wakeup, AKilledSleeperCostsNoWakeOnceItsSleepWouldEnd) {
  start_sleeper();
  ASSERT_TRUE(mproc_test::eventually([&] { return s_->w.announce(); }, 5s)) << "a live sleeper must be woken";
  ASSERT_TRUE(mproc_test::eventually([&] { return s_->w.sleepers.load() == 1; }, 10s));
  ::kill(sleeper_, SIGKILL);
  ::waitpid(sleeper_, nullptr, 0);
  sleeper_ = -1;
  // Killed asleep, it never took itself off the count; its sleep would have ended by
  // awake_by_ns (at most 100 ms and a margin after it began).
  EXPECT_EQ(s_->w.sleepers.load(), 1U);
  const std::int64_t awake_by = s_->w.awake_by_ns.load();
  EXPECT_LE(awake_by - monotonic_ns(), std::int64_t{200'000'000});
  ASSERT_TRUE(mproc_test::eventually([&] { return monotonic_ns() > awake_by; }, 10s));
  for (int k = 0; k < 1000; ++k) ASSERT_FALSE(s_->w.announce()) << "announce " << k << " made a wake syscall";
}

}  // namespace
