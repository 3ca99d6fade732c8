// Reproductions of what the kill storm's analysis found about wakeups, kept as regression
// tests: a waiter that a release woke, SIGKILLed before it used the wakeup, must not leave
// the other waiters asleep beside a message (or a semaphore unit) that is there to take.
//
// How each round works: waiter A goes to sleep, then waiter B (the kernel wakes a futex's
// sleepers in the order they slept, so one put or release wakes A). The test puts (or
// releases) once and SIGKILLs A at once, which usually lands before A, just woken, has
// taken anything. B must then get it within a second or two. Rounds where A was faster
// prove nothing and are skipped; most rounds are not.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <optional>
#include <thread>

#include "mproc/process.hpp"
#include "mproc/queue.hpp"
#include "mproc/sync.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;

// The child is asleep (state S) and stays so: it has gone past its spin into the futex.
bool asleep(mproc::process& p) {
  const pid_t pid = p.pid().value();
  return mproc_test::eventually(
      [&] {
        auto st = mproc_test::read_proc_stat(pid);
        if (!st || st->state != 'S') return false;
        std::this_thread::sleep_for(20ms);
        st = mproc_test::read_proc_stat(pid);
        return st && st->state == 'S';
      },
      10s);
}

struct tally {
  int exercised = 0;  // rounds where A died before taking it
  int stranded = 0;   // ... and B did not get it in time
  std::string detail;
};

// `wait_then_report(tag)` is the body of a waiter: it blocks, then reports `tag` on `who`.
// `hand_one()` makes one unit available (a put, a release); `available()` says whether it
// still is (A may have taken it and died before reporting).
tally run_rounds(int rounds, const std::function<void(mproc::queue<int>, int)>& wait_then_report,
                 const std::function<void()>& hand_one, const std::function<bool()>& available,
                 const std::function<void()>& reset) {
  tally t;
  for (int round = 0; round < rounds; ++round) {
    reset();
    mproc::queue<int> who;
    mproc::process a([&wait_then_report, who] { wait_then_report(who, 1); });
    mproc::process b([&wait_then_report, who] { wait_then_report(who, 2); });
    a.set_daemon(true);
    b.set_daemon(true);
    a.start();
    EXPECT_TRUE(asleep(a));
    b.start();
    EXPECT_TRUE(asleep(b));
    hand_one();
    a.kill();
    a.join();
    const auto first = who.try_get_for(3s);
    if (first == 2) {  // A died without it; B got it
      ++t.exercised;
      b.join();
      continue;
    }
    if (first == 1 || !available()) {  // A took it before the kill landed (and maybe reported)
      b.kill();
      b.join();
      continue;
    }
    // A died without it, and B sleeps on beside it.
    ++t.exercised;
    ++t.stranded;
    std::string wchan;
    std::ifstream("/proc/" + std::to_string(*b.pid()) + "/wchan") >> wchan;
    t.detail += "  round " + std::to_string(round) + ": the other waiter (pid " + std::to_string(*b.pid()) +
                ") still sleeps in " + wchan + "\n";
    b.kill();
    b.join();
  }
  return t;
}

// A consumer killed right after its wakeup leaves the message to the next.
TEST(LostWakeup, AConsumerKilledOnWakeupLeavesTheMessageToTheNext) {
  std::optional<mproc::queue<int>> q;
  const tally t = run_rounds(
      8,
      [&q](mproc::queue<int> who, int tag) {
        (void)q->get();
        who.put(tag);
      },
      [&q] { q->put(7); }, [&q] { return q->qsize() == 1; }, [&q] { q.emplace(); });
  EXPECT_GE(t.exercised, 1) << "the kill never landed between the wakeup and the take";
  EXPECT_EQ(t.stranded, 0) << "of " << t.exercised
                           << " rounds where the woken consumer died, the message stayed in the queue while "
                              "the other consumer slept on\n"
                           << t.detail;
}

// A producer killed right after its wakeup leaves the room to the next.
TEST(LostWakeup, AProducerKilledOnWakeupLeavesTheRoomToTheNext) {
  std::optional<mproc::queue<int>> q;
  const tally t = run_rounds(
      8,
      [&q](mproc::queue<int> who, int tag) {
        q->put(tag);
        who.put(tag);
      },  // blocks: the queue is full
      [&q] { (void)q->get(); }, [&q] { return q->qsize() == 0; },
      [&q] {
        q.emplace(1);
        q->put(0);
      });
  EXPECT_GE(t.exercised, 1) << "the kill never landed between the wakeup and the put";
  EXPECT_EQ(t.stranded, 0) << "of " << t.exercised
                           << " rounds where the woken producer died, the queue had room while the other "
                              "producer slept on\n"
                           << t.detail;
}

// A semaphore waiter killed right after its wakeup leaves the unit to the next.
TEST(LostWakeup, ASemaphoreWaiterKilledOnWakeupLeavesTheUnit) {
  std::optional<mproc::semaphore> s;
  const tally t = run_rounds(
      8,
      [&s](mproc::queue<int> who, int tag) {
        s->acquire();
        who.put(tag);
      },
      [&s] { s->release(); }, [&s] { return s->get_value() == 1; }, [&s] { s.emplace(0); });
  EXPECT_GE(t.exercised, 1) << "the kill never landed between the wakeup and the acquire";
  EXPECT_EQ(t.stranded, 0) << "of " << t.exercised
                           << " rounds where the woken waiter died, a unit stayed free while the other waiter "
                              "slept on\n"
                           << t.detail;
}

}  // namespace
