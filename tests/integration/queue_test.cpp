// mproc::queue, joinable_queue and simple_queue with real processes.
#include "mproc/queue.hpp"

#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "mproc/process.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using bytes = std::vector<std::uint8_t>;

std::uint64_t checksum(const std::uint8_t* data, std::size_t n) {
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (std::size_t i = 0; i < n; ++i) h = (h ^ data[i]) * 1099511628211ULL;
  return h;
}

// A message that carries its own checksum, so a torn or mixed message is detected.
struct checked_message {
  std::uint64_t id = 0;
  std::uint64_t sum = 0;
  bytes payload;

  static checked_message make(std::uint64_t id, std::size_t size) {
    checked_message m;
    m.id = id;
    m.payload.resize(size);
    std::mt19937_64 rng(id);
    for (auto& b : m.payload) b = static_cast<std::uint8_t>(rng());
    m.sum = checksum(m.payload.data(), m.payload.size());
    return m;
  }
  bool verifies() const { return checksum(payload.data(), payload.size()) == sum; }

  template <class Archive>
  void serialize(Archive& archive) {
    archive(id, sum, payload);
  }
};

using mproc_test::dev_shm_entries_but_named_shm;

TEST(Queue, TheTutorialsWalkThrough) {
  mproc::queue<std::string> q(3);
  EXPECT_TRUE(q.empty());
  EXPECT_FALSE(q.full());
  q.put("消息1");
  q.put("消息2");
  q.put("消息3");
  EXPECT_FALSE(q.empty());
  EXPECT_TRUE(q.full());
  EXPECT_EQ(q.qsize(), 3U);
  const auto begin = std::chrono::steady_clock::now();
  EXPECT_THROW(q.put("消息4", 200ms), mproc::queue_full);
  EXPECT_GE(std::chrono::steady_clock::now() - begin, 200ms);
  EXPECT_EQ(q.get(), "消息1");
  EXPECT_EQ(q.get(), "消息2");
  EXPECT_EQ(q.get(), "消息3");
  const auto begin_get = std::chrono::steady_clock::now();
  EXPECT_THROW(q.get(std::chrono::duration<double>(0.2)), mproc::queue_empty);
  EXPECT_GE(std::chrono::steady_clock::now() - begin_get, 200ms);
  EXPECT_TRUE(q.empty());
  EXPECT_FALSE(q.full());
}

TEST(Queue, NowaitAndTryCalls) {
  mproc::queue<int> q(1);
  EXPECT_THROW(q.get_nowait(), mproc::queue_empty);
  EXPECT_FALSE(q.try_get().has_value());
  EXPECT_FALSE(q.try_get_for(10ms).has_value());
  EXPECT_TRUE(q.try_put(1));
  EXPECT_FALSE(q.try_put(2));
  EXPECT_FALSE(q.try_put_for(2, 10ms));
  EXPECT_THROW(q.put_nowait(2), mproc::queue_full);
  EXPECT_EQ(q.get_nowait(), 1);
  q.put_nowait(3);
  EXPECT_EQ(q.try_get(), 3);
}

TEST(Queue, ClosedHandleThrowsOthersGoOn) {
  mproc::queue<int> q;
  mproc::queue<int> other = q;
  q.close();
  EXPECT_THROW(q.put(1), mproc::closed_error);
  EXPECT_THROW(q.get(), mproc::closed_error);
  EXPECT_THROW((void)q.try_get(), mproc::closed_error);
  other.put(5);
  EXPECT_EQ(other.get(), 5);
}

TEST(Queue, ManyTypesAndSizes) {
  mproc::queue<std::map<std::string, std::vector<int>>> q;
  std::map<std::string, std::vector<int>> m{{"a", {1, 2, 3}}, {"empty", {}}, {"big", std::vector<int>(100000, 7)}};
  q.put(m);
  q.put({});
  EXPECT_EQ(q.get(), m);
  EXPECT_TRUE(q.get().empty());
}

TEST(Queue, WriterAndReaderProcesses) {
  mproc::queue<int> q(3);
  mproc::process writer([q]() mutable {
    for (int i = 0; i < 3; ++i) q.put(i);
  });
  mproc::queue<int> results;
  mproc::process reader([q, results]() mutable {
    for (int i = 0; i < 3; ++i) results.put(q.get() * 10);
  });
  writer.start();
  reader.start();
  writer.join();
  reader.join();
  EXPECT_EQ(writer.exitcode(), 0);
  EXPECT_EQ(reader.exitcode(), 0);
  EXPECT_EQ(results.get(), 0);
  EXPECT_EQ(results.get(), 10);
  EXPECT_EQ(results.get(), 20);
}

TEST(Queue, MpmcDeliversEachMessageExactlyOnceInProducerOrder) {
  constexpr std::uint64_t per_producer = 50000;
  constexpr int producers = 2;
  constexpr int consumers = 2;
  mproc::queue<std::uint64_t> q(1000);
  mproc::queue<std::vector<std::uint64_t>> report;  // per consumer: count, sum, order violations
  std::vector<mproc::process> ps;
  for (int p = 0; p < producers; ++p) {
    ps.emplace_back([q, p]() mutable {
      for (std::uint64_t i = 0; i < per_producer; ++i) q.put(std::uint64_t(p) << 32 | i);
    });
  }
  for (int c = 0; c < consumers; ++c) {
    ps.emplace_back([q, report]() mutable {
      std::uint64_t count = 0, sum = 0, disorder = 0;
      std::vector<std::int64_t> last(producers, -1);
      for (;;) {
        const std::uint64_t v = q.get();
        if (v == ~std::uint64_t{0}) break;
        const auto producer = static_cast<std::size_t>(v >> 32);
        const auto seq = static_cast<std::int64_t>(v & 0xffffffff);
        if (seq <= last[producer]) ++disorder;
        last[producer] = seq;
        ++count;
        sum += v;
      }
      report.put({count, sum, disorder});
    });
  }
  for (auto& p : ps) p.start();
  for (int p = 0; p < producers; ++p) ps[static_cast<std::size_t>(p)].join();
  for (int c = 0; c < consumers; ++c) q.put(~std::uint64_t{0});
  std::uint64_t count = 0, sum = 0, disorder = 0;
  for (int c = 0; c < consumers; ++c) {
    const auto r = report.get(30s);
    count += r[0];
    sum += r[1];
    disorder += r[2];
  }
  for (auto& p : ps) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
  std::uint64_t expected_sum = 0;
  for (std::uint64_t p = 0; p < producers; ++p) {
    for (std::uint64_t i = 0; i < per_producer; ++i) expected_sum += p << 32 | i;
  }
  EXPECT_EQ(count, producers * per_producer);
  EXPECT_EQ(sum, expected_sum);
  EXPECT_EQ(disorder, 0U);
  EXPECT_TRUE(q.empty());
}

TEST(Queue, SixtyFourMebibyteRoundTrip) {
  mproc::queue<checked_message> to_child, to_parent;
  mproc::process echo([to_child, to_parent]() mutable {
    checked_message m = to_child.get();
    if (!m.verifies()) ::_exit(3);
    to_parent.put(m);
  });
  echo.start();
  const auto sent = checked_message::make(64, 64 << 20);
  to_child.put(sent);
  const checked_message back = to_parent.get(60s);
  echo.join();
  EXPECT_EQ(echo.exitcode(), 0);
  EXPECT_TRUE(back.verifies());
  EXPECT_EQ(back.payload, sent.payload);
}

TEST(Queue, HundredMebibyteMessage) {
  mproc::queue<bytes> q;
  mproc::process producer([q]() mutable { q.put(bytes(100 << 20, 0xab)); });
  producer.start();
  const bytes got = q.get(60s);
  producer.join();
  ASSERT_EQ(got.size(), std::size_t{100} << 20);
  EXPECT_TRUE(std::all_of(got.begin(), got.end(), [](std::uint8_t b) { return b == 0xab; }));
}

TEST(Queue, BoundedQueueBlocksItsProducer) {
  mproc::queue<int> q(2);
  mproc::process producer([q]() mutable {
    for (int i = 0; i < 20; ++i) q.put(i);
  });
  producer.start();
  std::size_t most = 0;
  for (int i = 0; i < 20; ++i) {
    most = std::max(most, q.qsize());
    EXPECT_EQ(q.get(30s), i);
  }
  producer.join();
  EXPECT_LE(most, 2U);
}

TEST(Queue, BatchesKeepOrder) {
  mproc::queue<int> q;
  std::vector<int> values(10000);
  std::iota(values.begin(), values.end(), 0);
  mproc::process producer([q, values]() mutable { q.put_many(values); });
  producer.start();
  std::vector<int> got;
  while (got.size() < values.size()) {
    auto batch = q.get_many(777, 30s);
    ASSERT_FALSE(batch.empty());
    EXPECT_LE(batch.size(), 777U);
    got.insert(got.end(), batch.begin(), batch.end());
  }
  producer.join();
  EXPECT_EQ(got, values);
  EXPECT_TRUE(q.get_many(10, 10ms).empty());
}

TEST(Queue, BoundedBatchWaitsForRoom) {
  mproc::queue<int> q(3);
  std::vector<int> values(100);
  std::iota(values.begin(), values.end(), 0);
  mproc::process producer([q, values]() mutable { q.put_many(values); });
  producer.start();
  std::vector<int> got;
  while (got.size() < values.size()) {
    auto batch = q.get_many(100, 30s);
    ASSERT_FALSE(batch.empty());
    EXPECT_LE(batch.size(), 3U);
    got.insert(got.end(), batch.begin(), batch.end());
  }
  producer.join();
  EXPECT_EQ(got, values);
}

TEST(Queue, HandleSentToAProcessStartedBeforeTheQueueExisted) {
  mproc::queue<mproc::queue<int>> mailbox;
  mproc::process child([mailbox]() mutable {
    mproc::queue<int> q = mailbox.get();
    q.put(42);
  });
  child.start();
  mproc::queue<int> late;  // made after the child was forked
  mailbox.put(late);
  EXPECT_EQ(late.get(30s), 42);
  child.join();
  EXPECT_EQ(child.exitcode(), 0);
}

TEST(Queue, UndecodableMessageThrowsAndIsConsumed) {
  mproc::queue<std::string> strings;
  // The same shared queue seen as a queue of ints, as a wrongly typed receiver would.
  auto ints = mproc::from_bytes<mproc::queue<int>>(mproc::to_bytes(strings));
  strings.put("not an int at all");
  ints.put(7);
  EXPECT_THROW(ints.get(), mproc::serialization_error);
  EXPECT_EQ(ints.get(), 7);
}

// Numbers, enums with a fixed type and std::arrays of those travel as their own bytes,
// with no version byte before them: exactly, and checked by their size on the way out.
enum class shade : std::uint8_t { light = 1, dark = 200 };

TEST(Queue, MemcpySerializableValuesTravelAsTheirOwnBytes) {
  mproc::queue<std::uint64_t> words;
  words.put(0x0102'0304'0506'0708ULL);
  auto raw = mproc::from_bytes<mproc::queue<std::array<unsigned char, 8>>>(mproc::to_bytes(words));
  std::array<unsigned char, 8> expected{};
  const std::uint64_t value = 0x0102'0304'0506'0708ULL;
  std::memcpy(expected.data(), &value, sizeof value);
  EXPECT_EQ(raw.get(), expected) << "the message is not the value's 8 bytes alone";

  mproc::queue<double> doubles;
  for (const double d : {-0.0, 1e-310, std::numeric_limits<double>::infinity(), -1.5}) doubles.put(d);
  EXPECT_TRUE(std::signbit(doubles.get()));
  EXPECT_EQ(doubles.get(), 1e-310);
  EXPECT_EQ(doubles.get(), std::numeric_limits<double>::infinity());
  EXPECT_EQ(doubles.get(), -1.5);

  mproc::queue<shade> shades;
  shades.put(shade::dark);
  EXPECT_EQ(shades.get(), shade::dark);
  mproc::queue<std::array<float, 3>> points;
  const std::vector<std::array<float, 3>> many{{1, 2, 3}, {4, 5, 6}};
  points.put_many(std::span<const std::array<float, 3>>(many));
  EXPECT_EQ(points.get_many(5), many);
}

TEST(Queue, AMemcpySerializableValueOfTheWrongSizeThrowsAndIsConsumed) {
  mproc::queue<std::uint64_t> words;
  auto halves = mproc::from_bytes<mproc::queue<std::uint32_t>>(mproc::to_bytes(words));
  words.put(1);
  halves.put(2);
  try {
    (void)halves.get();
    ADD_FAILURE() << "an 8-byte message was taken as a 4-byte value";
  } catch (const mproc::serialization_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("8 bytes"), std::string::npos) << what;
    EXPECT_NE(what.find("4 bytes"), std::string::npos) << what;
  }
  EXPECT_EQ(halves.get(), 2U);
  EXPECT_FALSE(words.try_get().has_value());
}

TEST(JoinableQueue, JoinWaitsForEveryTaskDone) {
  mproc::joinable_queue<int> q;
  EXPECT_THROW(q.task_done(), mproc::error);
  for (int i = 0; i < 5; ++i) q.put(i);
  EXPECT_FALSE(q.join(20ms));
  mproc::process worker([q]() mutable {
    for (int i = 0; i < 5; ++i) {
      (void)q.get();
      q.task_done();
    }
  });
  worker.start();
  EXPECT_TRUE(q.join(30s));
  worker.join();
  EXPECT_THROW(q.task_done(), mproc::error);
  q.join();
}

TEST(SimpleQueue, PutGetEmptyClose) {
  mproc::simple_queue<std::string> q;
  EXPECT_TRUE(q.empty());
  mproc::process child([q]() mutable { q.put("hi"); });
  child.start();
  EXPECT_EQ(q.get(), "hi");
  child.join();
  EXPECT_TRUE(q.empty());
  q.close();
  EXPECT_THROW(q.put("x"), mproc::closed_error);
}

// --- crash safety ---------------------------------------------------------------------

// A producer killed in a loop of large puts leaves the queue usable.
TEST(QueueKill, ProducerKilledInLargePutsLeavesTheQueueUsable) {
  const auto shm_before = dev_shm_entries_but_named_shm();
  const int fds_before = mproc_test::count_open_fds();
  {
    mproc::queue<checked_message> q;
    std::uint64_t received = 0;
    std::mt19937 rng(7);
    const checked_message prototype = checked_message::make(0, 4 << 20);
    for (int round = 0; round < 12; ++round) {
      // The producer spends its time inside put (encoding and copying 4 MiB), so a kill
      // at a random moment often lands mid-write, holding the queue's lock.
      mproc::process producer([q, message = prototype]() mutable {
        for (std::uint64_t i = 1;; ++i) {
          message.id = i;
          q.put(message);
        }
      });
      producer.start();
      const checked_message first = q.get(30s);
      ASSERT_TRUE(first.verifies()) << "torn message " << first.id;
      ++received;
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 30000));
      producer.kill();
      producer.join();
      ASSERT_EQ(producer.exitcode(), -SIGKILL);
      std::uint64_t last_id = first.id;
      while (auto m = q.try_get()) {
        ASSERT_TRUE(m->verifies()) << "torn message " << m->id;
        ASSERT_EQ(m->id, last_id + 1) << "lost or repeated message";
        last_id = m->id;
        ++received;
      }
    }
    // Still usable, at once.
    const auto begin = std::chrono::steady_clock::now();
    q.put(checked_message::make(1, 1000));
    EXPECT_TRUE(q.get(1s).verifies());
    EXPECT_LT(std::chrono::steady_clock::now() - begin, 1s);
    EXPECT_GE(received, 12U);
    EXPECT_GE(q.owner_deaths(), 1U) << "no kill landed inside put: the test did not exercise recovery";
    std::printf("producers killed holding the lock: %llu of 12\n", static_cast<unsigned long long>(q.owner_deaths()));
  }
  EXPECT_EQ(dev_shm_entries_but_named_shm(), shm_before);
  EXPECT_EQ(mproc_test::count_open_fds(), fds_before);
}

// Decoding it never ends in a child: a consumer stopped *inside* get, holding the lock.
// It tells the test through `inside_get_fd` that it got there.
int inside_get_fd = -1;

struct stuck_on_load {
  int value = 0;
  template <class Archive>
  void save(Archive& archive) const {
    archive(value);
  }
  template <class Archive>
  void load(Archive& archive) {
    archive(value);
    if (mproc::parent_process().has_value()) {
      (void)::write(inside_get_fd, "x", 1);
      for (;;) ::pause();
    }
  }
};

// Puts `value`, starts a consumer that blocks inside get decoding it, and SIGKILLs it there.
void kill_a_consumer_inside_get(mproc::queue<stuck_on_load>& q, int value) {
  mproc_test::test_pipe inside;
  inside_get_fd = inside.write_fd();
  q.put(stuck_on_load{value});
  mproc::process consumer([q]() mutable { (void)q.get(); });
  consumer.start();
  ASSERT_TRUE(mproc_test::fd_readable(inside.read_fd(), 30'000)) << "the consumer never got inside get";
  consumer.kill();
  consumer.join();
}

TEST(QueueKill, ConsumerKilledInsideGetLeavesItsMessageForTheNext) {
  mproc::queue<stuck_on_load> q;
  kill_a_consumer_inside_get(q, 17);
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  const auto begin = std::chrono::steady_clock::now();
  const stuck_on_load m = q.get(1s);
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 1s);
  EXPECT_EQ(m.value, 17);
  EXPECT_GE(q.owner_deaths(), 1U);
  q.put(stuck_on_load{18});
  EXPECT_EQ(q.get(1s).value, 18);
}

// A consumer that only polls, with try_get, must also find the message of one killed
// inside get: the lane's lock names a dead holder, which no waiter is there to find out.
TEST(QueueKill, ConsumerKilledInsideGetLeavesItsMessageForATryGet) {
  mproc::queue<stuck_on_load> q;
  kill_a_consumer_inside_get(q, 17);
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  const std::optional<stuck_on_load> m = q.try_get();
  ASSERT_TRUE(m.has_value()) << "try_get did not take the message over from the dead consumer";
  EXPECT_EQ(m->value, 17);
  EXPECT_GE(q.owner_deaths(), 1U);
}

}  // namespace
