// An experiment behind docs/ARCHITECTURE.md "Where a small message's time goes", not a row
// of the performance contract (bench/compare.py does not run it): how a single-producer
// single-consumer ring of 16-byte records between two processes does when its records are
// published through one end word, as the channel's are, or each by its own head word, which
// the consumer polls at its head. Both consumers store their count on every message, as the
// channel's commit does.
//   mproc_publication_bench [--rounds R]
// Prints CSV: round,contender,<msgs_per_s|per_op_us>; contenders end_word and per_record,
// each one way (throughput) and in a ping-pong through two rings (round trip).
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

namespace {

using u64 = std::uint64_t;
using clock_type = std::chrono::steady_clock;

constexpr u64 slots = 4096;  // 64 KiB of records, as one of the channel's blocks

struct record {
  std::atomic<u64> head;  // per_record: i + 1 once record i is written; end_word: written, not polled
  u64 payload;
};

struct ring {
  alignas(64) std::atomic<u64> end{0};    // end_word: records published
  alignas(64) std::atomic<u64> taken{0};  // records the consumer took
  alignas(64) record records[slots];
};

enum class publication { end_word, per_record };

template <publication P>
void put(ring& q, u64 i, u64 value, u64& taken_seen) {
  while (i - taken_seen >= slots) taken_seen = q.taken.load(std::memory_order_acquire);
  record& r = q.records[i % slots];
  r.payload = value;
  if constexpr (P == publication::per_record) {
    r.head.store(i + 1, std::memory_order_release);
  } else {
    r.head.store(i + 1, std::memory_order_relaxed);
    q.end.store(i + 1, std::memory_order_release);
  }
}

template <publication P>
u64 get(ring& q, u64 i, u64& end_seen) {
  record& r = q.records[i % slots];
  if constexpr (P == publication::per_record) {
    while (r.head.load(std::memory_order_acquire) != i + 1) {
    }
  } else {
    while (end_seen <= i) end_seen = q.end.load(std::memory_order_acquire);
  }
  const u64 value = r.payload;
  q.taken.store(i + 1, std::memory_order_release);
  return value;
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "mproc_publication_bench: %s\n", what.c_str());
  std::exit(1);
}

void reap(pid_t child) {
  int status = 0;
  if (::waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    die("a child failed");
  }
}

ring* fresh_rings(void* memory) {
  ring* rings = static_cast<ring*>(memory);
  new (&rings[0]) ring;
  new (&rings[1]) ring;
  return rings;
}

template <publication P>
double one_way(void* memory, u64 n) {
  ring& q = fresh_rings(memory)[0];
  const pid_t child = ::fork();
  if (child < 0) die("fork failed");
  if (child == 0) {
    u64 end_seen = 0;
    for (u64 i = 0; i < n; ++i) {
      if (get<P>(q, i, end_seen) != i * 3) ::_exit(2);
    }
    ::_exit(0);
  }
  u64 taken_seen = 0;
  const auto t0 = clock_type::now();
  for (u64 i = 0; i < n; ++i) put<P>(q, i, i * 3, taken_seen);
  reap(child);
  const auto t1 = clock_type::now();
  return static_cast<double>(n) / std::chrono::duration<double>(t1 - t0).count();
}

template <publication P>
double round_trip_us(void* memory, u64 n) {
  ring* rings = fresh_rings(memory);
  const pid_t child = ::fork();
  if (child < 0) die("fork failed");
  if (child == 0) {
    u64 end_seen = 0;
    u64 taken_seen = 0;
    for (u64 i = 0; i < n; ++i) put<P>(rings[1], i, get<P>(rings[0], i, end_seen) + 1, taken_seen);
    ::_exit(0);
  }
  u64 end_seen = 0;
  u64 taken_seen = 0;
  const auto t0 = clock_type::now();
  for (u64 i = 0; i < n; ++i) {
    put<P>(rings[0], i, i, taken_seen);
    if (get<P>(rings[1], i, end_seen) != i + 1) die("a wrong answer");
  }
  const auto t1 = clock_type::now();
  reap(child);
  return std::chrono::duration<double, std::micro>(t1 - t0).count() / static_cast<double>(n);
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 5;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
      rounds = std::atoi(argv[++i]);
    } else {
      die("usage: mproc_publication_bench [--rounds R]");
    }
  }
  void* memory = ::mmap(nullptr, 2 * sizeof(ring), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) die("mmap failed");
  std::printf("round,contender,value\n");
  for (int round = 0; round < rounds; ++round) {
    std::printf("%d,end_word msgs_per_s,%.4g\n", round, one_way<publication::end_word>(memory, 20'000'000));
    std::printf("%d,per_record msgs_per_s,%.4g\n", round, one_way<publication::per_record>(memory, 20'000'000));
    std::printf("%d,end_word round_trip_us,%.4g\n", round, round_trip_us<publication::end_word>(memory, 500'000));
    std::printf("%d,per_record round_trip_us,%.4g\n", round, round_trip_us<publication::per_record>(memory, 500'000));
    std::fflush(stdout);
  }
  ::munmap(memory, 2 * sizeof(ring));
}
