// mproc's locks, semaphores, events, conditions, barriers and shared values with real
// processes, including processes killed while holding or waiting on them.
#include "mproc/sync.hpp"

#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mproc/process.hpp"
#include "mproc/queue.hpp"
#include "mproc/shared.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

using mproc_test::dev_shm_entries_but_named_shm;

// In a child: a failed check ends it with exit code 1 and says why on stderr.
void require(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(what);
}

// CLOCK_MONOTONIC is one clock for every process: times taken in a child compare with the
// parent's.
std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch()).count();
}

[[noreturn]] void hang() {
  for (;;) ::pause();
}

int exit_code_of(mproc::process& p) {
  p.join();
  return p.exitcode().value();
}

// Every test leaves no zombie behind.
class Sync : public ::testing::Test {
 protected:
  void TearDown() override { EXPECT_EQ(mproc_test::count_zombie_children(), 0); }
};

// --- locks and dead holders -----------------------------------------------------------

TEST_F(Sync, MutexHolderKilledNextAcquirerGetsItWithinASecond) {
  mproc::mutex m;
  mproc::event holding;
  mproc::process holder([m, holding]() mutable {
    m.lock();
    holding.set();
    hang();
  });
  holder.start();
  ASSERT_TRUE(holding.wait(30s));
  EXPECT_FALSE(m.try_lock());
  EXPECT_EQ(m.owner_deaths(), 0U);
  const auto killed = clock_type::now();
  holder.kill();
  ASSERT_TRUE(m.try_lock_for(1s)) << "the lock of a killed holder was not recovered within 1 s";
  EXPECT_LT(clock_type::now() - killed, 1s);
  EXPECT_GE(m.owner_deaths(), 1U);
  EXPECT_TRUE(m.held_by_this_thread());
  m.unlock();
  EXPECT_TRUE(m.try_lock());  // consistent again: an ordinary lock
  m.unlock();
  EXPECT_EQ(exit_code_of(holder), -SIGKILL);
}

TEST_F(Sync, AProcessBlockedInLockGetsItWhenTheHolderIsKilled) {
  mproc::mutex m;
  mproc::event holding;
  mproc::event waiting;
  mproc::shared_value<std::int64_t> acquired_at(0);
  mproc::process holder([m, holding]() mutable {
    m.lock();
    holding.set();
    hang();
  });
  holder.start();
  ASSERT_TRUE(holding.wait(30s));
  mproc::process waiter([m, waiting, acquired_at]() mutable {
    waiting.set();
    m.lock();  // no timeout: only the holder's death lets it through
    acquired_at.value() = now_ns();
    require(m.owner_deaths() >= 1, "the death was not reported");
    m.unlock();
  });
  waiter.start();
  ASSERT_TRUE(waiting.wait(30s));
  EXPECT_FALSE(m.try_lock_for(100ms));  // the waiter is, or soon will be, blocked in lock()
  const std::int64_t killed_at = now_ns();
  holder.kill();
  ASSERT_TRUE(waiter.join(10s));
  EXPECT_EQ(waiter.exitcode(), 0);
  EXPECT_LT(acquired_at.value() - killed_at, std::int64_t{1'000'000'000});
  EXPECT_EQ(exit_code_of(holder), -SIGKILL);
}

// A recursive mutex held at several levels by a killed process is recovered.
TEST_F(Sync, RecursiveMutexHeldDeepByAKilledProcessIsRecovered) {
  mproc::recursive_mutex r;
  mproc::event holding;
  mproc::process holder([r, holding]() mutable {
    r.lock();
    r.lock();
    r.lock();
    holding.set();
    hang();
  });
  holder.start();
  ASSERT_TRUE(holding.wait(30s));
  holder.kill();
  ASSERT_TRUE(r.try_lock_for(1s));
  EXPECT_GE(r.owner_deaths(), 1U);
  r.unlock();  // one level: ours, not the dead holder's three
  EXPECT_THROW(r.unlock(), mproc::error);
  EXPECT_EQ(exit_code_of(holder), -SIGKILL);
}

TEST_F(Sync, AHolderThatExitsWithoutUnlockingIsRecoveredToo) {
  mproc::mutex m;
  mproc::process holder([m]() mutable {
    m.lock();
    ::_exit(0);  // no destructor, no unlock
  });
  holder.start();
  EXPECT_EQ(exit_code_of(holder), 0);
  ASSERT_TRUE(m.try_lock_for(1s));
  EXPECT_EQ(m.owner_deaths(), 1U);
  m.unlock();
}

TEST_F(Sync, ReleaseByAnotherProcessThrows) {
  mproc::mutex m;
  mproc::recursive_mutex r;
  m.lock();
  r.lock();
  mproc::process other([m, r]() mutable {
    require(!m.try_lock(), "took a lock another process holds");
    require(!r.try_lock(), "took an rlock another process holds");
    bool threw_m = false, threw_r = false;
    try {
      m.release();
    } catch (const mproc::error&) {
      threw_m = true;
    }
    try {
      r.release();
    } catch (const mproc::error&) {
      threw_r = true;
    }
    require(threw_m, "releasing another process's lock did not throw");
    require(threw_r, "releasing another process's rlock did not throw");
  });
  other.start();
  EXPECT_EQ(exit_code_of(other), 0);
  EXPECT_TRUE(m.held_by_this_thread());
  EXPECT_TRUE(r.held_by_this_thread());
  m.unlock();
  r.unlock();
}

TEST_F(Sync, ForkedChildDoesNotOwnItsParentsLock) {
  mproc::recursive_mutex r;
  r.lock();
  mproc::process child([r]() mutable {
    require(!r.held_by_this_thread(), "the child thinks it holds its parent's lock");
    require(!r.try_lock(), "the child re-entered its parent's lock");
  });
  child.start();
  EXPECT_EQ(exit_code_of(child), 0);
  r.unlock();
}

// --- shared values --------------------------------------------------------------------

TEST_F(Sync, FourProcessesTimesTenThousandIncrementsUnderTheLock) {
  mproc::shared_value<int> counter(0);
  std::vector<mproc::process> workers;
  for (int i = 0; i < 4; ++i) {
    workers.emplace_back([counter]() mutable {
      for (int k = 0; k < 10000; ++k) {
        std::lock_guard guard(counter.get_lock());
        ++counter.value();
      }
    });
  }
  for (auto& w : workers) w.start();
  for (auto& w : workers) EXPECT_EQ(exit_code_of(w), 0);
  EXPECT_EQ(counter.value(), 40000);
  EXPECT_EQ(counter.get(), 40000);
}

TEST_F(Sync, AMutexGuardsASharedArrayAcrossProcesses) {
  mproc::mutex m;
  mproc::shared_array<std::int64_t> cells(8, 0);
  std::vector<mproc::process> workers;
  for (int i = 0; i < 2; ++i) {
    workers.emplace_back([m, cells]() mutable {
      for (int k = 0; k < 20000; ++k) {
        std::lock_guard guard(m);
        for (auto& c : cells) ++c;  // all cells move together, or the test sees it
      }
    });
  }
  for (auto& w : workers) w.start();
  for (auto& w : workers) EXPECT_EQ(exit_code_of(w), 0);
  for (auto c : cells) EXPECT_EQ(c, 40000);
}

// --- barrier --------------------------------------------------------------------------

TEST_F(Sync, BarrierOfFiveProcessesKeepsLockstepForAThousandPasses) {
  constexpr int parties = 5;
  constexpr int passes = 1000;
  mproc::barrier b(parties);
  mproc::shared_array<int> progress(parties, 0);    // passes each process has begun
  mproc::shared_array<int> violations(parties, 0);  // lockstep breaches each one saw
  std::vector<mproc::process> ps;
  for (int i = 0; i < parties; ++i) {
    ps.emplace_back([b, progress, violations, i]() mutable {
      for (int p = 0; p < passes; ++p) {
        std::atomic_ref<int>(progress[i]).store(p + 1);
        b.wait(30s);
        // Everyone has begun pass p; nobody can be past pass p+1 (that needs us too).
        for (int j = 0; j < parties; ++j) {
          const int seen = std::atomic_ref<int>(progress[j]).load();
          if (seen < p + 1 || seen > p + 2) ++violations[i];
        }
      }
    });
  }
  for (auto& p : ps) p.start();
  for (auto& p : ps) EXPECT_EQ(exit_code_of(p), 0);
  for (int i = 0; i < parties; ++i) {
    EXPECT_EQ(progress[i], passes);
    EXPECT_EQ(violations[i], 0) << "process " << i;
  }
  EXPECT_FALSE(b.broken());
}

TEST_F(Sync, BarrierTimeoutBreaksItForAllFiveWaiters) {
  constexpr int processes = 5;
  mproc::barrier b(processes + 1);  // one party never comes
  enum outcome : int { none, broken, passed, other };
  mproc::shared_array<int> outcomes(processes, none);
  mproc::shared_array<std::int64_t> ended_at(processes, 0);
  std::vector<mproc::process> ps;
  for (int i = 0; i < processes; ++i) {
    // The first four wait long; the last one's short timeout breaks the barrier.
    const std::chrono::milliseconds timeout = i + 1 < processes ? 30000ms : 300ms;
    ps.emplace_back([b, outcomes, ended_at, i, timeout]() mutable {
      try {
        b.wait(timeout);
        outcomes[i] = passed;
      } catch (const mproc::broken_barrier&) {
        outcomes[i] = broken;
      } catch (...) {
        outcomes[i] = other;
      }
      ended_at[i] = now_ns();
    });
  }
  for (int i = 0; i + 1 < processes; ++i) ps[static_cast<std::size_t>(i)].start();
  ASSERT_TRUE(mproc_test::eventually([&] { return b.n_waiting() == processes - 1; }, 30s));
  const std::int64_t last_started = now_ns();
  ps.back().start();
  for (auto& p : ps) EXPECT_EQ(exit_code_of(p), 0);
  for (int i = 0; i < processes; ++i) {
    EXPECT_EQ(outcomes[i], broken) << "process " << i;
    // Everyone was released by the timeout, long before their own 30 s.
    EXPECT_LT(ended_at[i] - last_started, std::int64_t{10'000'000'000}) << "process " << i;
  }
  EXPECT_GE(ended_at[processes - 1] - last_started, std::int64_t{300'000'000});
  EXPECT_TRUE(b.broken());
  b.reset();
  EXPECT_FALSE(b.broken());
}

// A party killed running the action breaks the barrier, for waiters without a timeout too.
TEST_F(Sync, APartyKilledRunningTheActionBreaksTheBarrier) {
  mproc::event in_action;
  mproc::barrier b(3, [in_action]() mutable {
    if (mproc::parent_process().has_value()) {  // the victim: dies holding the barrier's lock
      in_action.set();
      hang();
    }
  });
  mproc::shared_array<int> broke(2, 0);
  std::vector<mproc::process> waiters;
  for (int i = 0; i < 2; ++i) {
    waiters.emplace_back([b, broke, i]() mutable {
      try {
        b.wait();  // no timeout
      } catch (const mproc::broken_barrier&) {
        broke[i] = 1;
      }
    });
  }
  for (auto& w : waiters) w.start();
  ASSERT_TRUE(mproc_test::eventually([&] { return b.n_waiting() == 2; }, 30s));
  mproc::process victim([b]() mutable { b.wait(); });  // the last arrival runs the action
  victim.start();
  ASSERT_TRUE(in_action.wait(30s));
  const auto killed = clock_type::now();
  victim.kill();
  for (auto& w : waiters) {
    ASSERT_TRUE(w.join(10s)) << "a waiter was stranded by the dead party";
    EXPECT_EQ(w.exitcode(), 0);
  }
  EXPECT_LT(clock_type::now() - killed, 2s);
  EXPECT_EQ(broke[0], 1);
  EXPECT_EQ(broke[1], 1);
  EXPECT_TRUE(b.broken());
  EXPECT_GE(b.owner_deaths(), 1U);
  EXPECT_EQ(exit_code_of(victim), -SIGKILL);
}

// --- condition ------------------------------------------------------------------------

TEST_F(Sync, ConditionNotifyTwoWakesExactlyTwoOfFiveProcesses) {
  constexpr int processes = 5;
  mproc::condition c;
  mproc::shared_value<int> waiting(0);
  mproc::shared_value<int> woken(0);
  std::vector<mproc::process> ps;
  for (int i = 0; i < processes; ++i) {
    ps.emplace_back([c, waiting, woken]() mutable {
      std::unique_lock lock(c);
      ++waiting.value();
      require(c.wait_for(30s), "not notified within 30 s");
      ++woken.value();
    });
  }
  for (auto& p : ps) p.start();
  // A waiter counts itself under the lock and wait() enters the list under it: once the
  // count is 5 (read under the lock), all five are in the list.
  ASSERT_TRUE(mproc_test::eventually(
      [&] {
        std::lock_guard guard(c);
        return waiting.value() == processes;
      },
      30s));
  {
    std::lock_guard guard(c);
    c.notify(2);
  }
  ASSERT_TRUE(mproc_test::eventually(
      [&] {
        std::lock_guard guard(c);
        return woken.value() == 2;
      },
      30s));
  {
    // Nobody else was woken: a third would count itself within this window.
    std::unique_lock lock(c);
    EXPECT_FALSE(c.wait_for(300ms, [&] { return woken.value() != 2; }));
    c.notify(1);
  }
  ASSERT_TRUE(mproc_test::eventually(
      [&] {
        std::lock_guard guard(c);
        return woken.value() == 3;
      },
      30s));
  {
    std::lock_guard guard(c);
    c.notify_all();
  }
  for (auto& p : ps) EXPECT_EQ(exit_code_of(p), 0);
  EXPECT_EQ(woken.value(), processes);
}

// A process uses the waiter slots another process grew the condition for.
TEST_F(Sync, ConditionSlotsGrownByOneProcessServeAnother) {
  // The child is forked before the condition's memfd grows: it must map the new slots.
  constexpr int threads = 70;  // more than the first page's 56 slots
  mproc::condition c;
  mproc::event go;
  mproc::shared_value<int> waiting(0);
  mproc::process child([c, go, waiting]() mutable {
    require(go.wait(30s), "never told to go");
    std::unique_lock lock(c);
    ++waiting.value();
    require(c.wait_for(30s), "not notified within 30 s");
  });
  child.start();
  std::vector<std::thread> waiters;
  for (int i = 0; i < threads; ++i) {
    waiters.emplace_back([&] {
      std::unique_lock lock(c);
      ++waiting.value();
      EXPECT_TRUE(c.wait_for(30s));
    });
  }
  ASSERT_TRUE(mproc_test::eventually(
      [&] {
        std::lock_guard guard(c);
        return waiting.value() == threads;
      },
      30s));
  go.set();
  ASSERT_TRUE(mproc_test::eventually(
      [&] {
        std::lock_guard guard(c);
        return waiting.value() == threads + 1;
      },
      30s));
  {
    std::lock_guard guard(c);
    c.notify_all();
  }
  for (auto& t : waiters) t.join();
  EXPECT_EQ(exit_code_of(child), 0);
}

TEST_F(Sync, ConditionNotifySkipsAWaiterThatWasKilled) {
  mproc::condition c;
  mproc::shared_value<int> waiting(0);
  auto make_waiter = [&] {
    return mproc::process([c, waiting]() mutable {
      std::unique_lock lock(c);
      ++waiting.value();
      require(c.wait_for(30s), "not notified within 30 s");
    });
  };
  const auto waiters_are = [&](int n) {
    return mproc_test::eventually(
        [&] {
          std::lock_guard guard(c);
          return waiting.value() == n;
        },
        30s);
  };
  mproc::process first = make_waiter();
  first.start();
  ASSERT_TRUE(waiters_are(1));
  mproc::process second = make_waiter();
  second.start();
  ASSERT_TRUE(waiters_are(2));
  first.kill();  // the longest waiter, the one notify(1) would pick
  EXPECT_EQ(exit_code_of(first), -SIGKILL);
  {
    std::lock_guard guard(c);
    c.notify(1);
  }
  ASSERT_TRUE(second.join(10s)) << "notify(1) went to the dead waiter";
  EXPECT_EQ(second.exitcode(), 0);
  EXPECT_GE(c.owner_deaths(), 1U);
}

TEST_F(Sync, ANotifierKilledHoldingTheLockStrandsNobody) {
  mproc::condition c;
  mproc::shared_value<int> waiting(0);
  mproc::event holding;
  mproc::process waiter([c, waiting]() mutable {
    std::unique_lock lock(c);
    ++waiting.value();
    require(c.wait_for(30s), "not notified within 30 s");
    require(c.owner_deaths() >= 1, "the death of the notifier was not reported");
  });
  waiter.start();
  ASSERT_TRUE(mproc_test::eventually(
      [&] {
        std::lock_guard guard(c);
        return waiting.value() == 1;
      },
      30s));
  mproc::process notifier([c, holding]() mutable {
    c.lock();
    c.notify();
    holding.set();
    hang();  // dies holding the lock the woken waiter needs back
  });
  notifier.start();
  ASSERT_TRUE(holding.wait(30s));
  notifier.kill();
  ASSERT_TRUE(waiter.join(10s));
  EXPECT_EQ(waiter.exitcode(), 0);
  ASSERT_TRUE(c.try_lock_for(1s));
  c.unlock();
  EXPECT_EQ(exit_code_of(notifier), -SIGKILL);
}

// --- event and semaphore --------------------------------------------------------------

TEST_F(Sync, EventSetByAChildWakesTheParent) {
  mproc::event go;
  mproc::event done;
  mproc::process child([go, done]() mutable {
    require(go.wait(30s), "never told to go");
    done.set();
  });
  child.start();
  go.set();
  const auto begin = clock_type::now();
  EXPECT_TRUE(done.wait(30s));
  EXPECT_LT(clock_type::now() - begin, 10s);
  EXPECT_TRUE(done.is_set());
  EXPECT_EQ(exit_code_of(child), 0);
}

TEST_F(Sync, AWaiterKilledWhileAsleepDoesNotDisturbTheOthers) {
  mproc::event e;
  mproc::event asleep;
  mproc::process doomed([e, asleep]() mutable {
    asleep.set();
    e.wait();
  });
  doomed.start();
  ASSERT_TRUE(asleep.wait(30s));
  doomed.kill();
  EXPECT_EQ(exit_code_of(doomed), -SIGKILL);
  mproc::process survivor([e]() mutable { require(e.wait(30s), "not woken"); });
  survivor.start();
  e.set();
  EXPECT_EQ(exit_code_of(survivor), 0);
}

TEST_F(Sync, SemaphoreAcrossProcesses) {
  mproc::semaphore s(0);
  mproc::event first_wait_over;
  mproc::process taker([s, first_wait_over]() mutable {
    const auto begin = clock_type::now();
    require(!s.try_acquire_for(200ms), "acquired a unit nobody released");
    require(clock_type::now() - begin >= 200ms, "try_acquire_for returned before its timeout");
    first_wait_over.set();
    require(s.try_acquire_for(30s), "the parent's release did not reach the child");
  });
  taker.start();
  ASSERT_TRUE(first_wait_over.wait(30s));
  s.release();
  EXPECT_EQ(exit_code_of(taker), 0);
  EXPECT_EQ(s.get_value(), 0);
}

TEST_F(Sync, ASemaphoreHolderThatDiesDoesNotReleaseAsInPython) {
  mproc::bounded_semaphore s(1);
  mproc::event holding;
  mproc::process holder([s, holding]() mutable {
    s.acquire();
    holding.set();
    hang();
  });
  holder.start();
  ASSERT_TRUE(holding.wait(30s));
  holder.kill();
  EXPECT_EQ(exit_code_of(holder), -SIGKILL);
  EXPECT_EQ(s.get_value(), 0);
  EXPECT_FALSE(s.try_acquire());
  s.release();  // someone who knows may give it back
  EXPECT_THROW(s.release(), mproc::error);
}

// --- handles made after the process started ------------------------------------------

struct handles {
  mproc::mutex m;
  mproc::recursive_mutex r;
  mproc::semaphore s{0};
  mproc::bounded_semaphore bs{1};
  mproc::event e;
  mproc::condition c;
  mproc::barrier b{2};
  mproc::shared_value<int> v{0};
  mproc::shared_array<int> a{4, 0};

  template <class Archive>
  void serialize(Archive& archive) {
    archive(m, r, s, bs, e, c, b, v, a);
  }
};

TEST_F(Sync, HandlesPassedThroughAQueueToARunningProcessWork) {
  const auto shm_before = dev_shm_entries_but_named_shm();
  const int fds_before = mproc_test::count_open_fds();
  {
    mproc::queue<handles> mailbox;
    mproc::process child([mailbox]() mutable {
      handles h = mailbox.get(30s);
      require(!h.m.try_lock(), "the parent's mutex is not held here");
      {
        std::lock_guard guard(h.v.get_lock());
        h.v.value() += 5;
      }
      h.a[3] = 7;
      h.s.release();
      bool threw = false;
      try {
        h.bs.release();
      } catch (const mproc::error&) {
        threw = true;
      }
      require(threw, "over-releasing the bounded semaphore did not throw");
      h.e.set();
      {
        std::lock_guard guard(h.c);
        h.a[0] = 1;
        h.c.notify_all();
      }
      require(h.b.wait(30s) < 2, "bad barrier index");
      std::lock_guard guard(h.r);  // free once the parent let it go, before the barrier
    });
    child.start();
    handles h;  // made after the child was forked
    h.m.lock();
    h.r.lock();
    mailbox.put(h);
    EXPECT_TRUE(h.s.try_acquire_for(30s));
    EXPECT_TRUE(h.e.wait(30s));
    {
      std::unique_lock lock(h.c);
      EXPECT_TRUE(h.c.wait_for(30s, [&] { return h.a[0] == 1; }));
    }
    h.r.unlock();
    EXPECT_LT(h.b.wait(30s), 2U);
    EXPECT_EQ(exit_code_of(child), 0);
    EXPECT_EQ(h.v.get(), 5);
    EXPECT_EQ(h.a[3], 7);
    EXPECT_EQ(h.bs.get_value(), 1);
    h.m.unlock();
  }
  EXPECT_EQ(mproc_test::count_open_fds(), fds_before);
  EXPECT_EQ(dev_shm_entries_but_named_shm(), shm_before);
}

// Processes that use every type leave no descriptor and nothing in /dev/shm.
TEST_F(Sync, ProcessesThatUseEveryTypeLeaveNothingBehind) {
  const auto shm_before = dev_shm_entries_but_named_shm();
  const int fds_before = mproc_test::count_open_fds();
  {
    mproc::mutex m;
    mproc::condition c(m);
    mproc::barrier b(3);
    mproc::semaphore s(0);
    mproc::event e;
    mproc::shared_array<int> a(3, 0);
    std::vector<mproc::process> ps;
    for (int i = 0; i < 2; ++i) {
      ps.emplace_back([m, c, b, s, e, a, i]() mutable {
        {
          std::lock_guard guard(m);
          a[i] = 1;
          c.notify_all();
        }
        b.wait(30s);
        s.release();
        require(e.wait(30s), "event never set");
      });
    }
    for (auto& p : ps) p.start();
    {
      std::unique_lock lock(m);
      EXPECT_TRUE(c.wait_for(30s, [&] { return a[0] + a[1] == 2; }));
    }
    b.wait(30s);
    EXPECT_TRUE(s.try_acquire_for(30s));
    EXPECT_TRUE(s.try_acquire_for(30s));
    e.set();
    for (auto& p : ps) EXPECT_EQ(exit_code_of(p), 0);
  }
  EXPECT_EQ(mproc_test::count_open_fds(), fds_before);
  EXPECT_EQ(dev_shm_entries_but_named_shm(), shm_before);
}

}  // namespace
