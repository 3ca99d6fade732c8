// The lock of a queue lane's consumers (src/wait/incarnation_lock.hpp), with real
// processes: a holder that dies is found out by whoever waits, and only one takes over.
#include "wait/incarnation_lock.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using mproc::detail::deadline;
using mproc::detail::incarnation_lock;
using mproc::detail::lock_result;

struct shared_state {
  incarnation_lock lock;
  std::atomic<int> step;
  std::atomic<int> recovered;
};

void kill_and_reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
}

// A child that takes the lock, says so, and waits to be killed holding it: its pid once it
// holds the lock, or -1.
pid_t start_holder(shared_state& s) {
  const pid_t holder = ::fork();
  if (holder == 0) {
    if (s.lock.try_lock() != lock_result::locked) ::_exit(1);
    s.step.store(1);
    for (;;) ::pause();
  }
  if (holder < 0) return -1;
  if (!mproc_test::eventually([&] { return s.step.load() == 1; }, 10s)) {
    kill_and_reap(holder);
    return -1;
  }
  return holder;
}

TEST(IncarnationLock, ExcludesAndIsFreeAgainAfterUnlock) {
  const mproc_test::shared_mapping<shared_state> s;
  EXPECT_EQ(s->lock.try_lock(), lock_result::locked);
  EXPECT_EQ(s->lock.try_lock(), lock_result::busy);
  EXPECT_EQ(s->lock.lock(deadline::in(20ms)), lock_result::timed_out) << "its holder lives: no takeover";
  s->lock.unlock();
  EXPECT_EQ(s->lock.lock(deadline::in(1s)), lock_result::locked);
  s->lock.unlock();
}

// Two waiters, in two processes, wait for a holder that is then SIGKILLed: exactly one of
// them takes the lock over (recovered), the other gets it after that one unlocks.
TEST(IncarnationLock, AHolderKilledIsTakenOverByExactlyOneWaiter) {
  const mproc_test::shared_mapping<shared_state> s;
  const pid_t holder = start_holder(*s);
  ASSERT_GT(holder, 0) << "no child came to hold the lock";
  pid_t waiters[2];
  for (pid_t& w : waiters) {
    w = ::fork();
    if (w == 0) {
      const lock_result r = s->lock.lock(deadline::in(20s));
      if (r == lock_result::recovered) s->recovered.fetch_add(1);
      if (r != lock_result::locked && r != lock_result::recovered) ::_exit(2);
      std::this_thread::sleep_for(20ms);  // holding it, while the other waits
      s->lock.unlock();
      ::_exit(0);
    }
    ASSERT_GE(w, 0);
  }
  std::this_thread::sleep_for(50ms);  // let them wait on a live holder first
  EXPECT_EQ(s->recovered.load(), 0) << "a waiter took the lock from a live holder";
  kill_and_reap(holder);
  for (const pid_t w : waiters) {
    int status = 0;
    ASSERT_EQ(::waitpid(w, &status, 0), w);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  EXPECT_EQ(s->recovered.load(), 1);
  EXPECT_EQ(s->lock.try_lock(), lock_result::locked) << "left held";
}

// A caller that cannot wait still finds a dead holder out, once: else a consumer polling
// with try_get would never see a message whose lane a dead consumer holds.
TEST(IncarnationLock, ALockThatCannotWaitStillTakesOverFromADeadHolder) {
  const mproc_test::shared_mapping<shared_state> s;
  const pid_t holder = start_holder(*s);
  ASSERT_GT(holder, 0) << "no child came to hold the lock";
  EXPECT_EQ(s->lock.lock(deadline::no_wait()), lock_result::timed_out);
  kill_and_reap(holder);
  EXPECT_EQ(s->lock.lock(deadline::no_wait()), lock_result::recovered);
  s->lock.unlock();
}

}  // namespace
