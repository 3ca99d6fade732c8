// Large values through a queue: flat values (vectors and strings of numbers) are put from
// where they lie and decoded straight out of the queue's blocks (put_pieces, on_spanning),
// whole across processes, and a consumer killed while it reads one leaves it queued.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
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

// Resident memory of `pid` in bytes (/proc/PID/statm), 0 once it is gone.
std::size_t resident_bytes(pid_t pid) {
  std::ifstream statm("/proc/" + std::to_string(pid) + "/statm");
  std::size_t size = 0;
  std::size_t resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
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

// The window: a consumer reading a big message straight out of the blocks holds the lane's
// consumers' lock and has not committed; killed there, the message stays for the next.
TEST(QueueLargeKill, AConsumerKilledMidReadLeavesTheMessageWhole) {
  constexpr std::size_t big = std::size_t{96} << 20;
  const auto message = patterned_bytes(big, 9);
  for (int attempt = 0; attempt < 5; ++attempt) {
    mproc::queue<std::vector<std::uint8_t>> q;
    q.put(message);
    const std::size_t before = resident_bytes(::getpid());
    mproc::process consumer([q]() mutable {
      (void)q.get();
      for (;;) ::pause();  // got it all: the parent sees the queue empty and tries again
    });
    consumer.start();
    const pid_t pid = *consumer.pid();
    // The child starts with this process's resident pages; it has begun reading once it
    // has touched 32 MiB more.
    ASSERT_TRUE(mproc_test::eventually([&] { return resident_bytes(pid) > before + (std::size_t{32} << 20); }, 30s))
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
  FAIL() << "in 5 attempts every kill came after the get had ended";
}

}  // namespace
