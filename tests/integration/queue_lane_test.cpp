// The queue's lanes (src/channel.cpp) with real processes and threads: every producing
// process writes a lane of its own, which its threads share; producers beyond the lanes
// share one; a lane whose producer died, even mid-write, is taken over with what it
// published intact.
#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ipc/channel_state.hpp"
#include "mproc/process.hpp"
#include "mproc/queue.hpp"
#include "mproc/sync.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using tagged = std::pair<std::uint32_t, std::uint32_t>;  // (producer, its sequence number)

// A queue whose channel the test reads counters of.
template <class T>
struct inspected_queue : mproc::queue<T> {
  using mproc::queue<T>::queue;
  using mproc::queue<T>::channel;
};

// The size of this process's queue memfd (the test's only queue), 0 if there is none.
std::size_t queue_file_bytes() {
  std::size_t largest = 0;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  while (const dirent* e = ::readdir(dir)) {
    const std::string path = std::string("/proc/self/fd/") + e->d_name;
    char target[256] = {};
    const ssize_t n = ::readlink(path.c_str(), target, sizeof target - 1);
    if (n <= 0 || std::string(target, static_cast<std::size_t>(n)).find("memfd:mproc-queue") == std::string::npos) {
      continue;
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) largest = std::max(largest, static_cast<std::size_t>(st.st_size));
  }
  ::closedir(dir);
  return largest;
}

// Receives `count` tagged messages and checks that each producer's arrive in its order.
void receive_in_producer_order(mproc::queue<tagged>& q, std::size_t count, std::size_t producers,
                               std::uint32_t per_producer) {
  std::map<std::uint32_t, std::uint32_t> next;
  for (std::size_t i = 0; i < count; ++i) {
    const tagged m = q.get(30s);
    ASSERT_LT(m.first, producers);
    ASSERT_EQ(m.second, next[m.first]) << "producer " << m.first << "'s messages out of order";
    ++next[m.first];
  }
  for (std::uint32_t p = 0; p < producers; ++p) EXPECT_EQ(next[p], per_producer) << "producer " << p;
  EXPECT_FALSE(q.try_get().has_value());
}

// 70 producers alive at once, more than the 63 lanes of their own: the others share one,
// and nothing is lost or reordered.
TEST(QueueLanes, ProducersBeyondTheLanesShareOneAndLoseNothing) {
  constexpr std::uint32_t producers = 70;
  constexpr std::uint32_t per_producer = 100;
  mproc::queue<tagged> q;
  mproc::event go;
  std::vector<mproc::process> children;
  children.reserve(producers);
  for (std::uint32_t p = 0; p < producers; ++p) {
    children.emplace_back([q, go, p]() mutable {
      q.put({p, 0});  // holds a lane (or the shared one) from here
      go.wait();
      for (std::uint32_t i = 1; i < per_producer; ++i) q.put({p, i});
    });
    children.back().start();
  }
  std::map<std::uint32_t, std::uint32_t> first;
  for (std::uint32_t i = 0; i < producers; ++i) {
    const tagged m = q.get(30s);
    ASSERT_EQ(m.second, 0u);
    first[m.first] = 1;
  }
  ASSERT_EQ(first.size(), producers);
  go.set();
  std::map<std::uint32_t, std::uint32_t> next = first;
  for (std::uint32_t i = producers; i < producers * per_producer; ++i) {
    const tagged m = q.get(30s);
    ASSERT_EQ(m.second, next[m.first]) << "producer " << m.first << "'s messages out of order";
    ++next[m.first];
  }
  for (auto& c : children) {
    c.join();
    EXPECT_EQ(c.exitcode(), 0);
  }
  EXPECT_FALSE(q.try_get().has_value());
  EXPECT_EQ(q.qsize(), 0u);
}

TEST(QueueLanes, ThreadsOfOneProducerEachKeepTheirOrder) {
  constexpr std::uint32_t threads = 8;
  constexpr std::uint32_t per_thread = 5000;
  mproc::queue<tagged> q(256);
  mproc::process producer([q]() mutable {
    std::vector<std::thread> pool;
    for (std::uint32_t t = 0; t < threads; ++t) {
      pool.emplace_back([q, t]() mutable {
        for (std::uint32_t i = 0; i < per_thread; ++i) q.put({t, i});
      });
    }
    for (auto& t : pool) t.join();
  });
  producer.start();
  receive_in_producer_order(q, std::size_t{threads} * per_thread, threads, per_thread);
  producer.join();
  EXPECT_EQ(producer.exitcode(), 0);
}

// 200 threads of one process, one after the other, use its one lane, not 63 (each lane
// holds a 64 KiB block of the file for good).
TEST(QueueLanes, ThreadsOfOneProcessShareItsLane) {
  mproc::queue<tagged> q;
  for (std::uint32_t t = 0; t < 200; ++t) {
    std::thread([q, t]() mutable { q.put({t, 0}); }).join();
  }
  for (std::uint32_t t = 0; t < 200; ++t) EXPECT_EQ(q.get(1s), (tagged{t, 0}));
  const std::size_t bytes = queue_file_bytes();
  ASSERT_NE(bytes, 0u) << "no queue memfd found in /proc/self/fd";
  EXPECT_LE(bytes, std::size_t{1} << 20) << "each thread took a lane of its own";
}

// What one process puts, from any of its threads, arrives in the order it was put, as with
// Python's Queue. Two long-lived threads A and B take turns putting (each put is made after
// the previous one returned); the consumer, whose next look after taking A's 1 and B's 2
// starts past A, must still see B's 3 before A's 4.
TEST(QueueLanes, PutsOfOneProcessKeepTheirOrderAcrossItsThreads) {
  mproc::queue<int> q;
  std::mutex m;
  std::condition_variable turn_changed;
  int turn = 0;  // which thread puts next: 1 for A, 2 for B, -1 to stop
  int value = 0;
  int done_puts = 0;
  const auto putter = [&](int me) {
    mproc::queue<int> mine = q;
    std::unique_lock lock(m);
    for (;;) {
      turn_changed.wait(lock, [&] { return turn == me || turn < 0; });
      if (turn < 0) return;
      mine.put(value);
      ++done_puts;
      turn = 0;
      turn_changed.notify_all();
    }
  };
  std::thread a(putter, 1);
  std::thread b(putter, 2);
  const auto put_on = [&](int who, int v) {
    std::unique_lock lock(m);
    const int before = done_puts;
    value = v;
    turn = who;
    turn_changed.notify_all();
    turn_changed.wait(lock, [&] { return done_puts == before + 1; });
  };
  for (int round = 0; round < 20; ++round) {
    const int base = round * 4;
    put_on(1, base + 1);
    put_on(2, base + 2);
    EXPECT_EQ(q.get(1s), base + 1);
    EXPECT_EQ(q.get(1s), base + 2);
    put_on(2, base + 3);
    put_on(1, base + 4);
    EXPECT_EQ(q.get(1s), base + 3);
    EXPECT_EQ(q.get(1s), base + 4);
  }
  {
    std::lock_guard lock(m);
    turn = -1;
  }
  turn_changed.notify_all();
  a.join();
  b.join();
}

// A put made after another returned, in another process, is taken after it: producers
// joined, then a stop message, which must come last (Python's pipe gives this order).
TEST(QueueLanes, APutMadeAfterAnotherReturnedIsTakenAfterIt) {
  // Producer p puts 300 (p + 1) messages. Producer 0 starts alone and so takes the first
  // lane, which the stop message, put once they all ended, then takes over: the lane with
  // the fewest messages, drained first by a consumer that took lanes in turn.
  constexpr std::uint32_t producers = 3;
  mproc::queue<tagged> q;
  std::vector<mproc::process> children;
  std::uint32_t total = 0;
  for (std::uint32_t p = 0; p < producers; ++p) {
    const std::uint32_t count = 300 * (p + 1);
    total += count;
    children.emplace_back([q, p, count]() mutable {
      for (std::uint32_t i = 0; i < count; ++i) q.put({p, i});
    });
    children.back().start();
    if (p == 0) {
      ASSERT_TRUE(mproc_test::eventually([&] { return q.qsize() > 0; }, 30s));
    }
  }
  for (auto& c : children) c.join();
  q.put({producers, 0});  // the stop message
  for (std::uint32_t i = 0; i < total; ++i) {
    ASSERT_LT(q.get(5s).first, producers) << "the stop message came before message " << i << " of " << total;
  }
  EXPECT_EQ(q.get(5s), (tagged{producers, 0}));
}

// With several producers at once a bounded queue may pass maxsize by at most one message
// per producer putting at that instant (channel.hpp), never more.
TEST(QueueLanes, ManyProducersKeepABoundedQueueWithinItsBound) {
  constexpr std::uint32_t producers = 6;
  constexpr std::uint32_t per_producer = 3000;
  constexpr std::size_t maxsize = 8;
  mproc::queue<tagged> q(maxsize);
  std::vector<mproc::process> children;
  for (std::uint32_t p = 0; p < producers; ++p) {
    children.emplace_back([q, p]() mutable {
      for (std::uint32_t i = 0; i < per_producer; ++i) q.put({p, i});
    });
    children.back().start();
  }
  std::size_t most = 0;
  std::map<std::uint32_t, std::uint32_t> next;
  for (std::uint32_t i = 0; i < producers * per_producer; ++i) {
    most = std::max(most, q.qsize());
    const tagged m = q.get(30s);
    ASSERT_EQ(m.second, next[m.first]);
    ++next[m.first];
  }
  for (auto& c : children) c.join();
  EXPECT_LE(most, maxsize + producers - 1);
  EXPECT_GE(most, maxsize - 1) << "the producers never filled the queue: the test proved nothing";
}

// Consumers wake producers asleep on a full queue once it has drained to half; a producer
// still finds a single freed slot by itself, within full_queue_sleep (channel.cpp).
TEST(QueueLanes, AProducerAsleepOnAFullQueueFindsOneFreedSlot) {
  mproc::queue<int> q(4);
  mproc::event fifth_put;
  mproc::process producer([q, fifth_put]() mutable {
    for (int i = 0; i < 5; ++i) q.put(i);
    fifth_put.set();
  });
  producer.start();
  ASSERT_TRUE(mproc_test::eventually([&] { return q.qsize() == 4; }, 30s));
  std::this_thread::sleep_for(20ms);  // the producer is most likely asleep by now; if not, no matter
  EXPECT_EQ(q.get(1s), 0);            // one slot: below the wake-all mark of 2 only after two
  EXPECT_TRUE(fifth_put.wait(1s)) << "the producer never saw the slot freed";
  for (int i = 1; i < 5; ++i) EXPECT_EQ(q.get(1s), i);
  producer.join();
  EXPECT_EQ(producer.exitcode(), 0);
}

// A producer killed mid-write leaves its earlier messages and its lane.
// A producer SIGKILLed in the middle of writing a large message, after it took its lane
// and before it published: the message is absent, those it published before are whole and
// in order, and the next producer takes over the lane, reusing the blocks the dead one
// had linked in (the file does not grow by a second message's worth).
TEST(QueueLanesKill, AProducerKilledMidWriteLeavesMessagesAndLane) {
  constexpr std::size_t big = std::size_t{96} << 20;
  // The kill must land inside the large put. On a loaded machine the put can end before
  // this process looks again: then the whole message is there, and the round is tried anew.
  for (int attempt = 0; attempt < 5; ++attempt) {
    inspected_queue<std::vector<std::uint8_t>> q;
    mproc::process producer([q]() mutable {
      for (std::uint8_t i = 1; i <= 3; ++i) q.put(std::vector<std::uint8_t>(16, i));
      q.put(std::vector<std::uint8_t>(big, 0xee));
      for (;;) ::pause();
    });
    producer.start();
    ASSERT_TRUE(mproc_test::eventually([] { return queue_file_bytes() > (std::size_t{16} << 20); }, 30s))
        << "the producer never got into its large put";
    producer.kill();
    producer.join();
    ASSERT_EQ(producer.exitcode(), -SIGKILL);
    if (q.qsize() == 4) continue;  // killed after the put: try again
    const std::size_t after_kill = queue_file_bytes();
    EXPECT_EQ(q.qsize(), 3u);
    for (std::uint8_t i = 1; i <= 3; ++i) EXPECT_EQ(q.get(1s), std::vector<std::uint8_t>(16, i));
    EXPECT_FALSE(q.try_get().has_value()) << "a message half written was delivered";

    // The dead producer may also have held put_lock (it grows the file under it), whose
    // recovery counts as an owner death too: count the lane takeovers alone.
    const std::uint64_t takeovers = q.channel().lane_takeovers();
    mproc::process next([q]() mutable { q.put(std::vector<std::uint8_t>(big, 0x11)); });
    next.start();
    const std::vector<std::uint8_t> got = q.get(60s);
    next.join();
    EXPECT_EQ(next.exitcode(), 0);
    ASSERT_EQ(got.size(), big);
    EXPECT_TRUE(std::all_of(got.begin(), got.end(), [](std::uint8_t b) { return b == 0x11; }));
    EXPECT_EQ(q.channel().lane_takeovers(), takeovers + 1) << "the next producer did not take over the dead one's lane";
    EXPECT_LE(queue_file_bytes(), std::max(after_kill, big + (std::size_t{8} << 20)))
        << "the blocks the dead producer had linked were not reused";
    return;
  }
  FAIL() << "in 5 attempts every kill came after the large put had ended";
}

// A producer SIGKILLed after its put published its records (each record's head word
// publishes it) and before it stored its lane's end word, the count producers and qsize
// read. Staged exactly: the producer's put completes, then the test puts the end word back
// to what it was before that put, and kills the producer. Consumers take the put's
// messages all the same; the next producer to take the lane over finds them and writes
// after them, whether a consumer had already passed the stale end word or not. Nothing is
// lost, nothing comes twice, and the counts come right. Both ways a put writes: the lean
// one (a lone small message, write_small) and the general one (a batch).
TEST(QueueLanesKill, AProducerKilledBeforeItsEndWordLosesNothing) {
  for (const bool lean : {true, false}) {
    for (const bool consume_first : {false, true}) {
      SCOPED_TRACE(std::string(lean ? "a lone put" : "a batch") + ", " +
                   (consume_first ? "a consumer passed the end word first" : "the next producer came first"));
      const std::vector<std::uint64_t> staged = lean ? std::vector<std::uint64_t>{4} : std::vector<std::uint64_t>{4, 5};
      inspected_queue<std::uint64_t> q;
      mproc::event go;
      mproc::process producer([q, go, staged]() mutable {
        for (std::uint64_t v = 1; v <= 3; ++v) q.put(v);
        go.wait();
        if (staged.size() == 1) {
          q.put(staged[0]);
        } else {
          q.put_many(std::span<const std::uint64_t>(staged));
        }
        for (;;) ::pause();
      });
      producer.start();
      ASSERT_TRUE(mproc_test::eventually([&] { return q.qsize() == 3; }, 30s));
      mproc::detail::channel::state& s = q.channel().shared_state();
      ASSERT_EQ(s.lanes_used(), 2u) << "the producer did not get a lane of its own";
      auto& end_word = s.h->lanes[1].tail;
      const std::uint64_t before_put = end_word.load();
      go.set();
      ASSERT_TRUE(mproc_test::eventually([&] { return q.qsize() == 3 + staged.size(); }, 30s));
      end_word.store(before_put);  // as if killed between publishing and storing the end
      producer.kill();
      producer.join();
      ASSERT_EQ(producer.exitcode(), -SIGKILL);
      EXPECT_EQ(q.qsize(), 3u) << "the count is the end word's";

      std::vector<std::uint64_t> got;
      if (consume_first) {
        for (int k = 0; k < 4; ++k) got.push_back(q.get(5s));  // 4: past the end word
        EXPECT_EQ(q.qsize(), 0u) << "a consumer ahead of the end word must not make the count wrap";
      }
      const std::uint64_t takeovers = q.channel().lane_takeovers();
      mproc::process next([q]() mutable {
        q.put(6);
        q.put(7);
      });
      next.start();
      next.join();
      EXPECT_EQ(next.exitcode(), 0);
      EXPECT_EQ(q.channel().lane_takeovers(), takeovers + 1) << "the next producer did not take the lane over";
      EXPECT_EQ(q.qsize(), 3 + staged.size() + 2 - got.size());
      while (const std::optional<std::uint64_t> v = q.try_get_for(1s)) got.push_back(*v);
      std::vector<std::uint64_t> expected{1, 2, 3};
      expected.insert(expected.end(), staged.begin(), staged.end());
      expected.insert(expected.end(), {6, 7});
      EXPECT_EQ(got, expected);
      EXPECT_EQ(q.qsize(), 0u);
    }
  }
}

}  // namespace
