// mproc::pipe and mproc::connection, mostly with real processes on the other end.
#include "mproc/pipe.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "mproc/process.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using mproc::connection;
using mproc_test::gate;

// A user type that opts in through cereal-style serialize().
struct reading {
  int sensor = 0;
  std::string unit;
  std::vector<double> values;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(sensor, unit, values);
  }
  friend bool operator==(const reading&, const reading&) = default;
};

std::vector<std::byte> pattern(std::size_t size, std::uint32_t seed) {
  std::vector<std::byte> out(size);
  std::uint32_t x = seed * 2654435761U + 1;
  for (auto& b : out) {
    x = x * 1664525U + 1013904223U;
    b = static_cast<std::byte>(x >> 24);
  }
  return out;
}

std::uint64_t checksum(std::span<const std::byte> bytes) {  // FNV-1a
  std::uint64_t h = 14695981039346656037ULL;
  for (const std::byte b : bytes) h = (h ^ static_cast<std::uint8_t>(b)) * 1099511628211ULL;
  return h;
}

// In a child: a failed check ends it with exit code 1 and a line on stderr.
void check(bool condition, const char* what) {
  if (!condition) throw std::runtime_error(std::string("child check failed: ") + what);
}

// Starts `body(theirs)` in a child. The child first closes its inherited copy of `mine`,
// and the parent closes `theirs` after start(), as Python's idiom does, so that each side
// sees the other's close.
template <class Body>
mproc::process start_child(connection& mine, connection& theirs, Body body) {
  mproc::process p([&mine, &theirs, body] {
    mine.close();
    body(theirs);
  });
  p.start();
  theirs.close();
  return p;
}

void expect_clean_exit(mproc::process& p) {
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// Expects `call` to throw mproc::error, but not closed_error, with `text` in its message.
template <class Call>
void expect_direction_error(Call call, const std::string& text) {
  try {
    call();
    ADD_FAILURE() << "no exception; expected mproc::error mentioning \"" << text << "\"";
  } catch (const mproc::closed_error& e) {
    ADD_FAILURE() << "closed_error instead of a direction error: " << e.what();
  } catch (const mproc::error& e) {
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------
// Typed messages

TEST(pipe, TypedValuesBothWaysOnADuplexPipe) {
  auto [parent_end, child_end] = mproc::pipe();
  EXPECT_TRUE(parent_end.readable());
  EXPECT_TRUE(parent_end.writable());
  // The child echoes what it receives (child -> parent), then sends values of its own.
  mproc::process p = start_child(parent_end, child_end, [](connection& c) {
    c.send(c.recv<int>());
    c.send(c.recv<std::string>());
    c.send(c.recv<std::vector<int>>());
    c.send(c.recv<std::map<std::string, int>>());
    c.send(c.recv<reading>());
    c.send(static_cast<int>(::getpid()));
    c.send(reading{7, "kPa", {101.3, 99.8}});
  });
  const std::string text = "hello from the parent";
  const std::vector<int> numbers{1, 2, 3, -4, 1 << 30};
  const std::map<std::string, int> counts{{"a", 1}, {"b", 2}, {"", 0}};
  const reading r{3, "°C", {21.5, 22.0, -0.5}};
  parent_end.send(42);
  parent_end.send(text);
  parent_end.send(numbers);
  parent_end.send(counts);
  parent_end.send(r);
  EXPECT_EQ(parent_end.recv<int>(), 42);
  EXPECT_EQ(parent_end.recv<std::string>(), text);
  EXPECT_EQ(parent_end.recv<std::vector<int>>(), numbers);
  EXPECT_EQ((parent_end.recv<std::map<std::string, int>>()), counts);
  EXPECT_EQ(parent_end.recv<reading>(), r);
  EXPECT_EQ(parent_end.recv<int>(), *p.pid());
  EXPECT_EQ(parent_end.recv<reading>(), (reading{7, "kPa", {101.3, 99.8}}));
  expect_clean_exit(p);
}

TEST(pipe, OneWayPipeCarriesValuesFromWriterToReader) {
  {  // child -> parent
    auto [reader, writer] = mproc::pipe(false);
    EXPECT_TRUE(reader.readable());
    EXPECT_FALSE(reader.writable());
    EXPECT_FALSE(writer.readable());
    EXPECT_TRUE(writer.writable());
    mproc::process p = start_child(reader, writer, [](connection& w) {
      w.send(std::string("from the child"));
      w.send(std::vector<int>{5, 6, 7});
      w.send(reading{1, "V", {}});
    });
    EXPECT_EQ(reader.recv<std::string>(), "from the child");
    EXPECT_EQ(reader.recv<std::vector<int>>(), (std::vector<int>{5, 6, 7}));
    EXPECT_EQ(reader.recv<reading>(), (reading{1, "V", {}}));
    EXPECT_THROW(reader.recv<int>(), mproc::closed_error);
    expect_clean_exit(p);
  }
  {  // parent -> child; the child checks what it got
    auto [reader, writer] = mproc::pipe(false);
    mproc::process p = start_child(writer, reader, [](connection& r) {
      check(r.recv<int>() == -17, "int");
      check(r.recv<std::map<std::string, int>>() == std::map<std::string, int>{{"x", 1}}, "map");
      check(r.recv<reading>() == reading{2, "A", {0.25}}, "reading");
      try {
        r.recv<int>();
        check(false, "recv after the writer closed did not throw");
      } catch (const mproc::closed_error&) {
      }
    });
    writer.send(-17);
    writer.send(std::map<std::string, int>{{"x", 1}});
    writer.send(reading{2, "A", {0.25}});
    writer.close();
    expect_clean_exit(p);
  }
}

TEST(pipe, ValueThatDoesNotDecodeThrowsAndTheConnectionStaysUsable) {
  auto [a, b] = mproc::pipe();
  const std::vector<std::byte> junk{std::byte{0xff}, std::byte{0xfe}, std::byte{0xfd}};
  a.send_bytes(junk);
  EXPECT_THROW(b.recv<reading>(), mproc::serialization_error);
  a.send(7);
  EXPECT_EQ(b.recv<int>(), 7);
}

// ---------------------------------------------------------------------------------------
// Framing

TEST(pipe, BytesOfEdgeSizesKeepTheirBoundaries) {
  auto [parent_end, child_end] = mproc::pipe();
  mproc::process p = start_child(parent_end, child_end, [](connection& c) {
    for (int i = 0; i < 6; ++i) c.send_bytes(c.recv_bytes());  // echo
  });
  const std::size_t sizes[] = {0, 1, 4095, 4096, 65537, 0};
  for (std::size_t i = 0; i < std::size(sizes); ++i) {
    parent_end.send_bytes(pattern(sizes[i], static_cast<std::uint32_t>(i)));
  }
  for (std::size_t i = 0; i < std::size(sizes); ++i) {
    const std::vector<std::byte> got = parent_end.recv_bytes();
    EXPECT_EQ(got.size(), sizes[i]);
    EXPECT_TRUE(got == pattern(sizes[i], static_cast<std::uint32_t>(i))) << "message " << i;
  }
  expect_clean_exit(p);
}

TEST(pipe, ThousandSmallMessagesArriveUnmergedAndInOrder) {
  auto [reader, writer] = mproc::pipe(false);
  mproc::process p = start_child(reader, writer, [](connection& w) {
    for (std::uint32_t i = 0; i < 1000; ++i) w.send_bytes(pattern(i % 13, i));
  });
  for (std::uint32_t i = 0; i < 1000; ++i) {
    const std::vector<std::byte> got = reader.recv_bytes();
    ASSERT_EQ(got.size(), i % 13) << "message " << i;
    ASSERT_TRUE(got == pattern(i % 13, i)) << "message " << i;
  }
  EXPECT_THROW(reader.recv_bytes(), mproc::closed_error);
  expect_clean_exit(p);
}

TEST(pipe, HundredMebibyteRoundTripWithChecksum) {
  constexpr std::size_t size = std::size_t{100} << 20;
  auto [parent_end, child_end] = mproc::pipe();
  mproc::process p = start_child(parent_end, child_end, [](connection& c) {
    const std::vector<std::byte> got = c.recv_bytes();
    c.send(checksum(got));
    c.send_bytes(got);
  });
  std::vector<std::byte> data = pattern(size, 99);
  const std::uint64_t sum = checksum(data);
  parent_end.send_bytes(data);
  data = {};
  EXPECT_EQ(parent_end.recv<std::uint64_t>(), sum) << "the child saw other bytes";
  const std::vector<std::byte> back = parent_end.recv_bytes();
  EXPECT_EQ(back.size(), size);
  EXPECT_EQ(checksum(back), sum);
  expect_clean_exit(p);
}

TEST(pipe, LargeTypedValueRoundTrip) {
  auto [parent_end, child_end] = mproc::pipe();
  mproc::process p =
      start_child(parent_end, child_end, [](connection& c) { c.send(c.recv<std::vector<std::uint64_t>>()); });
  std::vector<std::uint64_t> values(std::size_t{3} << 20);  // 24 MiB
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = i * i;
  parent_end.send(values);
  EXPECT_TRUE(parent_end.recv<std::vector<std::uint64_t>>() == values);
  expect_clean_exit(p);
}

extern "C" void pipe_test_on_alarm(int) {}

TEST(pipe, SignalsDuringLargeTransfersAreRetried) {
  struct sigaction sa {};
  sa.sa_handler = pipe_test_on_alarm;  // no SA_RESTART: every tick interrupts send/recv with EINTR
  ASSERT_EQ(::sigaction(SIGALRM, &sa, nullptr), 0);
  auto [parent_end, child_end] = mproc::pipe();
  mproc::process p = start_child(parent_end, child_end, [](connection& c) {
    for (int i = 0; i < 4; ++i) c.send_bytes(c.recv_bytes());
  });
  std::atomic<bool> stop{false};
  const pthread_t main_thread = ::pthread_self();
  std::thread ticker([&] {
    while (!stop) {
      ::pthread_kill(main_thread, SIGALRM);
      std::this_thread::sleep_for(200us);
    }
  });
  for (std::uint32_t i = 0; i < 4; ++i) {
    const std::vector<std::byte> data = pattern((std::size_t{16} << 20) + i, i);
    parent_end.send_bytes(data);
    const std::vector<std::byte> back = parent_end.recv_bytes();
    EXPECT_TRUE(back == data) << "message " << i;
  }
  stop = true;
  ticker.join();
  ::signal(SIGALRM, SIG_DFL);
  expect_clean_exit(p);
}

// ---------------------------------------------------------------------------------------
// poll

TEST(pipe, PollIsFalseUntilAMessageArrives) {
  auto [parent_end, child_end] = mproc::pipe();
  gate g;
  mproc::process p = start_child(parent_end, child_end, [&g](connection& c) {
    g.wait();
    c.send(std::string("ready"));
  });
  EXPECT_FALSE(parent_end.poll());
  EXPECT_FALSE(parent_end.poll(0ms));
  g.release();
  EXPECT_TRUE(parent_end.poll(10s));
  EXPECT_TRUE(parent_end.poll());  // polling does not consume
  EXPECT_EQ(parent_end.recv<std::string>(), "ready");
  expect_clean_exit(p);
}

TEST(pipe, PollWithTimeoutWaitsAboutTheTimeout) {
  auto [a, b] = mproc::pipe();
  auto begin = std::chrono::steady_clock::now();
  EXPECT_FALSE(a.poll(200ms));
  auto waited = std::chrono::steady_clock::now() - begin;
  EXPECT_GE(waited, 200ms);
  EXPECT_LT(waited, 5s);

  begin = std::chrono::steady_clock::now();
  EXPECT_FALSE(a.poll(std::chrono::duration<double>(0.1)));  // any duration type
  waited = std::chrono::steady_clock::now() - begin;
  EXPECT_GE(waited, 100ms);
  EXPECT_LT(waited, 5s);

  begin = std::chrono::steady_clock::now();
  EXPECT_FALSE(a.poll(-5s));  // negative: no wait
  EXPECT_FALSE(a.poll(std::chrono::hours::min()));
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 100ms);
}

TEST(pipe, PollWithTimeoutReturnsWhenDataArrives) {
  auto [parent_end, child_end] = mproc::pipe();
  mproc::process p = start_child(parent_end, child_end, [](connection& c) {
    std::this_thread::sleep_for(100ms);
    c.send(1);
  });
  const auto begin = std::chrono::steady_clock::now();
  EXPECT_TRUE(parent_end.poll(30s));
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 10s);
  EXPECT_EQ(parent_end.recv<int>(), 1);
  expect_clean_exit(p);
}

TEST(pipe, SignalsDoNotShortenOrStretchPollTimeout) {
  struct sigaction sa {};
  sa.sa_handler = pipe_test_on_alarm;
  ASSERT_EQ(::sigaction(SIGALRM, &sa, nullptr), 0);
  auto [a, b] = mproc::pipe();
  std::atomic<bool> stop{false};
  const pthread_t waiter = ::pthread_self();
  std::thread ticker([&] {
    while (!stop) {
      ::pthread_kill(waiter, SIGALRM);
      std::this_thread::sleep_for(5ms);
    }
  });
  const auto begin = std::chrono::steady_clock::now();
  const bool ready = a.poll(300ms);
  const auto waited = std::chrono::steady_clock::now() - begin;
  stop = true;
  ticker.join();
  ::signal(SIGALRM, SIG_DFL);
  EXPECT_FALSE(ready);
  EXPECT_GE(waited, 300ms);
  EXPECT_LT(waited, 5s);
}

TEST(pipe, PollIsTrueOnceThePeerClosed) {
  auto [parent_end, child_end] = mproc::pipe();
  mproc::process p = start_child(parent_end, child_end, [](connection& c) { c.close(); });
  EXPECT_TRUE(parent_end.poll(10s));  // recv will not block: it throws
  EXPECT_THROW(parent_end.recv<int>(), mproc::closed_error);
  EXPECT_TRUE(parent_end.poll());
  expect_clean_exit(p);
}

// ---------------------------------------------------------------------------------------
// The peer closes or dies

// recv after the peer closed throws closed_error, once everything it sent is received.
TEST(pipe, RecvAfterPeerClosedDrainsThenThrowsClosedError) {
  auto [parent_end, child_end] = mproc::pipe();
  mproc::process p = start_child(parent_end, child_end, [](connection& c) {
    c.send(1);
    c.send(2);
    c.send_bytes({});
  });  // the child's end closes when it exits
  p.join();
  EXPECT_EQ(parent_end.recv<int>(), 1);
  EXPECT_EQ(parent_end.recv<int>(), 2);
  EXPECT_TRUE(parent_end.recv_bytes().empty());
  EXPECT_THROW(parent_end.recv<int>(), mproc::closed_error);
  EXPECT_THROW(parent_end.recv_bytes(), mproc::closed_error);  // and again
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(pipe, PeerKilledMidSendGivesClosedErrorNotAPartialMessage) {
  auto [parent_end, child_end] = mproc::pipe();
  mproc::process p = start_child(parent_end, child_end, [](connection& c) {
    c.send_bytes(pattern(std::size_t{64} << 20, 1));  // blocks: the parent does not read yet
    c.send(std::string("sent it all"));
  });
  ASSERT_TRUE(parent_end.poll(30s));  // the message has begun to arrive
  p.kill();
  p.join();
  ASSERT_EQ(p.exitcode(), -SIGKILL) << "the child finished sending before it was killed";
  try {
    parent_end.recv_bytes();
    ADD_FAILURE() << "received a message from a sender killed mid-send";
  } catch (const mproc::closed_error& e) {
    EXPECT_NE(std::string(e.what()).find("mproc::connection::recv: the other end closed in the middle of a message"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(parent_end.recv_bytes(), mproc::closed_error);
}

TEST(pipe, PeerKilledWhileRecvWaitsMidMessage) {
  auto [parent_end, child_end] = mproc::pipe();
  mproc::process p = start_child(parent_end, child_end, [](connection& c) {
    // A header announcing 1 MiB, then only 1000 bytes of it, and no more.
    const std::uint64_t header = std::uint64_t{1} << 20;
    const std::vector<std::byte> part = pattern(1000, 5);
    check(::write(c.fileno(), &header, sizeof header) == sizeof header, "write header");
    check(::write(c.fileno(), part.data(), part.size()) == 1000, "write part");
    for (;;) ::pause();
  });
  std::thread killer([&] {
    std::this_thread::sleep_for(100ms);
    p.kill();
  });
  EXPECT_THROW(parent_end.recv_bytes(), mproc::closed_error);
  killer.join();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGKILL);
}

TEST(pipe, ForgedHugeLengthDoesNotAllocateHugely) {
  {                             // announces 1 TiB, delivers 1 MiB, closes: under ASan a 1 TiB allocation would abort
    auto ends = mproc::pipe();  // not a structured binding: clang 14 cannot capture one
    auto& a = ends.first;
    auto& b = ends.second;
    const std::uint64_t header = std::uint64_t{1} << 40;
    const std::vector<std::byte> part = pattern(std::size_t{1} << 20, 3);
    std::thread writer([&, fd = a.fileno()] {
      ASSERT_EQ(::write(fd, &header, sizeof header), static_cast<ssize_t>(sizeof header));
      std::size_t done = 0;
      while (done < part.size()) {
        const ssize_t n = ::write(fd, part.data() + done, part.size() - done);
        ASSERT_GT(n, 0);
        done += static_cast<std::size_t>(n);
      }
      a.close();
    });
    EXPECT_THROW(b.recv_bytes(), mproc::closed_error);
    writer.join();
  }
  {  // a length no process can hold: the stream is corrupt, and stays refused
    auto [a, b] = mproc::pipe();
    const std::uint64_t header = ~std::uint64_t{0};
    ASSERT_EQ(::write(a.fileno(), &header, sizeof header), static_cast<ssize_t>(sizeof header));
    a.send(1);
    try {
      b.recv_bytes();
      ADD_FAILURE() << "accepted a length of 2^64-1";
    } catch (const mproc::closed_error& e) {
      ADD_FAILURE() << e.what();
    } catch (const mproc::error& e) {
      EXPECT_NE(std::string(e.what()).find("mproc::connection::recv: "), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("corrupt"), std::string::npos) << e.what();
    }
    EXPECT_THROW(b.recv<int>(), mproc::error);
  }
}

TEST(pipe, SendToADeadPeerThrowsClosedErrorWithoutSigpipe) {
  struct sigaction old {};
  ASSERT_EQ(::sigaction(SIGPIPE, nullptr, &old), 0);
  ASSERT_EQ(old.sa_handler, SIG_DFL) << "SIGPIPE must be at its default (fatal) for this test";
  auto [parent_end, child_end] = mproc::pipe();
  mproc::process p = start_child(parent_end, child_end, [](connection&) {});
  p.join();
  EXPECT_THROW(parent_end.send(1), mproc::closed_error);
  EXPECT_THROW(parent_end.send_bytes(pattern(std::size_t{1} << 20, 0)), mproc::closed_error);
  EXPECT_THROW(parent_end.send_bytes({}), mproc::closed_error);
}

TEST(pipe, PeerDyingDuringABlockedSendThrowsClosedError) {
  auto [parent_end, child_end] = mproc::pipe();
  mproc::process p = start_child(parent_end, child_end, [](connection& c) {
    check(c.poll(30s), "the parent's message never began");
    std::this_thread::sleep_for(50ms);  // exit without reading it
  });
  EXPECT_THROW(parent_end.send_bytes(pattern(std::size_t{64} << 20, 2)), mproc::closed_error);
  expect_clean_exit(p);
}

// ---------------------------------------------------------------------------------------
// Misuse

TEST(pipe, WrongDirectionOnAOneWayPipeIsAnError) {
  auto ends = mproc::pipe(false);  // not a structured binding: clang 14 cannot capture one
  auto& reader = ends.first;
  auto& writer = ends.second;
  expect_direction_error([&] { reader.send(1); }, "mproc::connection::send: this is the read end");
  expect_direction_error([&] { reader.send_bytes({}); }, "mproc::connection::send: this is the read end");
  expect_direction_error([&] { writer.recv<int>(); }, "mproc::connection::recv: this is the write end");
  expect_direction_error([&] { writer.recv_bytes(); }, "mproc::connection::recv: this is the write end");
  expect_direction_error([&] { writer.poll(); }, "mproc::connection::poll: this is the write end");
  expect_direction_error([&] { writer.poll(1s); }, "mproc::connection::poll: this is the write end");
  // The kernel enforces it too, for code that uses fileno() directly.
  EXPECT_EQ(::send(reader.fileno(), "x", 1, MSG_NOSIGNAL), -1);
  EXPECT_EQ(errno, EPIPE);
  char c;
  EXPECT_EQ(::recv(writer.fileno(), &c, 1, MSG_DONTWAIT), 0);
  // The right direction still works.
  writer.send(std::string("fine"));
  EXPECT_EQ(reader.recv<std::string>(), "fine");
}

TEST(pipe, UseAfterCloseThrowsClosedError) {
  auto [a, b] = mproc::pipe();
  EXPECT_FALSE(a.closed());
  a.close();
  a.close();  // idempotent
  EXPECT_TRUE(a.closed());
  EXPECT_FALSE(a.readable());
  EXPECT_FALSE(a.writable());
  EXPECT_THROW(a.send(1), mproc::closed_error);
  EXPECT_THROW(a.send_bytes({}), mproc::closed_error);
  EXPECT_THROW(a.recv<int>(), mproc::closed_error);
  EXPECT_THROW(a.recv_bytes(), mproc::closed_error);
  EXPECT_THROW(a.poll(), mproc::closed_error);
  EXPECT_THROW(a.poll(10ms), mproc::closed_error);
  EXPECT_THROW((void)a.fileno(), mproc::closed_error);
  EXPECT_THROW(b.recv<int>(), mproc::closed_error);  // the peer closed

  auto [c, d] = mproc::pipe(false);
  connection moved = std::move(c);
  EXPECT_TRUE(c.closed());  // NOLINT(bugprone-use-after-move): a moved-from end is closed
  EXPECT_THROW(c.recv<int>(), mproc::closed_error);
  EXPECT_THROW((void)c.fileno(), mproc::closed_error);
  d.send(5);
  EXPECT_EQ(moved.recv<int>(), 5);

  connection never_opened;
  EXPECT_THROW(never_opened.send(1), mproc::closed_error);
  EXPECT_THROW(never_opened.poll(), mproc::closed_error);
  never_opened.close();
}

// The house voice (CONTRIBUTING.md): each message names the member called.
TEST(pipe, ErrorsNameTheMemberCalled) {
  const auto what_of = [](auto call) { return mproc_test::what_of<mproc::error>(call); };
  auto ends = mproc::pipe();  // not a structured binding: clang 14 cannot capture one
  auto& a = ends.first;
  auto& b = ends.second;
  a.close();
  const std::string closed =
      ": this end is closed: close() was called on it, it was moved from, or it was never opened";
  EXPECT_EQ(what_of([&] { a.send_bytes({}); }), "mproc::connection::send" + closed);
  EXPECT_EQ(what_of([&] { (void)a.recv<int>(); }), "mproc::connection::recv" + closed);
  EXPECT_EQ(what_of([&] { (void)a.poll(); }), "mproc::connection::poll" + closed);
  EXPECT_EQ(what_of([&] { (void)a.fileno(); }), "mproc::connection::fileno" + closed);
  EXPECT_EQ(what_of([&] { (void)b.recv_bytes(); }),
            "mproc::connection::recv: nothing to receive: the other end is closed");
  EXPECT_EQ(what_of([&] { b.send(1); }), "mproc::connection::send: the other end is closed");
  // Sending a closed end: to_bytes wraps what connection::save threw.
  EXPECT_NE(what_of([&] { (void)mproc::to_bytes(a); }).find("mproc::connection::save: this end is closed"),
            std::string::npos);
}

TEST(pipe, SecondConcurrentSenderOnOneEndIsRefused) {
  auto ends = mproc::pipe();  // not a structured binding: clang 14 cannot capture one
  auto& a = ends.first;
  auto& b = ends.second;
  const std::vector<std::byte> big = pattern(std::size_t{32} << 20, 8);
  std::thread sender([&] { a.send_bytes(big); });  // blocks: nobody reads yet
  ASSERT_TRUE(b.poll(30s));                        // so it is inside send_bytes now
  expect_direction_error([&] { a.send(1); }, "mproc::connection::send: two threads sent on this end at once");
  EXPECT_TRUE(b.recv_bytes() == big);  // not interleaved
  sender.join();
  a.send(2);
  EXPECT_EQ(b.recv<int>(), 2);
}

TEST(pipe, OneSenderAndOneReceiverThreadShareAnEnd) {
  auto ends = mproc::pipe();  // not a structured binding: clang 14 cannot capture one
  auto& parent_end = ends.first;
  auto& child_end = ends.second;
  constexpr int count = 5000;
  mproc::process p = start_child(parent_end, child_end, [](connection& c) {
    for (int i = 0; i < count; ++i) c.send(c.recv<int>() * 2);
  });
  std::thread sender([&] {
    for (int i = 0; i < count; ++i) parent_end.send(i);
  });
  for (int i = 0; i < count; ++i) ASSERT_EQ(parent_end.recv<int>(), 2 * i);
  sender.join();
  expect_clean_exit(p);
}

// ---------------------------------------------------------------------------------------
// Handles crossing processes

TEST(pipe, ProcessTargetTakesAConnectionByReferenceOrByValue) {
  {
    auto [parent_end, child_end] = mproc::pipe();
    mproc::process p([](connection& c) { c.send(c.recv<int>() + 1); }, std::ref(child_end));
    p.start();
    child_end.close();
    parent_end.send(41);
    EXPECT_EQ(parent_end.recv<int>(), 42);
    EXPECT_THROW(parent_end.recv<int>(), mproc::closed_error);  // the child's copy closed at exit
    expect_clean_exit(p);
  }
  {
    auto [parent_end, child_end] = mproc::pipe();
    mproc::process p([](connection c) { c.send(std::string("by value")); }, std::move(child_end));
    p.start();
    EXPECT_EQ(parent_end.recv<std::string>(), "by value");
    expect_clean_exit(p);
  }
}

// Python's Process.start() drops the parent's reference to target and args, so a
// connection moved into a process is not kept open in the parent, and the parent sees the
// child's close.
TEST(pipe, ConnectionMovedIntoAProcessIsNotKeptOpenInTheParent) {
  auto [parent_end, child_end] = mproc::pipe();
  mproc::process p([](connection c) { c.send(1); }, std::move(child_end));
  p.start();
  EXPECT_EQ(parent_end.recv<int>(), 1);
  p.join();
  EXPECT_TRUE(parent_end.poll(2s)) << "the parent still holds the child's end";
  EXPECT_THROW(parent_end.recv<int>(), mproc::closed_error);
}

TEST(pipe, ConnectionSentThroughAPipeToARunningChild) {
  auto [control, child_control] = mproc::pipe();
  mproc::process p = start_child(control, child_control, [](connection& ctl) {
    connection duplex = ctl.recv<connection>();  // made after this child was forked
    connection writer = ctl.recv<connection>();
    check(duplex.readable() && duplex.writable(), "duplex end flags");
    check(!writer.readable() && writer.writable(), "writer end flags");
    try {
      writer.recv<int>();
      check(false, "recv on a received write end did not throw");
    } catch (const mproc::closed_error&) {
      check(false, "closed_error on a received write end");
    } catch (const mproc::error&) {
    }
    ctl.send(std::string("got them"));
    duplex.send(static_cast<int>(::getpid()));
    duplex.send(duplex.recv<std::string>() + " back");
    writer.send(std::string("one way"));
  });
  auto [mine, theirs] = mproc::pipe();
  auto [reader, writer] = mproc::pipe(false);
  control.send(theirs);
  control.send(writer);
  // The child claims its descriptors from this process: keep the ends open until it has.
  EXPECT_EQ(control.recv<std::string>(), "got them");
  theirs.close();
  writer.close();
  EXPECT_EQ(mine.recv<int>(), *p.pid());
  mine.send(std::string("hello"));
  EXPECT_EQ(mine.recv<std::string>(), "hello back");
  EXPECT_EQ(reader.recv<std::string>(), "one way");
  expect_clean_exit(p);
  // Every copy of the sent ends is closed now: the child's by its exit, ours above.
  EXPECT_THROW(mine.recv<int>(), mproc::closed_error);
  EXPECT_THROW(reader.recv<int>(), mproc::closed_error);
}

TEST(pipe, ConnectionSentToItsOwnProcess) {
  auto [a, b] = mproc::pipe();
  auto [reader, writer] = mproc::pipe(false);
  a.send(writer);
  connection copy = b.recv<connection>();
  EXPECT_NE(copy.fileno(), writer.fileno());
  EXPECT_FALSE(copy.readable());
  EXPECT_TRUE(copy.writable());
  writer.close();
  copy.send(9);
  EXPECT_EQ(reader.recv<int>(), 9);
  copy.close();
  EXPECT_THROW(reader.recv<int>(), mproc::closed_error);

  connection closed_end;  // a value that cannot be encoded; `a` stays usable
  EXPECT_THROW(a.send(closed_end), mproc::serialization_error);
  a.send(10);
  EXPECT_EQ(b.recv<int>(), 10);
}

TEST(pipe, DescriptorsAreCloseOnExec) {
  auto [a, b] = mproc::pipe();
  auto [r, w] = mproc::pipe(false);
  a.send(w);
  const connection received = b.recv<connection>();
  for (const int fd : {a.fileno(), b.fileno(), r.fileno(), w.fileno(), received.fileno()}) {
    EXPECT_EQ(::fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC) << "fd " << fd;
  }
}

TEST(pipe, NoDescriptorsLeak) {
  auto round = [] {
    auto [parent_end, child_end] = mproc::pipe();
    auto [reader, writer] = mproc::pipe(false);
    mproc::process p = start_child(parent_end, child_end, [](connection& c) {
      connection w = c.recv<connection>();
      c.send(std::string("ok"));
      w.send(c.recv<int>());
    });
    parent_end.send(writer);
    if (parent_end.recv<std::string>() != "ok") ADD_FAILURE();
    writer.close();
    parent_end.send(3);
    if (reader.recv<int>() != 3) ADD_FAILURE();
    p.join();
    auto [x, y] = mproc::pipe();
    x.send(y);
    const connection z = y.recv<connection>();
    try {
      x.close();
      y.recv<int>();
    } catch (const mproc::closed_error&) {
    }
  };
  round();  // warm up whatever the runtime opens once
  const int before = mproc_test::count_open_fds();
  for (int i = 0; i < 20; ++i) round();
  EXPECT_EQ(mproc_test::count_open_fds(), before);
}

}  // namespace
