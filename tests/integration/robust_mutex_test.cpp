// The robust process-shared mutex under every mproc lock (src/robust_mutex.hpp), with real
// processes: a waiter whose wake was lost must still take the lock once it is free.
#include "wait/robust_mutex.hpp"

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
using mproc::detail::robust_mutex_init;
using mproc::detail::robust_mutex_lock;

constexpr unsigned futex_waiters = 0x8000'0000U;  // linux/futex.h FUTEX_WAITERS

struct shared_state {
  pthread_mutex_t mutex;
  std::atomic<int> step;
};

// A locker whose wake was lost still takes the lock once it is free.
// An unlock wakes one sleeping locker. When that one is SIGKILLed before it takes the
// lock, the wake is lost with it: the lock word is 0 (free) and the other lockers sleep
// on. The holder here makes exactly that state, deterministically: it frees the word
// without the wake. A locker must notice within its recheck interval, not sleep forever.
TEST(RobustMutex, ALockerWhoseWakeWasLostStillTakesTheFreeLock) {
  const mproc_test::shared_mapping<shared_state> s;
  robust_mutex_init(s->mutex, "test");

  const pid_t holder = ::fork();
  ASSERT_GE(holder, 0);
  if (holder == 0) {
    if (::pthread_mutex_lock(&s->mutex) != 0) ::_exit(1);
    s->step.store(1);
    while (s->step.load() != 2) std::this_thread::sleep_for(1ms);
    // glibc keeps the futex word in __data.__lock: free it as an unlock does, minus the wake.
    reinterpret_cast<std::atomic<int>*>(&s->mutex.__data.__lock)->store(0);
    s->step.store(3);
    ::pause();  // alive, so that its exit does not touch the lock either
    ::_exit(1);
  }
  ASSERT_TRUE(mproc_test::eventually([&] { return s->step.load() == 1; }, 10s));

  const pid_t locker = ::fork();
  ASSERT_GE(locker, 0);
  if (locker == 0) {
    bool recovered = false;
    robust_mutex_lock(s->mutex, mproc::detail::deadline::never(), "test", "lock", [&] { recovered = true; });
    ::_exit(recovered ? 2 : 0);
  }
  // The locker is asleep in the kernel once it has marked the word as having waiters.
  const auto word = [&] { return static_cast<unsigned>(s->mutex.__data.__lock); };
  ASSERT_TRUE(mproc_test::eventually([&] { return (word() & futex_waiters) != 0; }, 10s)) << std::hex << word();
  s->step.store(2);
  ASSERT_TRUE(mproc_test::eventually([&] { return s->step.load() == 3; }, 10s));

  // The lock is free, and nobody will wake the locker: it must take the lock by itself.
  int status = 0;
  const bool ended = mproc_test::eventually([&] { return ::waitpid(locker, &status, WNOHANG) == locker; }, 10s);
  if (!ended) {
    ::kill(locker, SIGKILL);
    ::waitpid(locker, &status, 0);
  }
  ::kill(holder, SIGKILL);
  ::waitpid(holder, nullptr, 0);
  ASSERT_TRUE(ended) << "the locker slept on beside a free lock";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

}  // namespace
