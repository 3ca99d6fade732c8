// mproc's locks, semaphores, events, conditions, barriers and shared values within one
// process (threads, no fork): semantics, misuse, timeouts, handles.
#include <dirent.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mproc/serialize.hpp"
#include "mproc/shared.hpp"
#include "mproc/sync.hpp"
// Header-only helpers shared with the integration tests; nothing in them forks.
#include "../integration/test_support.hpp"

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

// Runs `f` on another thread and waits for it: for "a thread that does not hold it".
template <class F>
void on_other_thread(F f) {
  std::thread t(f);
  t.join();
}

// Waits (with a deadline) until `condition` holds; for states no primitive announces.
template <class C>
bool eventually(C condition, std::chrono::milliseconds limit = 10s) {
  const auto deadline = clock_type::now() + limit;
  while (!condition()) {
    if (clock_type::now() >= deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// Whether the calling thread's robust futex list (get_robust_list(2)), which glibc threads
// through the robust mutexes the thread holds, is empty: the thread holds none.
bool robust_list_is_empty() {
  robust_list_head* head = nullptr;
  std::size_t length = 0;
  if (::syscall(SYS_get_robust_list, 0, &head, &length) != 0 || head == nullptr) return false;
  return head->list.next == &head->list && head->list_op_pending == nullptr;
}

using mproc_test::count_open_fds;
using mproc_test::dev_shm_entries_but_named_shm;

// --- mutex -----------------------------------------------------------------------------

TEST(Mutex, LockTryLockUnlock) {
  mproc::mutex m;
  m.lock();
  EXPECT_TRUE(m.held_by_this_thread());
  EXPECT_FALSE(m.try_lock());  // by the holder: false at once
  EXPECT_FALSE(m.try_lock_for(10ms));
  EXPECT_FALSE(m.acquire(false));
  m.unlock();
  EXPECT_FALSE(m.held_by_this_thread());
  EXPECT_TRUE(m.try_lock());
  m.unlock();
  EXPECT_TRUE(m.try_lock());
  m.unlock();
  EXPECT_TRUE(m.acquire());
  m.release();
  EXPECT_EQ(m.owner_deaths(), 0U);
}

// A timed wait is one that may fail, however long: the holder gets false, not an error,
// even for a timeout that saturates to "never".
TEST(Mutex, HolderTimedWaitOfAnyLengthIsFalse) {
  mproc::mutex m;
  m.lock();
  EXPECT_FALSE(m.try_lock_for(std::chrono::hours::max()));
  EXPECT_FALSE(m.try_lock_for(std::chrono::nanoseconds::max()));
  EXPECT_FALSE(m.try_lock_until(std::chrono::steady_clock::time_point::max()));
  EXPECT_FALSE(m.acquire(true, std::chrono::hours::max()));
  EXPECT_THROW(m.lock(), mproc::error);
  m.unlock();
  mproc::condition c(m);
  c.lock();
  EXPECT_FALSE(c.try_lock_for(std::chrono::hours::max()));
  c.unlock();
}

TEST(Mutex, PythonNamesAndAlias) {
  mproc::lock m;  // Python's Lock
  static_assert(std::is_same_v<mproc::lock, mproc::mutex>);
  EXPECT_TRUE(m.acquire(true, 10ms));
  EXPECT_FALSE(m.acquire(false, 1h));  // without block the timeout is ignored
  m.release();
  EXPECT_TRUE(m.acquire_for(10ms));
  m.release();
}

TEST(Mutex, LockingItAgainInTheHoldingThreadThrows) {
  mproc::mutex m;
  m.lock();
  EXPECT_THROW(m.lock(), mproc::error);
  EXPECT_THROW(m.acquire(), mproc::error);
  m.unlock();
}

TEST(Mutex, ReleasingAnUnheldLockThrows) {
  mproc::mutex m;
  EXPECT_THROW(m.unlock(), mproc::error);
  EXPECT_THROW(m.release(), mproc::error);
  m.lock();
  m.unlock();
  EXPECT_THROW(m.release(), mproc::error);
}

TEST(Mutex, ReleaseByAnotherThreadThrowsAndKeepsTheLock) {
  mproc::mutex m;
  m.lock();
  bool threw = false;
  bool got = true;
  on_other_thread([&] {
    try {
      m.unlock();
    } catch (const mproc::error&) {
      threw = true;
    }
    got = m.try_lock();
  });
  EXPECT_TRUE(threw);
  EXPECT_FALSE(got);
  m.unlock();
}

TEST(Mutex, TryLockForWaitsItsTimeoutWhileAnotherThreadHoldsIt) {
  mproc::mutex m;
  m.lock();
  bool got = true;
  clock_type::duration waited{};
  on_other_thread([&] {
    const auto begin = clock_type::now();
    got = m.try_lock_for(100ms);
    waited = clock_type::now() - begin;
  });
  EXPECT_FALSE(got);
  EXPECT_GE(waited, 100ms);
  EXPECT_LT(waited, 5s);
  bool until = true;
  on_other_thread([&] { until = m.try_lock_until(std::chrono::system_clock::now() + 20ms); });
  EXPECT_FALSE(until);
  m.unlock();
}

TEST(Mutex, WaiterGetsItWhenReleased) {
  mproc::mutex m;
  m.lock();
  std::atomic<bool> acquired{false};
  std::thread waiter([&] {
    m.lock();
    acquired = true;
    m.unlock();
  });
  EXPECT_FALSE(acquired.load());
  m.unlock();
  waiter.join();
  EXPECT_TRUE(acquired.load());
}

TEST(Mutex, ExcludesThreads) {
  mproc::mutex m;
  long counter = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        std::lock_guard guard(m);
        ++counter;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(counter, 80000);
}

TEST(Mutex, StandardLockWrappersWork) {
  mproc::mutex a;
  mproc::recursive_mutex b;
  {
    std::lock_guard guard(a);
    EXPECT_TRUE(a.held_by_this_thread());
  }
  EXPECT_FALSE(a.held_by_this_thread());
  {
    std::unique_lock lock(a, std::defer_lock);
    EXPECT_TRUE(lock.try_lock_for(10ms));
    lock.unlock();
    EXPECT_TRUE(lock.try_lock_until(clock_type::now() + 10ms));
  }
  EXPECT_FALSE(a.held_by_this_thread());
  {
    std::scoped_lock both(a, b);
    EXPECT_TRUE(a.held_by_this_thread());
    EXPECT_TRUE(b.held_by_this_thread());
    std::lock_guard again(b);  // recursive
  }
  EXPECT_FALSE(a.held_by_this_thread());
  EXPECT_FALSE(b.held_by_this_thread());
  {
    std::unique_lock<mproc::recursive_mutex> lock(b, 10ms);
    EXPECT_TRUE(lock.owns_lock());
  }
  // std::lock avoids deadlock between two threads taking the pair in opposite orders.
  std::thread t([&] {
    for (int i = 0; i < 2000; ++i) std::scoped_lock l(b, a);
  });
  for (int i = 0; i < 2000; ++i) std::scoped_lock l(a, b);
  t.join();
}

TEST(Mutex, CopiesAndMovedFromHandlesNameTheSameLock) {
  mproc::mutex m;
  mproc::mutex copy = m;
  mproc::mutex moved = std::move(copy);
  m.lock();
  EXPECT_TRUE(moved.held_by_this_thread());
  EXPECT_TRUE(copy.held_by_this_thread());  // moving copies: still usable
  moved.unlock();
  EXPECT_FALSE(m.held_by_this_thread());
}

// The lock's memory goes with its last handle here, and glibc links a held robust mutex
// into its thread's robust list through that memory: so the handle gives the lock back
// first (see lock_core.cpp). Another handle of the lock, with a mapping of its own (as a
// process that received the lock has), then finds it free, and no link is left dangling.
TEST(Mutex, DestroyingTheLastHandleReleasesTheLockItsThreadHolds) {
  for (int i = 0; i < 100; ++i) {
    std::optional<mproc::mutex> m(std::in_place);
    auto elsewhere = mproc::from_bytes<mproc::mutex>(mproc::to_bytes(*m));
    m->lock();
    m.reset();  // its last handle goes while this thread holds it
    ASSERT_TRUE(robust_list_is_empty()) << "a robust-list link left behind, round " << i;
    EXPECT_FALSE(elsewhere.held_by_this_thread());
    bool got = false;
    on_other_thread([&] {
      got = elsewhere.try_lock();
      if (got) elsewhere.unlock();
    });
    ASSERT_TRUE(got) << "the lock was not given back, round " << i;
  }
  mproc::mutex other;  // locking another robust mutex walks the list: no crash
  other.lock();
  EXPECT_TRUE(other.held_by_this_thread());
  other.unlock();
  EXPECT_TRUE(robust_list_is_empty());
}

// --- recursive_mutex ------------------------------------------------------------------

TEST(RecursiveMutex, ReentersAndCountsLevels) {
  mproc::rlock r;  // Python's RLock
  static_assert(std::is_same_v<mproc::rlock, mproc::recursive_mutex>);
  r.lock();
  EXPECT_TRUE(r.try_lock());
  EXPECT_TRUE(r.acquire());
  EXPECT_TRUE(r.try_lock_for(1ms));
  bool other_got = true;
  on_other_thread([&] { other_got = r.try_lock(); });
  EXPECT_FALSE(other_got);
  r.release();
  r.release();
  r.unlock();
  on_other_thread([&] { other_got = r.try_lock(); });
  EXPECT_FALSE(other_got);  // one level left
  r.unlock();
  EXPECT_THROW(r.unlock(), mproc::error);
  on_other_thread([&] {
    other_got = r.try_lock();
    if (other_got) r.unlock();
  });
  EXPECT_TRUE(other_got);
}

TEST(RecursiveMutex, ReleaseByANonOwnerThrows) {
  mproc::recursive_mutex r;
  r.lock();
  r.lock();
  bool threw = false;
  on_other_thread([&] {
    try {
      r.release();
    } catch (const mproc::error&) {
      threw = true;
    }
  });
  EXPECT_TRUE(threw);
  EXPECT_TRUE(r.held_by_this_thread());
  r.unlock();
  r.unlock();
}

// --- semaphore ------------------------------------------------------------------------

TEST(Semaphore, CountsUnits) {
  mproc::semaphore s(2);
  EXPECT_EQ(s.get_value(), 2);
  s.acquire();
  EXPECT_TRUE(s.try_acquire());
  EXPECT_FALSE(s.try_acquire());
  EXPECT_EQ(s.get_value(), 0);
  s.release();
  EXPECT_EQ(s.get_value(), 1);
  s.release(3);
  EXPECT_EQ(s.get_value(), 4);
  EXPECT_EQ(mproc::semaphore().get_value(), 1);
  EXPECT_EQ(s.owner_deaths(), 0U);
}

TEST(Semaphore, TryAcquireForHonoursItsTimeout) {
  mproc::semaphore s(0);
  for (const auto timeout : {0ms, 50ms, 200ms}) {
    const auto begin = clock_type::now();
    EXPECT_FALSE(s.try_acquire_for(timeout));
    const auto waited = clock_type::now() - begin;
    EXPECT_GE(waited, timeout);
    EXPECT_LT(waited, timeout + 2s);
  }
  EXPECT_FALSE(s.try_acquire_for(-5s));
  EXPECT_FALSE(s.try_acquire_until(clock_type::now() + 10ms));
  s.release();
  EXPECT_TRUE(s.try_acquire_for(1h));
}

TEST(Semaphore, ReleaseFromAnotherThreadWakesAWaiter) {
  mproc::semaphore s(0);
  std::thread releaser([s]() mutable {
    std::this_thread::sleep_for(20ms);
    s.release();
  });
  const auto begin = clock_type::now();
  EXPECT_TRUE(s.try_acquire_for(10s));
  EXPECT_LT(clock_type::now() - begin, 5s);
  releaser.join();
}

TEST(Semaphore, ManyThreadsNeverOvertake) {
  mproc::semaphore s(2);
  std::atomic<int> inside{0};
  std::atomic<int> most{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        s.acquire();
        const int now = ++inside;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        --inside;
        s.release();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(most.load(), 2);
  EXPECT_EQ(s.get_value(), 2);
}

TEST(BoundedSemaphore, ReleaseAboveTheInitialValueThrows) {
  mproc::bounded_semaphore s(2);
  EXPECT_THROW(s.release(), mproc::error);
  EXPECT_EQ(s.get_value(), 2);
  s.acquire();
  s.release();
  EXPECT_THROW(s.release(), mproc::error);
  s.acquire();
  s.acquire();
  EXPECT_THROW(s.release(3), mproc::error);
  EXPECT_EQ(s.get_value(), 0);
  s.release(2);
  EXPECT_EQ(s.get_value(), 2);
  mproc::semaphore& base = s;  // a bounded_semaphore is a semaphore, and stays bounded
  EXPECT_THROW(base.release(), mproc::error);
}

// --- event ----------------------------------------------------------------------------

TEST(Event, SetClearWait) {
  mproc::event e;
  EXPECT_FALSE(e.is_set());
  const auto begin = clock_type::now();
  EXPECT_FALSE(e.wait(50ms));
  EXPECT_GE(clock_type::now() - begin, 50ms);
  e.set();
  EXPECT_TRUE(e.is_set());
  EXPECT_TRUE(e.wait(0ms));
  e.wait();
  e.set();  // twice is fine
  e.clear();
  EXPECT_FALSE(e.is_set());
  EXPECT_FALSE(e.wait(1ms));
  EXPECT_EQ(e.owner_deaths(), 0U);
}

TEST(Event, SetFromAnotherThreadWakesEveryWaiter) {
  mproc::event e;
  std::atomic<int> woken{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < 3; ++i) {
    waiters.emplace_back([&] {
      if (e.wait(10s)) ++woken;
    });
  }
  e.set();
  for (auto& t : waiters) t.join();
  EXPECT_EQ(woken.load(), 3);
}

TEST(Event, AWaiterWokenBySetReturnsTrueEvenIfClearedAtOnce) {
  mproc::event e;
  mproc::event waiting;
  std::atomic<bool> result{false};
  std::thread waiter([&] { result = e.wait(10s); });
  // The waiter is waiting once its wait began; give it the set+clear pulse until it returns.
  ASSERT_TRUE(eventually([&] {
    e.set();
    e.clear();
    return result.load();
  }));
  waiter.join();
  EXPECT_TRUE(result.load());
  EXPECT_FALSE(e.is_set());
}

// --- condition ------------------------------------------------------------------------

TEST(Condition, WaitAndNotifyWithoutTheLockThrow) {
  mproc::condition c;
  EXPECT_THROW(c.wait(), mproc::error);
  EXPECT_THROW((void)c.wait_for(1ms), mproc::error);
  EXPECT_THROW(c.notify(), mproc::error);
  EXPECT_THROW(c.notify_all(), mproc::error);
  std::lock_guard guard(c);
  c.notify();  // nobody waits: nothing happens
  c.notify_all();
}

TEST(Condition, WaitForTimesOutHoldingTheLockAgain) {
  mproc::condition c;
  std::unique_lock lock(c);
  const auto begin = clock_type::now();
  EXPECT_FALSE(c.wait_for(50ms));
  EXPECT_GE(clock_type::now() - begin, 50ms);
  EXPECT_FALSE(c.wait_until(std::chrono::system_clock::now() + 5ms));
  // Still held: another thread cannot take it.
  bool other_got = true;
  on_other_thread([&] { other_got = c.try_lock(); });
  EXPECT_FALSE(other_got);
}

TEST(Condition, NotifyWakesAWaiterWithItsPredicate) {
  mproc::condition c;
  bool ready = false;
  std::thread waiter([&] {
    std::unique_lock lock(c);
    c.wait([&] { return ready; });
  });
  {
    std::lock_guard guard(c);
    ready = true;
    c.notify();
  }
  waiter.join();
  std::unique_lock lock(c);
  EXPECT_TRUE(c.wait_for(1s, [&] { return ready; }));
  EXPECT_FALSE(c.wait_for(20ms, [] { return false; }));
}

TEST(Condition, NotifyTwoWakesExactlyTwoInArrivalOrder) {
  mproc::condition c;
  int waiting = 0;
  std::vector<int> woken;
  std::vector<std::thread> waiters;
  for (int i = 0; i < 5; ++i) {
    // One at a time, so that arrival order is i's order.
    waiters.emplace_back([&, i] {
      std::unique_lock lock(c);
      ++waiting;
      if (c.wait_for(10s)) woken.push_back(i);
    });
    ASSERT_TRUE(eventually([&] {
      std::lock_guard guard(c);
      return waiting == i + 1;
    }));
  }
  {
    std::lock_guard guard(c);
    c.notify(2);
  }
  ASSERT_TRUE(eventually([&] {
    std::lock_guard guard(c);
    return woken.size() == 2;
  }));
  {
    std::lock_guard guard(c);
    // The two that waited longest; they may take the lock back in either order.
    EXPECT_EQ(std::set<int>(woken.begin(), woken.end()), (std::set<int>{0, 1}));
    c.notify_all();
  }
  for (auto& t : waiters) t.join();
  EXPECT_EQ(woken.size(), 5U);
}

TEST(Condition, OverARecursiveLockRestoresItsLevels) {
  mproc::recursive_mutex r;
  mproc::condition c(r);
  std::thread notifier;
  {
    std::lock_guard one(r);
    std::lock_guard two(c);  // the same lock, level 2
    notifier = std::thread([&] {
      std::lock_guard guard(r);  // only possible once wait released both levels
      c.notify();
    });
    EXPECT_TRUE(c.wait_for(10s));
    EXPECT_TRUE(r.held_by_this_thread());
  }
  EXPECT_FALSE(r.held_by_this_thread());  // both levels released by the guards
  notifier.join();
}

TEST(Condition, OverAMutex) {
  mproc::mutex m;
  mproc::condition c(m);
  std::unique_lock lock(m);
  EXPECT_FALSE(c.wait_for(1ms));
  EXPECT_TRUE(m.held_by_this_thread());
}

TEST(Condition, HundredsOfWaitersOutgrowTheFirstPageOfSlots) {
  // The first page of a condition holds 56 waiter slots; more make its memfd grow.
  constexpr int waiters = 150;
  mproc::condition c;
  int waiting = 0;
  int woken = 0;
  std::vector<std::thread> threads;
  for (int i = 0; i < waiters; ++i) {
    threads.emplace_back([&] {
      std::unique_lock lock(c);
      ++waiting;
      if (c.wait_for(30s)) ++woken;
    });
  }
  ASSERT_TRUE(eventually([&] {
    std::lock_guard guard(c);
    return waiting == waiters;
  }));
  {
    std::lock_guard guard(c);
    c.notify(100);
  }
  ASSERT_TRUE(eventually([&] {
    std::lock_guard guard(c);
    return woken == 100;
  }));
  {
    std::lock_guard guard(c);
    c.notify_all();
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(woken, waiters);
}

// --- barrier --------------------------------------------------------------------------

TEST(Barrier, ReleasesPartiesWithDistinctIndices) {
  mproc::barrier b(3);
  EXPECT_EQ(b.parties(), 3U);
  EXPECT_THROW(mproc::barrier(0), mproc::error);
  for (int cycle = 0; cycle < 50; ++cycle) {
    std::vector<std::size_t> indices(3);
    std::vector<std::thread> threads;
    for (int i = 0; i < 3; ++i) threads.emplace_back([&, i] { indices[i] = b.wait(10s); });
    for (auto& t : threads) t.join();
    EXPECT_EQ(std::set<std::size_t>(indices.begin(), indices.end()), (std::set<std::size_t>{0, 1, 2}));
  }
  EXPECT_FALSE(b.broken());
  EXPECT_EQ(b.n_waiting(), 0U);
}

TEST(Barrier, ManyPartiesOutgrowTheFirstPageOfSlots) {
  constexpr int parties = 120;
  mproc::barrier b(parties);
  for (int cycle = 0; cycle < 3; ++cycle) {
    std::vector<std::thread> threads;
    std::atomic<int> passed{0};
    for (int i = 0; i < parties; ++i) {
      threads.emplace_back([&] {
        b.wait(30s);
        ++passed;
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(passed.load(), parties);
  }
}

TEST(Barrier, ActionRunsOncePerCycleInTheLastArrival) {
  std::atomic<int> runs{0};
  mproc::barrier b(2, [&] { ++runs; });
  for (int cycle = 0; cycle < 10; ++cycle) {
    std::thread other([&] { b.wait(); });
    b.wait();
    other.join();
  }
  EXPECT_EQ(runs.load(), 10);
}

TEST(Barrier, TimeoutBreaksItForEveryWaiter) {
  mproc::barrier b(3);
  std::atomic<int> broken{0};
  std::thread patient([&] {
    try {
      b.wait(10s);
    } catch (const mproc::broken_barrier&) {
      ++broken;
    }
  });
  ASSERT_TRUE(eventually([&] { return b.n_waiting() == 1; }));
  const auto begin = clock_type::now();
  EXPECT_THROW(b.wait(50ms), mproc::broken_barrier);
  EXPECT_GE(clock_type::now() - begin, 50ms);
  patient.join();
  EXPECT_EQ(broken.load(), 1);
  EXPECT_TRUE(b.broken());
  EXPECT_THROW(b.wait(), mproc::broken_barrier);  // stays broken
  b.reset();
  EXPECT_FALSE(b.broken());
  std::thread a([&] { b.wait(); }), c([&] { b.wait(); });
  b.wait();
  a.join();
  c.join();
}

TEST(Barrier, AbortAndReset) {
  mproc::barrier b(2);
  std::atomic<bool> broke{false};
  std::thread waiter([&] {
    try {
      b.wait();
    } catch (const mproc::broken_barrier&) {
      broke = true;
    }
  });
  ASSERT_TRUE(eventually([&] { return b.n_waiting() == 1; }));
  b.abort();
  waiter.join();
  EXPECT_TRUE(broke.load());
  EXPECT_TRUE(b.broken());
  EXPECT_THROW(b.wait(), mproc::broken_barrier);
  b.reset();
  EXPECT_FALSE(b.broken());
  // reset() with a waiter: the waiter gets broken_barrier, the barrier is usable after.
  broke = false;
  std::thread waiter2([&] {
    try {
      b.wait();
    } catch (const mproc::broken_barrier&) {
      broke = true;
    }
  });
  ASSERT_TRUE(eventually([&] { return b.n_waiting() == 1; }));
  b.reset();
  waiter2.join();
  EXPECT_TRUE(broke.load());
  EXPECT_FALSE(b.broken());
  std::thread other([&] { b.wait(); });
  b.wait();
  other.join();
}

TEST(Barrier, AThrowingActionBreaksItAndRethrowsInTheLastArrival) {
  mproc::barrier b(2, [] { throw std::runtime_error("action failed"); });
  std::atomic<bool> broke{false};
  std::thread waiter([&] {
    try {
      b.wait(10s);
    } catch (const mproc::broken_barrier&) {
      broke = true;
    }
  });
  ASSERT_TRUE(eventually([&] { return b.n_waiting() == 1; }));
  EXPECT_THROW(b.wait(), std::runtime_error);
  waiter.join();
  EXPECT_TRUE(broke.load());
  EXPECT_TRUE(b.broken());
}

// --- shared_value / shared_array ------------------------------------------------------

struct point {
  double x;
  double y;
};

TEST(SharedValue, HoldsATriviallyCopyableValue) {
  mproc::shared_value<int> v(7);
  EXPECT_EQ(v.value(), 7);
  v.value() = 8;
  EXPECT_EQ(v.get(), 8);
  v.set(9);
  EXPECT_EQ(v.value(), 9);
  mproc::shared_value<int> copy = v;
  ++copy.value();
  EXPECT_EQ(v.value(), 10);
  static_assert(std::is_same_v<decltype(v.get_lock()), mproc::recursive_mutex&>);
  {
    std::lock_guard guard(v.get_lock());
    EXPECT_TRUE(copy.get_lock().held_by_this_thread());  // one lock for every handle
    EXPECT_EQ(v.get(), 10);                              // get() re-enters it
  }
  mproc::shared_value<point> p({1.5, -2});
  EXPECT_EQ(p.value().x, 1.5);
  EXPECT_EQ(mproc::shared_value<double>().value(), 0.0);
  EXPECT_EQ(v.owner_deaths(), 0U);
}

TEST(SharedArray, IndexesIteratesAndChecks) {
  mproc::shared_array<int> a(5, 3);
  EXPECT_EQ(a.size(), 5U);
  for (int x : a) EXPECT_EQ(x, 3);
  a[4] = 9;
  EXPECT_EQ(a.at(4), 9);
  EXPECT_THROW((void)a.at(5), std::out_of_range);
  EXPECT_EQ(a.data() + 5, a.end());
  const mproc::shared_array<int>& c = a;
  EXPECT_EQ(c[4], 9);
  std::lock_guard guard(a.get_lock());
  EXPECT_TRUE(mproc::shared_array<char>().empty());
  mproc::shared_array<std::uint64_t> big(1 << 20);
  EXPECT_EQ(big[(1 << 20) - 1], 0U);
}

TEST(SharedArray, MadeFromARangeAsPythonsArrayOfARange) {
  const mproc::shared_array<int> a(mproc_test::generated(10, [](long long i) { return static_cast<int>(i); }));
  ASSERT_EQ(a.size(), 10U);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a[static_cast<std::size_t>(i)], i);
  const std::vector<double> values{0.5, 1.5};
  const mproc::shared_array<double> b(values);
  EXPECT_EQ(std::vector<double>(b.begin(), b.end()), values);
  const mproc::shared_array<int> copy(a);  // a copy of the handle, not a range
  EXPECT_EQ(copy.data(), a.data());
}

// --- handles as values ----------------------------------------------------------------

TEST(SyncHandles, RoundTripThroughBytesNamesTheSameObject) {
  mproc::mutex m;
  auto m2 = mproc::from_bytes<mproc::mutex>(mproc::to_bytes(m));
  m.lock();
  bool got = true;
  on_other_thread([&] { got = m2.try_lock(); });
  EXPECT_FALSE(got);
  EXPECT_TRUE(m2.held_by_this_thread());
  m2.unlock();

  mproc::semaphore s(0);
  auto s2 = mproc::from_bytes<mproc::semaphore>(mproc::to_bytes(s));
  s2.release();
  EXPECT_TRUE(s.try_acquire());

  mproc::event e;
  mproc::from_bytes<mproc::event>(mproc::to_bytes(e)).set();
  EXPECT_TRUE(e.is_set());

  mproc::condition c;
  auto c2 = mproc::from_bytes<mproc::condition>(mproc::to_bytes(c));
  {
    std::lock_guard guard(c);
    bool other = true;
    on_other_thread([&] { other = c2.try_lock(); });
    EXPECT_FALSE(other);
  }

  mproc::barrier b(2);
  auto b2 = mproc::from_bytes<mproc::barrier>(mproc::to_bytes(b));
  std::thread t([&] { b2.wait(10s); });
  b.wait(10s);
  t.join();

  mproc::shared_array<int> a(3, 1);
  auto a2 = mproc::from_bytes<mproc::shared_array<int>>(mproc::to_bytes(a));
  a2[2] = 42;
  EXPECT_EQ(a[2], 42);
  EXPECT_EQ(a2.size(), 3U);

  mproc::shared_value<long> v(5);
  auto v2 = mproc::from_bytes<mproc::shared_value<long>>(mproc::to_bytes(v));
  v2.set(6);
  EXPECT_EQ(v.get(), 6);
  auto lock_of_v = mproc::from_bytes<mproc::recursive_mutex>(mproc::to_bytes(v.get_lock()));
  std::lock_guard guard(lock_of_v);
  EXPECT_TRUE(v.get_lock().held_by_this_thread());
}

TEST(SyncHandles, AHandleOfAnotherKindIsRefused) {
  mproc::mutex m;
  mproc::recursive_mutex r;
  mproc::semaphore s;
  mproc::bounded_semaphore bs;
  mproc::shared_value<int> v;
  EXPECT_THROW((void)mproc::from_bytes<mproc::recursive_mutex>(mproc::to_bytes(m)), mproc::serialization_error);
  EXPECT_THROW((void)mproc::from_bytes<mproc::mutex>(mproc::to_bytes(r)), mproc::serialization_error);
  EXPECT_THROW((void)mproc::from_bytes<mproc::event>(mproc::to_bytes(m)), mproc::serialization_error);
  EXPECT_THROW((void)mproc::from_bytes<mproc::bounded_semaphore>(mproc::to_bytes(s)), mproc::serialization_error);
  EXPECT_NO_THROW((void)mproc::from_bytes<mproc::semaphore>(mproc::to_bytes(bs)));
  EXPECT_THROW((void)mproc::from_bytes<mproc::shared_value<double>>(mproc::to_bytes(v)), mproc::serialization_error);
  EXPECT_THROW((void)mproc::from_bytes<mproc::shared_value<int>>(mproc::to_bytes(mproc::shared_array<int>(2))),
               mproc::serialization_error);
  EXPECT_THROW((void)mproc::from_bytes<mproc::barrier>(mproc::to_bytes(mproc::condition())),
               mproc::serialization_error);
}

TEST(SyncHandles, ABarrierWithAnActionCannotBeSent) {
  mproc::barrier b(2, [] {});
  EXPECT_THROW((void)mproc::to_bytes(b), mproc::serialization_error);
}

// --- errors ---------------------------------------------------------------------------

template <class Call>
std::string what_of(Call call) {
  return mproc_test::what_of<std::exception>(call);
}

// The house voice (CONTRIBUTING.md), "mproc::<type>::<call>: <what happened>; <what to
// do>": the public type and the member called, never the internal class that threw.
TEST(SyncErrors, NameThePublicTypeAndTheCall) {
  using ::testing::HasSubstr;
  using ::testing::StartsWith;
  mproc::mutex m;
  EXPECT_THAT(what_of([&] { m.unlock(); }), StartsWith("mproc::mutex::unlock: this thread does not hold the lock"));
  m.lock();
  EXPECT_THAT(what_of([&] { m.lock(); }), StartsWith("mproc::mutex::lock: this thread already holds the lock"));
  m.unlock();
  mproc::recursive_mutex r;
  EXPECT_THAT(what_of([&] { r.release(); }), StartsWith("mproc::recursive_mutex::unlock: "));
  mproc::bounded_semaphore bs(1);
  EXPECT_THAT(what_of([&] { bs.release(); }), StartsWith("mproc::bounded_semaphore::release: "));
  EXPECT_THAT(what_of([] { mproc::semaphore s(1U << 31); }), StartsWith("mproc::semaphore::semaphore: "));
  mproc::condition c;
  EXPECT_THAT(what_of([&] { c.wait(); }), StartsWith("mproc::condition::wait: this thread does not hold"));
  EXPECT_THAT(what_of([&] { c.notify_all(); }), StartsWith("mproc::condition::notify: "));
  EXPECT_THAT(what_of([&] { c.release(); }), StartsWith("mproc::condition::unlock: this thread does not hold"));
  mproc::condition over_m(m);
  over_m.lock();
  EXPECT_THAT(what_of([&] { over_m.lock(); }), StartsWith("mproc::condition::lock: this thread already holds"));
  over_m.unlock();
  EXPECT_THAT(what_of([] { mproc::barrier b(0); }), StartsWith("mproc::barrier::barrier: "));
  mproc::barrier b(2);
  b.abort();
  EXPECT_THAT(what_of([&] { b.wait(); }), StartsWith("mproc::barrier::wait: the barrier is broken; reset()"));
  mproc::shared_array<int> a(2);
  EXPECT_THAT(what_of([&] { (void)a.at(2); }), StartsWith("mproc::shared_array::at: index 2 "));
  // A handle's errors name the load or save of the type received into, inside from_bytes'.
  EXPECT_THAT(what_of([&] { (void)mproc::from_bytes<mproc::mutex>(mproc::to_bytes(r)); }),
              HasSubstr("mproc::mutex::load: the handle received names an mproc::recursive_mutex; receive it "
                        "into an mproc::recursive_mutex"));
  EXPECT_THAT(what_of([&] { (void)mproc::from_bytes<mproc::event>(mproc::to_bytes(m)); }),
              HasSubstr("mproc::event::load: the handle received names an mproc::mutex, not an mproc::event"));
  EXPECT_THAT(what_of([&] { (void)mproc::from_bytes<mproc::shared_value<double>>(mproc::to_bytes(a)); }),
              HasSubstr("mproc::shared_value::load: the handle received names one of another element type"));
  EXPECT_THAT(what_of([] { (void)mproc::to_bytes(mproc::barrier(2, [] {})); }),
              HasSubstr("mproc::barrier::save: a barrier with an action cannot be sent"));
}

TEST(SyncHandles, LeaveNoDescriptorAndNothingInDevShm) {
  const auto shm_before = dev_shm_entries_but_named_shm();
  const int fds_before = count_open_fds();
  for (int i = 0; i < 20; ++i) {
    mproc::mutex m;
    mproc::recursive_mutex r;
    mproc::semaphore s;
    mproc::bounded_semaphore bs;
    mproc::event e;
    mproc::condition c;
    mproc::condition cm(m);
    mproc::barrier b(2);
    mproc::shared_value<int> v;
    mproc::shared_array<double> a(100);
    auto m2 = mproc::from_bytes<mproc::mutex>(mproc::to_bytes(m));
    auto c2 = mproc::from_bytes<mproc::condition>(mproc::to_bytes(c));
    std::lock_guard guard(c2);
    (void)c2.wait_for(0ms);
  }
  EXPECT_EQ(count_open_fds(), fds_before);
  EXPECT_EQ(dev_shm_entries_but_named_shm(), shm_before);
}

}  // namespace
