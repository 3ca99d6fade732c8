// The byte-level channel under the queues, in one process.
#include "mproc/detail/ipc/channel.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <new>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ipc/channel_layout.hpp"
#include "mproc/error.hpp"

namespace {

using namespace std::chrono_literals;
using mproc::detail::channel;

using mproc::detail::deadline;

std::vector<std::string> take(channel& ch, std::size_t max, deadline until = deadline::never()) {
  std::vector<std::string> out;
  ch.get(
      [&](std::span<const std::byte> bytes) {
        out.emplace_back(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      },
      max, until);
  return out;
}

std::size_t give(channel& ch, const std::vector<std::string>& messages, deadline until = deadline::never()) {
  std::vector<std::byte> data;
  std::vector<std::size_t> ends;
  for (const auto& m : messages) {
    for (char c : m) data.push_back(static_cast<std::byte>(c));
    ends.push_back(data.size());
  }
  return ch.put(data, ends, until);
}

TEST(Channel, MessagesKeepTheirBoundariesAndOrderAcrossBlocks) {
  channel ch(0);
  std::vector<std::string> sent;
  for (int i = 0; i < 30000; ++i) sent.push_back(std::string(static_cast<std::size_t>(i % 97), 'a' + i % 26));
  EXPECT_EQ(give(ch, sent), sent.size());
  EXPECT_EQ(ch.size(), sent.size());
  std::vector<std::string> got;
  while (got.size() < sent.size()) {
    auto batch = take(ch, 4096);
    got.insert(got.end(), batch.begin(), batch.end());
  }
  EXPECT_EQ(got, sent);
  EXPECT_EQ(ch.size(), 0U);
}

TEST(Channel, EmptyMessage) {
  channel ch(0);
  EXPECT_EQ(give(ch, {""}), 1U);
  EXPECT_EQ(take(ch, 1), std::vector<std::string>{""});
}

TEST(Channel, LargeMessagesSpanBlocksAndBlocksAreReused) {
  channel ch(0);
  for (int round = 0; round < 6; ++round) {
    std::string big(std::size_t{5} << 20, '\0');
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 31 + static_cast<std::size_t>(round));
    ASSERT_EQ(give(ch, {big, "after"}), 2U);
    const auto got = take(ch, 2);
    ASSERT_EQ(got.size(), 2U);
    EXPECT_TRUE(got[0] == big) << "round " << round;
    EXPECT_EQ(got[1], "after");
  }
}

// A record's head holds lengths below 2^24 - 1 itself, and longer ones in a word after it
// (channel_stream.hpp): messages on either side of the mark, among short ones.
TEST(Channel, MessagesAroundTheLongLengthMarkKeepTheirLengths) {
  channel ch(0);
  constexpr std::size_t mark = (std::size_t{1} << 24) - 1;
  for (const std::size_t n : {mark - 1, mark, mark + 1, mark + 9}) {
    std::string big(n, '\0');
    for (std::size_t i = 0; i < n; i += 4093) big[i] = static_cast<char>(i * 31 + n);
    big.back() = 'z';
    ASSERT_EQ(give(ch, {"a", big, "b"}), 3U);
    const auto got = take(ch, 3);
    ASSERT_EQ(got.size(), 3U) << n;
    EXPECT_EQ(got[0], "a");
    EXPECT_EQ(got[1].size(), n);
    EXPECT_TRUE(got[1] == big) << n;
    EXPECT_EQ(got[2], "b");
  }
}

std::span<const std::byte> as_bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

std::string patterned(std::size_t n, std::size_t seed) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 31 + seed);
  return s;
}

// A lone small put (put_one, or put_pieces gathered) and a get of one message each have a
// lean path (write_small, take_lean) beside the general one, which takes over at a block's end, for messages above
// small_message_bytes, and for batches. Messages of every length from 0 to 300, put one
// at a time and taken one at a time or three at a time, both with the consumer far behind
// and keeping up, so that records end at every offset near the blocks' ends.
TEST(Channel, LonePutsAndGetsKeepBoundariesAcrossBlocksOnEitherPath) {
  for (const bool keep_up : {false, true}) {
    SCOPED_TRACE(keep_up ? "the consumer keeps up" : "the consumer is far behind");
    channel ch(0);
    std::vector<std::string> sent;
    for (std::size_t i = 0; i < 6000; ++i) sent.push_back(patterned((i * 7) % 301, i));
    std::vector<std::string> got;
    const auto take_one_or_three = [&] {
      const auto batch = take(ch, got.size() % 5 == 4 ? 3 : 1);
      got.insert(got.end(), batch.begin(), batch.end());
    };
    for (std::size_t i = 0; i < sent.size(); ++i) {
      const std::span<const std::byte> m = as_bytes(sent[i]);
      if (i % 2 == 0) {
        ASSERT_TRUE(ch.put_one(m, deadline::never()));
      } else {  // as a header and a body, with an empty piece between: gathered for the lean path
        const std::size_t cut = std::min(m.size(), i % 11);
        const std::span<const std::byte> pieces[] = {m.first(cut), {}, m.subspan(cut)};
        ASSERT_EQ(ch.put_pieces(pieces, deadline::never()), 1U);
      }
      if (keep_up) take_one_or_three();
    }
    while (got.size() < sent.size()) take_one_or_three();
    ASSERT_EQ(got.size(), sent.size());
    for (std::size_t i = 0; i < sent.size(); ++i) ASSERT_EQ(got[i], sent[i]) << "message " << i;
    EXPECT_EQ(ch.size(), 0U);
  }
}

TEST(Channel, PutPiecesPutsTheirConcatenationAsOneMessage) {
  channel ch(0);
  const std::string head = "head:";
  const std::string body = patterned(std::size_t{3} << 20, 7);  // spans blocks
  const std::span<const std::byte> pieces[] = {as_bytes(head), {}, as_bytes(body)};
  EXPECT_EQ(ch.put_pieces(pieces, deadline::never()), 1U);
  EXPECT_EQ(ch.put_pieces({}, deadline::never()), 1U);  // no piece: an empty message
  const auto got = take(ch, 2);
  ASSERT_EQ(got.size(), 2U);
  EXPECT_TRUE(got[0] == head + body);
  EXPECT_EQ(got[1], "");
}

// What a spanning sink saw: each message's size and the bytes it chose to read.
struct spanning_log {
  std::size_t read_at_most = SIZE_MAX;
  std::vector<std::size_t> sizes;
  std::vector<std::string> read;
  std::vector<std::string> in_one_block;
};

std::size_t take_spanning(channel& ch, spanning_log& log, std::size_t max) {
  const auto read_in_place = [&](mproc::detail::message_reader& message) {
    log.sizes.push_back(message.size());
    std::string part(std::min(message.size(), log.read_at_most), '\0');
    message.read(reinterpret_cast<std::byte*>(part.data()), part.size());
    EXPECT_EQ(message.remaining(), message.size() - part.size());
    EXPECT_THROW(message.read(reinterpret_cast<std::byte*>(part.data()), message.remaining() + 1), mproc::error);
    log.read.push_back(std::move(part));
  };
  return ch.get(
      [&](std::span<const std::byte> bytes) {
        log.in_one_block.emplace_back(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      },
      max, deadline::never(), {.on_spanning = read_in_place});
}

TEST(Channel, ASpanningSinkReadsMessagesThatSpanBlocksInPlace) {
  channel ch(0);
  const std::string big = patterned(std::size_t{1} << 20, 3);
  ASSERT_EQ(give(ch, {"small", big, "tail"}), 3U);
  spanning_log log;
  EXPECT_EQ(take_spanning(ch, log, 3), 3U);
  EXPECT_EQ(log.in_one_block, (std::vector<std::string>{"small", "tail"}));
  ASSERT_EQ(log.read.size(), 1U);
  EXPECT_EQ(log.sizes[0], big.size());
  EXPECT_TRUE(log.read[0] == big);
}

TEST(Channel, WhatASpanningSinkLeavesUnreadIsSkipped) {
  channel ch(0);
  const std::string big = patterned(std::size_t{2} << 20, 5);
  ASSERT_EQ(give(ch, {big, "next"}), 2U);
  spanning_log log;
  log.read_at_most = 1000;
  EXPECT_EQ(take_spanning(ch, log, 2), 2U);
  ASSERT_EQ(log.read.size(), 1U);
  EXPECT_EQ(log.read[0], big.substr(0, 1000));
  EXPECT_EQ(log.in_one_block, std::vector<std::string>{"next"});
  EXPECT_EQ(ch.size(), 0U);
}

// read_in_place hands a spanning message over as pieces where they lie: none longer than
// asked or than its block, together the message, mixed with copying reads; past the end,
// mproc::error.
TEST(Channel, ASpanningSinkReadsPiecesInPlaceUpToItsEnd) {
  channel ch(0);
  const std::string big = patterned((std::size_t{1} << 20) + 12345, 6);
  ASSERT_EQ(give(ch, {big, "next"}), 2U);
  std::string read;
  std::size_t pieces = 0;
  const auto by_pieces = [&](mproc::detail::message_reader& message) {
    std::string head(10, '\0');
    message.read(reinterpret_cast<std::byte*>(head.data()), head.size());
    read += head;
    while (message.remaining() > 0) {
      const std::size_t asked = pieces % 2 == 0 ? message.remaining() : 1000;
      const std::span<const std::byte> piece = message.read_in_place(asked);
      ASSERT_GT(piece.size(), 0U);
      ASSERT_LE(piece.size(), asked);
      ASSERT_LE(piece.size(), std::size_t{64} << 10);
      read.append(reinterpret_cast<const char*>(piece.data()), piece.size());
      ++pieces;
    }
    EXPECT_THROW((void)message.read_in_place(1), mproc::error);
  };
  std::vector<std::string> small;
  const auto sink = [&](std::span<const std::byte> m) {
    small.emplace_back(reinterpret_cast<const char*>(m.data()), m.size());
  };
  EXPECT_EQ(ch.get(sink, 2, deadline::never(), {.on_spanning = by_pieces}), 2U);
  EXPECT_TRUE(read == big);
  EXPECT_GT(pieces, 16U);  // 1 MiB in blocks of 64 KiB, half the pieces cut to 1000 bytes
  EXPECT_EQ(small, std::vector<std::string>{"next"});
}

// A spanning sink out of memory before reading leaves the message queued.
TEST(Channel, ASpanningSinkOutOfMemoryLeavesTheMessageQueued) {
  channel ch(0);
  const std::string big = patterned(std::size_t{1} << 20, 9);
  ASSERT_EQ(give(ch, {big}), 1U);
  const auto no_memory = [](mproc::detail::message_reader&) { throw std::bad_alloc(); };
  const auto sink = [](std::span<const std::byte>) {};
  EXPECT_THROW(ch.get(sink, 1, deadline::never(), {.on_spanning = no_memory}), std::bad_alloc);
  EXPECT_EQ(ch.size(), 1U);
  // With on_unreadable, it is taken and reported instead.
  struct seen {
    std::size_t length = 0;
    std::string prefix;
  } s;
  const auto unreadable = [&](std::span<const std::byte> prefix, std::size_t length) {
    s.length = length;
    s.prefix.assign(reinterpret_cast<const char*>(prefix.data()), prefix.size());
  };
  EXPECT_EQ(ch.get(sink, 1, deadline::never(), {.on_unreadable = unreadable, .on_spanning = no_memory}), 1U);
  EXPECT_EQ(s.length, big.size());
  EXPECT_EQ(s.prefix, big.substr(0, mproc::detail::unreadable_prefix_bytes));
  EXPECT_EQ(ch.size(), 0U);
}

// Out of memory for a message after others were taken: the take ends before it, those
// are committed (never handed out twice), and it stays queued for the next get.
TEST(Channel, OutOfMemoryAfterATakeCommitsWhatWasTaken) {
  channel ch(0);
  const std::string big = patterned(std::size_t{1} << 20, 4);
  ASSERT_EQ(give(ch, {"small", big}), 2U);
  std::vector<std::string> got;
  const auto sink = [&](std::span<const std::byte> m) {
    got.emplace_back(reinterpret_cast<const char*>(m.data()), m.size());
  };
  const auto no_memory = [](mproc::detail::message_reader&) { throw std::bad_alloc(); };
  const auto unreadable = [](std::span<const std::byte>, std::size_t) { FAIL() << "the take should end before it"; };
  EXPECT_EQ(ch.get(sink, 2, deadline::never(), {.on_unreadable = unreadable, .on_spanning = no_memory}), 1U);
  EXPECT_EQ(got, std::vector<std::string>{"small"});
  EXPECT_EQ(ch.size(), 1U);
  EXPECT_THROW(ch.get(sink, 2, deadline::never(), {.on_spanning = no_memory}), std::bad_alloc);
  EXPECT_EQ(ch.size(), 1U);
  EXPECT_EQ(take(ch, 1), std::vector<std::string>{big});
}

// A spanning sink that throws after reading consumes the message.
TEST(Channel, ASpanningSinkThrowingAfterReadingConsumesIt) {
  channel ch(0);
  ASSERT_EQ(give(ch, {patterned(std::size_t{1} << 20, 1), "after"}), 2U);
  const auto sink = [](std::span<const std::byte>) {};
  const auto undecodable = [](mproc::detail::message_reader& message) {
    std::byte b[16];
    message.read(b, sizeof b);
    throw std::runtime_error("undecodable");
  };
  EXPECT_THROW(ch.get(sink, 2, deadline::never(), {.on_spanning = undecodable}), std::runtime_error);
  EXPECT_EQ(take(ch, 2), std::vector<std::string>{"after"});
}

// stop_waiting ends a get that finds nothing, however long its deadline; a get that finds
// a message takes it all the same; a sleeping get that is woken checks it again.
TEST(Channel, StopWaitingEndsAGetThatFindsNothing) {
  channel ch(0);
  std::atomic<bool> stop{true};
  const auto stop_waiting = [&] { return stop.load(); };
  std::vector<std::string> got;
  const auto sink = [&](std::span<const std::byte> m) {
    got.emplace_back(reinterpret_cast<const char*>(m.data()), m.size());
  };
  EXPECT_EQ(ch.get(sink, 1, deadline::never(), {.stop_waiting = stop_waiting}), 0U);
  ASSERT_EQ(give(ch, {"kept"}), 1U);
  EXPECT_EQ(ch.get(sink, 1, deadline::never(), {.stop_waiting = stop_waiting}), 1U);
  EXPECT_EQ(got, std::vector<std::string>{"kept"});

  stop = false;
  std::atomic<bool> returned{false};
  std::thread waiter([&] {
    EXPECT_EQ(ch.get(sink, 1, deadline::never(), {.stop_waiting = stop_waiting}), 0U);
    returned = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let it sleep; not needed to pass
  EXPECT_FALSE(returned.load());
  stop = true;
  ch.wake_consumers();
  waiter.join();
  EXPECT_TRUE(returned.load());
  EXPECT_EQ(ch.size(), 0U);
}

TEST(Channel, MaxsizeCountsMessages) {
  channel ch(3);
  EXPECT_EQ(ch.maxsize(), 3U);
  EXPECT_EQ(give(ch, {"a", "b", "c", "d", "e"}, deadline::no_wait()), 3U);
  EXPECT_EQ(ch.size(), 3U);
  const auto soon = deadline::in(20ms);
  EXPECT_EQ(give(ch, {"x"}, soon), 0U);
  EXPECT_TRUE(soon.passed());
  EXPECT_EQ(take(ch, 10), (std::vector<std::string>{"a", "b", "c"}));
}

TEST(Channel, GetTimesOutWhenEmpty) {
  channel ch(0);
  const auto soon = deadline::in(20ms);
  EXPECT_TRUE(take(ch, 1, soon).empty());
  EXPECT_TRUE(soon.passed());
}

TEST(Channel, ThrowingSinkConsumesTheMessage) {
  channel ch(0);
  give(ch, {"bad", "good"});
  EXPECT_THROW(ch.get([](std::span<const std::byte>) { throw std::runtime_error("nope"); }, 2, deadline::never()),
               std::runtime_error);
  EXPECT_EQ(take(ch, 2), std::vector<std::string>{"good"});
}

TEST(Channel, TaskDoneAndJoin) {
  channel ch(0);
  EXPECT_THROW(ch.task_done(), mproc::error);
  give(ch, {"a", "b"});
  EXPECT_FALSE(ch.join(deadline::no_wait()));
  ch.task_done();
  EXPECT_FALSE(ch.join(deadline::no_wait()));
  ch.task_done();
  EXPECT_TRUE(ch.join(deadline::no_wait()));
  EXPECT_THROW(ch.task_done(), mproc::error);
}

TEST(Channel, TokenOpensTheSameChannelInTheSameProcess) {
  channel ch(0);
  channel again(ch.token());
  give(ch, {"through the token"});
  EXPECT_EQ(take(again, 1), std::vector<std::string>{"through the token"});
  EXPECT_EQ(again.maxsize(), 0U);
}

// Threads of one process share a channel (scripts/tsan.sh runs this under
// ThreadSanitizer): two producers block on a small bound, two consumers take batches; every
// message arrives exactly once, and each consumer sees each producer's messages in order.
TEST(Channel, ThreadsProduceAndConsumeEachMessageOnce) {
  constexpr int producers = 2;
  constexpr int per_producer = 2000;
  channel ch(8);
  std::atomic<int> received{0};
  std::vector<std::vector<std::string>> got(2);
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&ch, p] {
      for (int i = 0; i < per_producer; ++i) give(ch, {std::to_string(p) + ":" + std::to_string(i)});
    });
  }
  for (auto& mine : got) {
    threads.emplace_back([&ch, &received, &mine] {
      while (received.load() < producers * per_producer) {
        const auto batch = take(ch, 16, deadline::in(20ms));
        received += static_cast<int>(batch.size());
        mine.insert(mine.end(), batch.begin(), batch.end());
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> all;
  for (const auto& mine : got) {
    std::vector<int> last(producers, -1);
    for (const auto& m : mine) {
      EXPECT_TRUE(all.insert(m).second) << "received twice: " << m;
      const int p = std::stoi(m.substr(0, m.find(':')));
      const int i = std::stoi(m.substr(m.find(':') + 1));
      EXPECT_GT(i, last[p]) << "producer " << p << " out of order";
      last[p] = i;
    }
  }
  EXPECT_EQ(all.size(), static_cast<std::size_t>(producers * per_producer));
  EXPECT_EQ(ch.size(), 0U);
}

// A consumer that cannot map the block at a lane's head (here the file is cut short under
// it, as damaged memory would be) gets the mapping's error, not an empty queue to wait on.
TEST(Channel, AConsumerThatCannotMapALanesHeadThrowsInsteadOfWaiting) {
  channel producer(0);
  channel consumer(producer.token());  // maps the file as it is now: no block yet
  ASSERT_EQ(give(producer, {"beyond the consumer's mapping"}), 1U);
  ASSERT_EQ(::ftruncate(producer.token().fd, mproc::detail::channel_layout::header_bytes), 0);
  const auto sink = [](std::span<const std::byte>) { ADD_FAILURE() << "a message from memory cut away"; };
  EXPECT_THROW(consumer.get(sink, 1, deadline::in(std::chrono::seconds(2))), mproc::error);
}

TEST(Channel, ForgedTokenIsAClearError) {
  mproc::detail::fd_token forged{2147483000, 3, 1, 1};
  EXPECT_THROW(channel{forged}, mproc::error);
}

}  // namespace

namespace {

long minor_faults() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

void put_bytes(channel& ch, const std::vector<std::byte>& message) { ch.put_one(message, deadline::never()); }

std::size_t get_size(channel& ch) {
  std::size_t size = 0;
  ch.get([&](std::span<const std::byte> bytes) { size = bytes.size(); }, 1, deadline::never());
  return size;
}

// Streaming after a burst reuses blocks without faulting them in.
// After a burst leaves many free blocks, a stream with few messages in flight must reuse
// blocks that still have their memory, not ones whose memory was given back (which fault
// every page in again: 256 faults per 1 MiB message).
TEST(Channel, StreamingAfterABurstReusesResidentBlocks) {
  channel ch(0);
  const std::vector<std::byte> message(std::size_t{1} << 20, std::byte{7});
  for (int i = 0; i < 32; ++i) put_bytes(ch, message);
  for (int i = 0; i < 32; ++i) ASSERT_EQ(get_size(ch), message.size());
  for (int i = 0; i < 4; ++i) {  // warm up this pattern's own buffers
    put_bytes(ch, message);
    ASSERT_EQ(get_size(ch), message.size());
  }
  const long before = minor_faults();
  constexpr int rounds = 100;
  for (int i = 0; i < rounds; ++i) {
    put_bytes(ch, message);
    put_bytes(ch, message);
    ASSERT_EQ(get_size(ch), message.size());
    ASSERT_EQ(get_size(ch), message.size());
  }
  const long per_message = (minor_faults() - before) / (2 * rounds);
  EXPECT_LT(per_message, 16) << "pages faulted in per 1 MiB message (256 pages)";
}

}  // namespace
