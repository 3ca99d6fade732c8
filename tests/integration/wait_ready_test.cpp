// mproc::wait_ready (multiprocessing.connection.wait) over every kind of waitable, alone and
// mixed, with real processes on the other side: a message, a put, a set, a result, an end;
// a peer killed while waited on; timeouts; EINTR; misuse. What makes an object ready is
// done by another process or thread after the wait began (or might have: the results
// never depend on which came first).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/types.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "mproc/forkserver.hpp"
#include "mproc/pipe.hpp"
#include "mproc/pool.hpp"
#include "mproc/process.hpp"
#include "mproc/queue.hpp"
#include "mproc/sync.hpp"
#include "mproc/wait.hpp"

namespace {

using namespace std::chrono_literals;
using indices = std::vector<std::size_t>;

int hold(mproc::event go, int x) {
  go.wait();
  return x;
}
int die_when(mproc::event go) {
  go.wait();
  ::raise(SIGKILL);
  return 0;
}

TEST(WaitReady, NothingReadyReturnsEmptyAfterTheTimeout) {
  auto [a, b] = mproc::pipe();
  mproc::queue<int> q;
  mproc::event e;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(mproc::wait_ready({a, q, e}, 50ms), indices{});
  EXPECT_GE(std::chrono::steady_clock::now() - start, 50ms);
  EXPECT_EQ(mproc::wait_ready({a, q, e}, 0ms), indices{});
}

std::chrono::nanoseconds thread_cpu_time() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

TEST(WaitReady, AWaitSleepsInsteadOfSpinning) {
  auto [a, b] = mproc::pipe();
  mproc::queue<int> q;
  mproc::event e;
  const auto cpu_before = thread_cpu_time();
  EXPECT_EQ(mproc::wait_ready({a, q, e}, 500ms), indices{});
  EXPECT_EQ(mproc::wait_ready({q, e}, 500ms), indices{});
  EXPECT_LT(thread_cpu_time() - cpu_before, 200ms);  // a busy loop would take about 1 s
}

TEST(WaitReady, ReturnsEveryReadyObjectInAscendingOrder) {
  auto [a1, b1] = mproc::pipe();
  auto [a2, b2] = mproc::pipe();
  mproc::queue<int> q1;
  mproc::queue<int> q2;
  mproc::event e;
  b2.send(1);
  q2.put(7);
  e.set();
  EXPECT_EQ(mproc::wait_ready({a1, a2, q1, q2, e}), (indices{1, 3, 4}));
  EXPECT_EQ(mproc::wait_ready({a1, q1}, 0ms), indices{});
}

TEST(WaitReady, AConnectionIsReadyWhenAnotherProcessSends) {
  auto [mine, theirs] = mproc::pipe();
  auto [other, other_peer] = mproc::pipe();
  mproc::event waiting;
  mproc::process p(
      [waiting](mproc::connection c) mutable {
        waiting.wait();
        c.send(std::string("hello"));
      },
      std::move(theirs));
  p.start();
  waiting.set();
  EXPECT_EQ(mproc::wait_ready({other, mine}), indices{1});
  EXPECT_EQ(mine.recv<std::string>(), "hello");
  p.join();
}

TEST(WaitReady, AConnectionWhosePeerIsKilledIsReadyAndRecvSaysClosed) {
  auto [mine, theirs] = mproc::pipe();
  mproc::process p([](mproc::connection c) { c.recv<int>(); }, std::move(theirs));
  p.start();
  std::thread killer([&p] { p.kill(); });
  EXPECT_EQ(mproc::wait_ready({mine}), indices{0});
  EXPECT_THROW(mine.recv<int>(), mproc::closed_error);
  killer.join();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGKILL);
}

TEST(WaitReady, AProcessIsReadyWhenItEndsAndStaysUnreaped) {
  mproc::event go;
  mproc::process p([go]() mutable { go.wait(); });
  p.start();
  auto [a, b] = mproc::pipe();
  EXPECT_EQ(mproc::wait_ready({a, p}, 0ms), indices{});
  go.set();
  EXPECT_EQ(mproc::wait_ready({a, p}), indices{1});
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(WaitReady, AForkserverChildIsReadyOnceItsStatusHasCome) {
  mproc::event go;
  mproc::process p(
      mproc::forkserver,
      [](mproc::event e, int code) {
        e.wait();
        std::exit(code);
      },
      go, 3);
  p.start();
  mproc::queue<int> q;
  EXPECT_EQ(mproc::wait_ready({q, p}, 0ms), indices{});
  go.set();
  EXPECT_EQ(mproc::wait_ready({q, p}), indices{1});
  EXPECT_EQ(p.exitcode(), 3);
}

TEST(WaitReady, AProcessKilledWhileWaitedOnIsReady) {
  mproc::event never;
  mproc::process p([never]() mutable { never.wait(); });
  p.start();
  mproc::queue<int> q;
  std::thread killer([&p] { p.kill(); });
  EXPECT_EQ(mproc::wait_ready({q, p}), indices{1});
  killer.join();
  EXPECT_EQ(p.exitcode(), -SIGKILL);
}

TEST(WaitReady, AQueueIsReadyWhenAnotherProcessPuts) {
  mproc::queue<int> q;
  mproc::queue<int> other;
  mproc::event waiting;
  mproc::process p([q, waiting]() mutable {
    waiting.wait();
    std::this_thread::sleep_for(20ms);  // usually after the wait sleeps; either way it must work
    q.put(42);
  });
  p.start();
  waiting.set();
  EXPECT_EQ(mproc::wait_ready({other, q}), indices{1});
  EXPECT_EQ(q.get(), 42);
  p.join();
}

TEST(WaitReady, AProducerKilledWhileTheQueueIsWaitedOnLeavesItEmpty) {
  mproc::queue<int> q;
  mproc::event never;
  mproc::process p([never]() mutable { never.wait(); });
  p.start();
  std::thread killer([&p] { p.kill(); });
  EXPECT_EQ(mproc::wait_ready({q, p}), indices{1});
  killer.join();
  EXPECT_EQ(mproc::wait_ready({q}, 0ms), indices{});
}

TEST(WaitReady, AGetAsleepBesideTheWaitStillGetsTheMessage) {
  mproc::queue<int> q;
  mproc::queue<int> got;
  mproc::process consumer([q, got]() mutable { got.put(q.get()); });
  consumer.start();
  std::thread producer([q]() mutable {
    std::this_thread::sleep_for(20ms);
    q.put(5);
  });
  EXPECT_EQ(mproc::wait_ready({q, got}).empty(), false);
  producer.join();
  EXPECT_EQ(got.get(10s), 5);  // the consumer got it, whoever the put woke
  consumer.join();
  EXPECT_EQ(consumer.exitcode(), 0);
}

TEST(WaitReady, ManyWaitersOnOneQueueAllSeeOnePut) {
  mproc::queue<int> q;
  constexpr int waiters = 8;
  std::atomic<int> returned{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < waiters; ++i) {
    threads.emplace_back([&] {
      if (mproc::wait_ready({q}) == indices{0}) ++returned;
    });
  }
  mproc::process p([q]() mutable { q.put(1); });
  p.start();
  for (auto& t : threads) t.join();
  EXPECT_EQ(returned.load(), waiters);
  p.join();
}

TEST(WaitReady, AnEventIsReadyWhenAnotherProcessSetsIt) {
  mproc::event e;
  mproc::event waiting;
  mproc::queue<int> q;
  mproc::process p([e, waiting]() mutable {
    waiting.wait();
    e.set();
  });
  p.start();
  waiting.set();
  EXPECT_EQ(mproc::wait_ready({q, e}), indices{1});
  p.join();
}

TEST(WaitReady, AnAsyncResultIsReadyWhenItsTaskEnds) {
  mproc::pool pool(2);
  mproc::event go;
  auto slow = pool.apply_async(hold, go, 3);
  auto [a, b] = mproc::pipe();
  EXPECT_EQ(mproc::wait_ready({a, slow}, 0ms), indices{});
  go.set();
  EXPECT_EQ(mproc::wait_ready({a, slow}), indices{1});
  EXPECT_EQ(slow.get(), 3);
}

TEST(WaitReady, AWorkerKilledWhileItsResultIsWaitedOnGivesAReadyResult) {
  mproc::pool pool(1);
  mproc::event go;
  auto doomed = pool.apply_async(die_when, go);
  mproc::queue<int> q;
  std::thread trigger([go]() mutable { go.set(); });
  EXPECT_EQ(mproc::wait_ready({q, doomed}), indices{1});
  trigger.join();
  EXPECT_THROW(doomed.get(), mproc::worker_lost);
}

TEST(WaitReady, AMixtureWakesForWhicheverComesFirst) {
  auto [conn, conn_peer] = mproc::pipe();
  mproc::queue<int> q;
  mproc::event e;
  mproc::event go_process;
  mproc::event go_result;
  mproc::process p([go_process]() mutable { go_process.wait(); });
  p.start();
  mproc::pool pool(1);
  auto r = pool.apply_async(hold, go_result, 1);

  mproc::process putter([q]() mutable { q.put(1); });
  putter.start();
  EXPECT_EQ(mproc::wait_ready({conn, q, e, p, r}), indices{1});
  q.get();

  mproc::process sender([c = std::move(conn_peer)]() mutable { c.send(9); });
  sender.start();
  EXPECT_EQ(mproc::wait_ready({conn, q, e, p, r}), indices{0});
  conn.recv<int>();

  go_result.set();
  EXPECT_EQ(mproc::wait_ready({conn, q, e, p, r}), indices{4});
  go_process.set();
  p.join();
  EXPECT_EQ(mproc::wait_ready({conn, q, e, p, r}), (indices{3, 4}));
  e.set();
  EXPECT_EQ(mproc::wait_ready({conn, q, e, p, r}), (indices{2, 3, 4}));
  putter.join();
  sender.join();
}

TEST(WaitReady, MoreObjectsThanOneFutexWaitTakesAreAllWatched) {
  // 199 events, then a queue: past the 127 words one futex_waitv takes. Events, not 200
  // queues: a queue reserves 64 GiB of address space, more than ThreadSanitizer leaves.
  std::vector<mproc::event> events(199);
  mproc::queue<int> q;
  std::vector<mproc::waitable> objects(events.begin(), events.end());
  objects.emplace_back(q);
  mproc::process p([q]() mutable { q.put(1); });
  p.start();
  EXPECT_EQ(mproc::wait_ready(objects), indices{199});
  p.join();
  mproc::process setter([e = events[150]]() mutable { e.set(); });
  setter.start();
  q.get();
  EXPECT_EQ(mproc::wait_ready(objects), indices{150});
  setter.join();
}

TEST(WaitReady, ManyPipesFromOneProcess) {
  constexpr std::size_t n = 64;
  std::vector<mproc::connection> readers;
  std::vector<mproc::connection> writers;
  for (std::size_t i = 0; i < n; ++i) {
    auto [r, w] = mproc::pipe(false);
    readers.push_back(std::move(r));
    writers.push_back(std::move(w));
  }
  mproc::process p(
      [](std::vector<mproc::connection>& ws) {
        for (int round = 0; round < 3; ++round) {
          for (std::size_t i = n; i-- > 0;) ws[i].send(static_cast<int>(i));
        }
      },
      std::ref(writers));
  p.start();
  for (auto& w : writers) w.close();
  // As Python's documentation of connection.wait does it: read whatever is ready, and drop
  // an end once its peer has closed and it is drained.
  std::vector<std::size_t> live;
  for (std::size_t i = 0; i < n; ++i) live.push_back(i);
  std::vector<int> counts(n, 0);
  while (!live.empty()) {
    std::vector<mproc::waitable> objects;
    for (std::size_t i : live) objects.emplace_back(readers[i]);
    const indices ready = mproc::wait_ready(objects, 10s);
    ASSERT_FALSE(ready.empty());
    std::vector<std::size_t> drained;
    for (std::size_t k : ready) {
      const std::size_t i = live[k];
      try {
        EXPECT_EQ(readers[i].recv<int>(), static_cast<int>(i));
        ++counts[i];
      } catch (const mproc::closed_error&) {
        drained.push_back(i);
      }
    }
    std::erase_if(live, [&](std::size_t i) { return std::find(drained.begin(), drained.end(), i) != drained.end(); });
  }
  for (int c : counts) EXPECT_EQ(c, 3);
  p.join();
}

void on_usr1(int) {}

TEST(WaitReady, SignalsNeitherEndTheWaitEarlyNorStretchIt) {
  struct sigaction action {};
  action.sa_handler = on_usr1;  // no SA_RESTART: every blocking call sees EINTR
  struct sigaction old {};
  ASSERT_EQ(::sigaction(SIGUSR1, &action, &old), 0);
  auto [a, b] = mproc::pipe();
  mproc::queue<int> q;
  std::atomic<bool> done{false};
  const pthread_t waiter = ::pthread_self();
  std::thread pester([&] {
    while (!done.load()) {
      ::pthread_kill(waiter, SIGUSR1);
      std::this_thread::sleep_for(2ms);
    }
  });
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(mproc::wait_ready({a, q}, 100ms), indices{});
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, 100ms);
  EXPECT_LT(waited, 5s);
  EXPECT_EQ(mproc::wait_ready({a}, 50ms), indices{});
  std::thread sender([b = std::move(b)]() mutable {
    std::this_thread::sleep_for(30ms);
    b.send(1);
  });
  EXPECT_EQ(mproc::wait_ready({q, a}), indices{1});
  done = true;
  pester.join();
  sender.join();
  ::sigaction(SIGUSR1, &old, nullptr);
}

TEST(WaitReady, MisuseThrowsClearErrors) {
  EXPECT_THROW(mproc::wait_ready(std::span<const mproc::waitable>{}), mproc::error);
  EXPECT_EQ(mproc::wait_ready(std::span<const mproc::waitable>{}, 1ms), indices{});
  auto [reader, writer] = mproc::pipe(false);
  EXPECT_THROW(mproc::wait_ready({writer}, 0ms), mproc::error);
  reader.close();
  EXPECT_THROW(mproc::wait_ready({reader}, 0ms), mproc::closed_error);
  mproc::process unstarted([] {});
  EXPECT_THROW(mproc::wait_ready({unstarted}, 0ms), mproc::error);
  mproc::queue<int> q;
  q.close();
  EXPECT_THROW(mproc::wait_ready({q}, 0ms), mproc::closed_error);
}

}  // namespace
