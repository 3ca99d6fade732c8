// Large values through a queue: flat values (vectors and strings of numbers) are put from
// where they lie and decoded straight out of the queue's blocks (put_pieces, on_spanning),
// whole across processes, and a consumer killed while it reads one leaves it queued.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "mproc/process.hpp"
#include "mproc/queue.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;

std::vector<std::uint8_t> patterned_bytes(std::size_t n, unsigned seed) {
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>(i * 131 + seed);
  return v;
}

// Resident anonymous memory of `pid` in bytes (RssAnon of /proc/PID/status: not the
// queue's shared memory, which a consumer maps and gives back as it reads), 0 once it is
// gone.
std::size_t anonymous_resident_bytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("RssAnon:", 0) == 0) return std::stoull(line.substr(8)) * 1024;  // "RssAnon:  123 kB"
  }
  return 0;
}

// The memory allocated to this process's queues: their memfds' allocated sizes.
std::size_t queue_file_bytes() {
  std::size_t total = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const auto target = std::filesystem::read_symlink(entry.path(), ec);
    if (ec || target.string().rfind("/memfd:mproc-queue", 0) != 0) continue;
    struct stat st {};
    if (::stat(entry.path().c_str(), &st) == 0) total += static_cast<std::size_t>(st.st_blocks) * 512;
  }
  return total;
}

TEST(QueueLarge, FlatValuesCrossProcessesWhole) {
  mproc::queue<std::vector<std::uint8_t>> bytes;
  mproc::queue<std::string> text;
  mproc::queue<std::vector<double>> numbers;
  mproc::process producer([bytes, text, numbers]() mutable {
    bytes.put(patterned_bytes(std::size_t{5} << 20, 1));  // spans blocks
    bytes.put(patterned_bytes(100, 2));                   // fits in one
    bytes.put({});
    text.put(std::string(std::size_t{3} << 20, 'z'));
    std::vector<double> d(1 << 20);
    for (std::size_t i = 0; i < d.size(); ++i) d[i] = static_cast<double>(i) / 7;
    numbers.put(d);
    const std::vector<std::vector<std::uint8_t>> batch{patterned_bytes(200'000, 3), patterned_bytes(7, 4)};
    bytes.put_many(batch);
  });
  producer.start();
  EXPECT_EQ(bytes.get(30s), patterned_bytes(std::size_t{5} << 20, 1));
  EXPECT_EQ(bytes.get(30s), patterned_bytes(100, 2));
  EXPECT_TRUE(bytes.get(30s).empty());
  EXPECT_EQ(text.get(30s), std::string(std::size_t{3} << 20, 'z'));
  const auto d = numbers.get(30s);
  ASSERT_EQ(d.size(), std::size_t{1} << 20);
  for (std::size_t i = 0; i < d.size(); ++i) ASSERT_EQ(d[i], static_cast<double>(i) / 7) << i;
  std::vector<std::vector<std::uint8_t>> got;
  while (got.size() < 2) {
    auto more = bytes.get_many(2, 30s);
    ASSERT_FALSE(more.empty());
    got.insert(got.end(), more.begin(), more.end());
  }
  EXPECT_EQ(got[0], patterned_bytes(200'000, 3));
  EXPECT_EQ(got[1], patterned_bytes(7, 4));
  producer.join();
  EXPECT_EQ(producer.exitcode(), 0);
}

// Elements wider than a byte lie at any alignment in the blocks, and one may straddle two:
// an odd count of 2- and 8-byte elements, and of chars, comes out whole.
TEST(QueueLarge, WideElementsStraddlingBlocksComeOutWhole) {
  mproc::queue<std::vector<std::int16_t>> shorts;
  mproc::queue<std::vector<std::uint64_t>> words;
  mproc::queue<std::string> text;
  std::vector<std::int16_t> s((std::size_t{1} << 19) + 7);
  for (std::size_t i = 0; i < s.size(); ++i) s[i] = static_cast<std::int16_t>(i * 37);
  std::vector<std::uint64_t> w((std::size_t{1} << 17) + 3);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = i * 0x9e3779b97f4a7c15ULL;
  std::string t((std::size_t{1} << 20) + 1, 'q');
  for (std::size_t i = 0; i < t.size(); i += 4099) t[i] = static_cast<char>('a' + i % 26);
  mproc::process producer([shorts, words, text, s, w, t]() mutable {
    shorts.put({1, 2, 3});  // shifts the next message against the blocks' boundaries
    shorts.put(s);
    words.put(w);
    text.put(t);
  });
  producer.start();
  EXPECT_EQ(shorts.get(30s), (std::vector<std::int16_t>{1, 2, 3}));
  EXPECT_TRUE(shorts.get(30s) == s);
  EXPECT_TRUE(words.get(30s) == w);
  EXPECT_TRUE(text.get(30s) == t);
  producer.join();
  EXPECT_EQ(producer.exitcode(), 0);
}

// A drained queue gives back the memory beyond what it had in use; but when memory given
// back is soon wanted again (the next burst), it keeps the rest for a while, so that a
// queue whose fill swings does not give back and fault in its blocks on every swing. Once
// that is a while ago, the blocks freed as the queue is used give their memory back.
TEST(QueueLarge, ADrainedQueueKeepsWhatItsBurstsWantThenGivesTheSurplusBack) {
  mproc::queue<std::vector<std::uint8_t>> q;
  const auto big = patterned_bytes(std::size_t{1} << 20, 5);
  const auto burst = [&] {
    for (int i = 0; i < 64; ++i) q.put(big);
    const std::size_t held = queue_file_bytes();
    for (int i = 0; i < 64; ++i) EXPECT_EQ(q.get(30s).size(), big.size());
    return held;
  };
  const std::size_t peak = burst();
  ASSERT_GE(peak, std::size_t{64} << 20);
  const std::size_t after_first = queue_file_bytes();
  EXPECT_LE(after_first, std::size_t{40} << 20) << "the first drain gave back nothing beyond half the peak";
  burst();  // takes back the memory given back
  EXPECT_GE(queue_file_bytes(), peak - (std::size_t{4} << 20)) << "memory wanted again was given back again";
  const auto small = patterned_bytes(std::size_t{60} << 10, 6);  // about a block per message
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (queue_file_bytes() > (std::size_t{16} << 20) && std::chrono::steady_clock::now() < until) {
    q.put(small);
    ASSERT_EQ(q.get(30s), small);
  }
  EXPECT_LE(queue_file_bytes(), std::size_t{16} << 20) << "the surplus was never given back";
}

// The window: a consumer reading a big message straight out of the blocks holds the lane's
// consumers' lock and has not committed; killed there, the message stays for the next.
TEST(QueueLargeKill, AConsumerKilledMidReadLeavesTheMessageWhole) {
  constexpr std::size_t big = std::size_t{96} << 20;
  const auto message = patterned_bytes(big, 9);
  for (int attempt = 0; attempt < 20; ++attempt) {
    mproc::queue<std::vector<std::uint8_t>> q;
    q.put(message);
    const std::size_t before = anonymous_resident_bytes(::getpid());
    mproc::process consumer([q]() mutable {
      const auto got = q.get();  // kept: the parent's sign that the get began stays
      for (;;) ::pause();        // got it all: the parent sees the queue empty and tries again
    });
    consumer.set_daemon(true);  // should an assertion below fail, the test's exit ends it
    consumer.start();
    const pid_t pid = *consumer.pid();
    // The child starts with this process's anonymous pages; it has begun copying the
    // message out once it has 32 MiB more, and keeps them (a sign that a parent descheduled
    // for the whole get would otherwise miss, as the copy is gone when the get returns).
    ASSERT_TRUE(
        mproc_test::eventually([&] { return anonymous_resident_bytes(pid) > before + (std::size_t{32} << 20); }, 30s))
        << "the consumer never got into its get";
    consumer.kill();
    consumer.join();
    ASSERT_EQ(consumer.exitcode(), -SIGKILL);
    if (q.qsize() == 0) continue;  // killed after the get committed: try again
    EXPECT_EQ(q.qsize(), 1u);
    const auto got = q.get(30s);
    EXPECT_TRUE(got == message) << "the message was damaged by a consumer killed while reading it";
    EXPECT_FALSE(q.try_get().has_value());
    return;
  }
  FAIL() << "in 20 attempts every kill came after the get had ended";
}

}  // namespace
