// mproc::shared_dict with real processes: the dict's operations, handles passed to
// processes and pool tasks, exact counts under concurrent updates, consistent snapshots
// while writers run, growth and reclamation, and SIGKILL at every crash window the core
// names (src/sync/dict_core.cpp) and at random instants.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "mproc/mproc.hpp"
#include "sync/dict_layout.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using mproc::detail::core_of;
namespace dict = mproc::detail::dict;

struct point {
  int x = 0;
  std::string label;
  bool operator==(const point&) const = default;
  template <class Archive>
  void serialize(Archive& archive) {
    archive(x, label);
  }
};

// Serialises like a string, but its save throws when told to.
struct fragile {
  std::string text;
  bool fail = false;
  template <class Archive>
  void save(Archive& archive) const {
    if (fail) throw std::runtime_error("refused to serialise");
    archive(text);
  }
  template <class Archive>
  void load(Archive& archive) {
    archive(text);
  }
};

// Runs fn in a child process and expects it to end (exit code 0) within `limit`: a
// bounded wait that fails instead of hanging when the dict deadlocks.
template <class Fn>
void in_child_within(std::chrono::seconds limit, Fn fn) {
  mproc::process child(fn);
  child.start();
  if (!child.join(limit)) {
    child.kill();
    child.join();
    FAIL() << "the child did not end within " << limit.count() << " s: the dict deadlocked";
  }
  ASSERT_EQ(child.exitcode(), 0);
}

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "child: %s\n", what);
    std::_Exit(3);
  }
}

TEST(SharedDict, SetGetEraseContainsSizeClear) {
  mproc::shared_dict<int, int> d;
  EXPECT_EQ(d.size(), 0u);
  EXPECT_FALSE(d.get(1).has_value());
  d.set(1, 10);
  d.set(2, 20);
  d.set(1, 11);
  EXPECT_EQ(d.size(), 2u);
  EXPECT_EQ(d.get(1), 11);
  EXPECT_EQ(d.at(2), 20);
  EXPECT_TRUE(d.contains(2));
  EXPECT_FALSE(d.contains(3));
  EXPECT_TRUE(d.erase(2));
  EXPECT_FALSE(d.erase(2));
  EXPECT_FALSE(d.contains(2));
  EXPECT_EQ(d.size(), 1u);
  d.clear();
  EXPECT_EQ(d.size(), 0u);
  EXPECT_FALSE(d.get(1).has_value());
  d.set(3, 30);
  EXPECT_EQ(d.items(), (std::vector<std::pair<int, int>>{{3, 30}}));
}

TEST(SharedDict, AtOfAnAbsentKeyThrowsOutOfRangeNamingTheTypes) {
  mproc::shared_dict<std::string, int> d;
  try {
    (void)d.at("nope");
    FAIL() << "at() of an absent key returned";
  } catch (const std::out_of_range& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("mproc::shared_dict<"), std::string::npos) << what;
    EXPECT_NE(what.find("at"), std::string::npos) << what;
    EXPECT_NE(what.find("int"), std::string::npos) << what;
  }
}

TEST(SharedDict, StringAndStructKeysAndValues) {
  mproc::shared_dict<std::string, point> by_name;
  by_name.set("a", {1, "one"});
  by_name.set(std::string(1000, 'k'), {2, std::string(5000, 'v')});
  EXPECT_EQ(by_name.at("a"), (point{1, "one"}));
  EXPECT_EQ(by_name.at(std::string(1000, 'k')).label.size(), 5000u);
  EXPECT_FALSE(by_name.contains(std::string(999, 'k')));

  mproc::shared_dict<point, std::vector<std::string>> by_point;
  by_point.set({1, "x"}, {"a", "b"});
  by_point.set({1, "y"}, {"c"});
  EXPECT_EQ(by_point.at({1, "x"}), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(by_point.at({1, "y"}), (std::vector<std::string>{"c"}));
  EXPECT_EQ(by_point.size(), 2u);
}

// The table grows past many rehashes and shrinks again; every key stays findable.
TEST(SharedDict, ManyKeysSurviveGrowthAndShrinking) {
  mproc::shared_dict<std::uint64_t, std::uint64_t> d;
  constexpr std::uint64_t n = 100'000;
  for (std::uint64_t i = 0; i < n; ++i) d.set(i * 7919, i);
  ASSERT_EQ(d.size(), n);
  for (std::uint64_t i = 0; i < n; ++i) ASSERT_EQ(d.get(i * 7919), i) << i;
  for (std::uint64_t i = 0; i < n; i += 2) ASSERT_TRUE(d.erase(i * 7919));
  ASSERT_EQ(d.size(), n / 2);
  for (std::uint64_t i = 0; i < n; ++i) ASSERT_EQ(d.contains(i * 7919), i % 2 == 1) << i;
  for (std::uint64_t i = 1; i < n; i += 2) ASSERT_TRUE(d.erase(i * 7919));
  EXPECT_EQ(d.size(), 0u);
  EXPECT_TRUE(d.items().empty());
}

TEST(SharedDict, UpdateIsAtomicAcrossProcesses) {
  mproc::shared_dict<std::string, std::int64_t> d;
  constexpr int children = 4;
  constexpr int each = 2000;
  std::vector<std::unique_ptr<mproc::process>> procs;
  for (int c = 0; c < children; ++c) {
    procs.push_back(std::make_unique<mproc::process>([d, c]() mutable {
      for (int i = 0; i < each; ++i) {
        d.update("total", [](std::optional<std::int64_t> n) { return n.value_or(0) + 1; });
        d.update("child " + std::to_string(c), [](std::optional<std::int64_t> n) { return n.value_or(0) + 1; });
      }
    }));
    procs.back()->start();
  }
  for (auto& p : procs) {
    ASSERT_TRUE(p->join(60s));
    ASSERT_EQ(p->exitcode(), 0);
  }
  EXPECT_EQ(d.at("total"), children * each);
  for (int c = 0; c < children; ++c) EXPECT_EQ(d.at("child " + std::to_string(c)), each);
  EXPECT_EQ(d.size(), static_cast<std::size_t>(children + 1));
}

TEST(SharedDict, UpdateAppendsAndReturnsTheNewValue) {
  mproc::shared_dict<int, std::vector<int>> d;
  for (int i = 0; i < 5; ++i) {
    const auto v = d.update(1, [i](std::optional<std::vector<int>> old) {
      auto list = old.value_or(std::vector<int>{});
      list.push_back(i);
      return list;
    });
    EXPECT_EQ(v.size(), static_cast<std::size_t>(i + 1));
  }
  EXPECT_EQ(d.at(1), (std::vector<int>{0, 1, 2, 3, 4}));
}

// Writers keep setting key k to a vector of n copies of n; every value a snapshot holds
// must be whole (no mix of two writes), and every snapshot holds each key once.
TEST(SharedDict, ItemsIsAConsistentSnapshotWhileWritersRun) {
  mproc::shared_dict<int, std::vector<std::uint32_t>> d;
  mproc::event stop;
  constexpr int keys = 16;
  std::vector<std::unique_ptr<mproc::process>> writers;
  for (int w = 0; w < 2; ++w) {
    writers.push_back(std::make_unique<mproc::process>([d, stop, w]() mutable {
      std::mt19937 rng(static_cast<unsigned>(w));
      while (!stop.is_set()) {
        const auto n = static_cast<std::uint32_t>(1 + rng() % 3000);
        d.set(static_cast<int>(rng() % keys), std::vector<std::uint32_t>(n, n));
        if (rng() % 8 == 0) d.erase(static_cast<int>(rng() % keys));
      }
    }));
    writers.back()->start();
  }
  int snapshots = 0;
  const auto until = std::chrono::steady_clock::now() + 1500ms;
  while (std::chrono::steady_clock::now() < until || snapshots < 50) {
    const auto all = d.items();
    std::vector<int> seen;
    for (const auto& [k, v] : all) {
      seen.push_back(k);
      ASSERT_FALSE(v.empty());
      for (std::uint32_t x : v) ASSERT_EQ(x, v.size()) << "a value mixes two writes";
    }
    std::sort(seen.begin(), seen.end());
    ASSERT_EQ(std::adjacent_find(seen.begin(), seen.end()), seen.end()) << "a key appears twice";
    ++snapshots;
  }
  stop.set();
  for (auto& w : writers) {
    ASSERT_TRUE(w->join(30s));
    ASSERT_EQ(w->exitcode(), 0);
  }
}

int add_in_task(mproc::shared_dict<std::string, int> d, int by) {
  return d.update("pool", [by](std::optional<int> n) { return n.value_or(0) + by; });
}

TEST(SharedDict, HandlePassedToAProcessAndToAPoolTask) {
  mproc::shared_dict<std::string, int> d;
  d.set("seen", 1);
  mproc::process child(
      [](mproc::shared_dict<std::string, int> h) {
        require(h.at("seen") == 1, "the child does not see the parent's entry");
        h.set("from child", 2);
      },
      d);
  child.start();
  ASSERT_TRUE(child.join(30s));
  ASSERT_EQ(child.exitcode(), 0);
  EXPECT_EQ(d.at("from child"), 2);

  mproc::pool pool(2);
  std::vector<mproc::async_result<int>> results;
  for (int i = 0; i < 10; ++i) results.push_back(pool.apply_async(add_in_task, d, 1));
  for (auto& r : results) r.get();
  EXPECT_EQ(pool.apply(add_in_task, d, 100), 110);
  EXPECT_EQ(d.at("pool"), 110);
}

// A handle sent to a process made before the dict was (through a queue), and decoded
// there, names the same dict; decoded as other types it throws.
TEST(SharedDict, HandleSentThroughAQueueAndCheckedForTypes) {
  mproc::queue<mproc::shared_dict<int, int>> mailbox;
  mproc::queue<int> done;
  mproc::process child([mailbox, done]() mutable {
    auto h = mailbox.get(30s);
    h.set(7, 70);
    done.put(1);
  });
  child.start();
  mproc::shared_dict<int, int> d;
  mailbox.put(d);
  EXPECT_EQ(done.get(30s), 1);
  EXPECT_EQ(d.at(7), 70);
  ASSERT_TRUE(child.join(30s));

  using same_types = mproc::shared_dict<int, int>;
  using other_types = mproc::shared_dict<int, long>;
  const auto bytes = mproc::to_bytes(d);
  EXPECT_EQ(mproc::from_bytes<same_types>(bytes).at(7), 70);
  EXPECT_THROW((void)mproc::from_bytes<other_types>(bytes), mproc::error);
}

TEST(SharedDict, AValueWhoseSerialisationThrowsLeavesTheDictUnchanged) {
  mproc::shared_dict<int, fragile> d;
  d.set(1, {"kept", false});
  EXPECT_THROW(d.set(1, {"lost", true}), mproc::serialization_error);
  EXPECT_THROW(d.set(2, {"lost", true}), mproc::serialization_error);
  EXPECT_THROW(d.update(1, [](std::optional<fragile>) { return fragile{"lost", true}; }), mproc::serialization_error);
  EXPECT_THROW(d.update(1, [](std::optional<fragile>) -> fragile { throw std::logic_error("the function gave up"); }),
               std::logic_error);
  EXPECT_EQ(d.size(), 1u);
  EXPECT_EQ(d.at(1).text, "kept");
  EXPECT_FALSE(d.contains(2));
}

TEST(SharedDict, CallingTheDictFromUpdatesFunctionThrows) {
  mproc::shared_dict<int, int> d;
  mproc::shared_dict<int, int> other;
  EXPECT_THROW(d.update(1,
                        [&](std::optional<int>) {
                          (void)d.get(2);
                          return 1;
                        }),
               mproc::error);
  EXPECT_FALSE(d.contains(1));
  // Another dict is fine.
  d.update(1, [&](std::optional<int>) { return other.update(1, [](std::optional<int>) { return 5; }); });
  EXPECT_EQ(d.at(1), 5);
}

TEST(SharedDict, HugeValuesWork) {
  mproc::shared_dict<int, std::vector<std::uint8_t>> d;
  std::vector<std::uint8_t> big(24 << 20);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::uint8_t>(i * 31);
  d.set(1, big);
  d.set(2, std::vector<std::uint8_t>(3 << 20, 9));
  EXPECT_EQ(d.at(1), big);
  in_child_within(30s, [d, big] { require(d.at(1) == big, "the child reads another value"); });
  EXPECT_EQ(d.at(2).size(), std::size_t{3} << 20);
}

// Space of erased entries is reused, and big free space goes back to the system.
TEST(SharedDict, ErasedSpaceIsReusedAndGivenBack) {
  mproc::shared_dict<int, std::vector<std::uint8_t>> d;
  const auto& core = core_of(d);
  const std::vector<std::uint8_t> value(1 << 20, 1);
  constexpr int n = 48;
  for (int i = 0; i < n; ++i) d.set(i, value);
  const std::size_t file = core.file_bytes();
  const std::size_t memory = core.memory_bytes();
  EXPECT_GE(memory, std::size_t{n} << 20);
  for (int i = 0; i < n; ++i) ASSERT_TRUE(d.erase(i));
  EXPECT_LT(core.memory_bytes(), memory / 4) << "erased entries kept their memory";
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < n; ++i) d.set(i + round * 1000, value);
    EXPECT_EQ(core.file_bytes(), file) << "inserting again grew the file, round " << round;
    d.clear();
  }
  // Small entries overwritten many times reuse the same space.
  for (int i = 0; i < 200'000; ++i) d.set(i % 100, std::vector<std::uint8_t>(100, 2));
  EXPECT_EQ(core.file_bytes(), file);
  EXPECT_EQ(d.size(), 100u);
}

// --- kills at the windows the core names ----------------------------------------------------

// The step the child's hook kills at, and the occurrence of it (1: the first).
dict::step kill_step;
int kill_occurrence = 1;

void kill_at_step(dict::step s) {
  if (s == kill_step && --kill_occurrence == 0) ::raise(SIGKILL);
}

// Forks a child that runs `op` with the hook armed at `s`, and expects it to die there.
template <class Op>
void killed_at(dict::step s, Op op, int occurrence = 1) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    kill_step = s;
    kill_occurrence = occurrence;
    dict::crash_hook = kill_at_step;
    op();
    std::_Exit(7);  // the step was never reached
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the child did not die at the step: " << status;
}

using big_dict = mproc::shared_dict<int, std::vector<std::uint32_t>>;

// The dict holds keys 0..n-1, key k a vector of k+1 copies of `gen`, except as listed.
void expect_whole(const big_dict& d, int n, std::uint32_t gen, std::map<int, std::optional<std::uint32_t>> except) {
  in_child_within(30s, [d, n, gen, except] {
    std::size_t expected_size = 0;
    std::vector<int> keys;
    for (int k = 0; k < n + 4; ++k) keys.push_back(k);
    for (const auto& e : except) {
      if (e.first >= n + 4) keys.push_back(e.first);
    }
    for (int k : keys) {
      std::optional<std::uint32_t> want = k < n ? std::optional<std::uint32_t>(gen) : std::nullopt;
      if (auto it = except.find(k); it != except.end()) want = it->second;
      const auto v = d.get(k);
      require(v.has_value() == want.has_value(), "a key is present that should not be, or absent");
      if (!want) continue;
      ++expected_size;
      require(v->size() == static_cast<std::size_t>(k) + 1, "a value has the wrong length");
      for (std::uint32_t x : *v) require(x == *want, "a value is not whole");
    }
    require(d.size() == expected_size, "size() is wrong");
    require(d.items().size() == expected_size, "items() has the wrong number of entries");
  });
}

big_dict filled(int n, std::uint32_t gen) {
  big_dict d;
  for (int k = 0; k < n; ++k) d.set(k, std::vector<std::uint32_t>(static_cast<std::size_t>(k) + 1, gen));
  return d;
}

// A set of an existing key killed at a step: the old value before the slot's store, the new
// one after, never a mix; then the dict works and reuses the space the dead one took.
TEST(SharedDictKill, OverwriteKilledAtEachStepIsWholeOrAbsent) {
  const std::pair<dict::step, bool> cases[] = {{dict::step::allocated, false},
                                               {dict::step::record_written, false},
                                               {dict::step::slot_committed, true},
                                               {dict::step::freed, true}};
  for (const auto& [s, applied] : cases) {
    SCOPED_TRACE(static_cast<int>(s));
    big_dict d = filled(10, 1);
    const std::uint64_t deaths = d.owner_deaths();
    killed_at(s, [&] { d.set(5, std::vector<std::uint32_t>(6, 2)); });
    expect_whole(d, 10, 1, {{5, applied ? 2u : 1u}});
    EXPECT_EQ(d.owner_deaths(), deaths + 1);
    const std::size_t file = core_of(d).file_bytes();
    for (int i = 0; i < 1000; ++i) d.set(5, std::vector<std::uint32_t>(6, 3));
    EXPECT_EQ(core_of(d).file_bytes(), file) << "the space the dead holder took is lost";
  }
}

TEST(SharedDictKill, InsertAndEraseKilledAfterTheirSlotStoreAreWhole) {
  big_dict d = filled(10, 1);
  killed_at(dict::step::record_written, [&] { d.set(20, std::vector<std::uint32_t>(21, 1)); });
  expect_whole(d, 10, 1, {});
  killed_at(dict::step::slot_committed, [&] { d.set(20, std::vector<std::uint32_t>(21, 1)); });
  expect_whole(d, 10, 1, {{20, 1u}});
  killed_at(dict::step::slot_committed, [&] { d.erase(3); });
  expect_whole(d, 10, 1, {{20, 1u}, {3, std::nullopt}});
  killed_at(dict::step::freed, [&] { d.erase(4); });
  expect_whole(d, 10, 1, {{20, 1u}, {3, std::nullopt}, {4, std::nullopt}});
  EXPECT_EQ(d.owner_deaths(), 4u);
}

// The 13th key of a 16-slot table rehashes it first: killed before the new table is
// published, the old one serves; after, the new one does; the key is absent either way.
TEST(SharedDictKill, RehashKilledBeforeOrAfterPublishingLosesNothing) {
  for (dict::step s : {dict::step::table_built, dict::step::table_committed}) {
    big_dict d = filled(12, 1);
    killed_at(s, [&] { d.set(12, std::vector<std::uint32_t>(13, 1)); });
    expect_whole(d, 12, 1, {});
    for (int k = 12; k < 200; ++k) d.set(k, std::vector<std::uint32_t>(static_cast<std::size_t>(k) + 1, 1));
    expect_whole(d, 200, 1, {});
  }
}

TEST(SharedDictKill, ClearKilledBeforeOrAfterPublishingIsWholeOrAbsent) {
  big_dict d = filled(30, 1);
  killed_at(dict::step::allocated, [&] { d.clear(); });
  expect_whole(d, 30, 1, {});
  killed_at(dict::step::table_committed, [&] { d.clear(); });
  expect_whole(d, 0, 1, {});
  killed_at(
      dict::step::rebuilding, [&] { d.clear(); }, 2);
  expect_whole(d, 0, 1, {});
}

// A value larger than the memfd makes it grow; killed between the growth and the store of
// the heap's new end, the value is absent and the next growth goes on from there.
TEST(SharedDictKill, GrowthKilledBeforeItsEndIsStoredIsAbsent) {
  big_dict d = filled(4, 1);
  killed_at(dict::step::file_grown, [&] { d.set(100, std::vector<std::uint32_t>(1 << 20, 5)); });
  expect_whole(d, 4, 1, {});
  d.set(100, std::vector<std::uint32_t>(1 << 20, 5));
  EXPECT_EQ(d.at(100).size(), std::size_t{1} << 20);
  EXPECT_EQ(d.size(), 5u);
}

// A process that dies while repairing after another died leaves the repair to the next.
TEST(SharedDictKill, ARecovererKilledMidRepairLeavesItToTheNext) {
  big_dict d = filled(40, 1);
  killed_at(dict::step::slot_committed, [&] { d.set(7, std::vector<std::uint32_t>(8, 2)); });
  killed_at(
      dict::step::rebuilding, [&] { (void)d.get(1); }, 3);
  expect_whole(d, 40, 1, {{7, 2u}});
  EXPECT_EQ(d.owner_deaths(), 2u);
}

TEST(SharedDictKill, AHolderKilledInsideUpdatesFunctionChangesNothing) {
  big_dict d = filled(5, 1);
  killed_at(dict::step::allocated, [&] {
    d.update(2, [](std::optional<std::vector<std::uint32_t>>) -> std::vector<std::uint32_t> {
      ::raise(SIGKILL);
      return {};
    });
  });
  expect_whole(d, 5, 1, {});
  EXPECT_EQ(d.owner_deaths(), 1u);
}

// Garbage written over the dict's memory (as a bug elsewhere in a process might), then a
// holder killed so that the next caller rebuilds from it: every call either works or
// throws (mproc::error for the damage, serialization_error for a value that no longer
// decodes, std::system_error for a size too large to grow to), never crashes or hangs.
TEST(SharedDictKill, RecoveryFromGarbageThrowsAndNeverCrashes) {
  big_dict d = filled(60, 1);
  const std::size_t bytes = core_of(d).file_bytes();
  void* map = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, core_of(d).token().fd, 0);
  ASSERT_NE(map, MAP_FAILED);
  auto* memory = static_cast<std::byte*>(map);
  const auto* h = reinterpret_cast<const dict::header*>(memory);
  const std::vector<std::byte> pristine(memory, memory + bytes);
  const std::size_t top = h->top;
  std::mt19937_64 rng(1234);
  int threw = 0;
  for (int round = 0; round < 150; ++round) {
    std::memcpy(memory, pristine.data(), bytes);
    const std::uint64_t seed = rng();
    in_child_within(10s, [&d, memory, top, seed] {
      killed_at(dict::step::allocated, [&] { d.set(3, std::vector<std::uint32_t>(4, 9)); });
      std::mt19937_64 garbage(seed);
      auto* header = reinterpret_cast<dict::header*>(memory);
      switch (garbage() % 4) {
        case 0:  // a committed word of the header
          (garbage() % 2 == 0   ? header->table
           : garbage() % 2 == 0 ? header->top
                                : header->file_end) = garbage() >> (garbage() % 64);
          break;
        default:  // bytes anywhere in the blocks
          for (int k = 0; k < 1 + static_cast<int>(garbage() % 16); ++k) {
            memory[dict::heap_start + garbage() % (top - dict::heap_start)] = static_cast<std::byte>(garbage());
          }
      }
      int errors = 0;
      const auto attempt = [&](auto op) {
        try {
          op();
        } catch (const mproc::error& e) {
          ++errors;
        } catch (const std::system_error& e) {
          ++errors;
        }
      };
      attempt([&] { (void)d.get(5); });
      attempt([&] { d.set(70, std::vector<std::uint32_t>(300, 7)); });
      attempt([&] { (void)d.erase(10); });
      attempt([&] { (void)d.items(); });
      attempt([&] { d.clear(); });
      std::_Exit(errors > 0 ? 0 : 0);
    });
    if (HasFatalFailure()) break;
    ++threw;
  }
  ::munmap(map, bytes);
  EXPECT_EQ(threw, 150);
}

// --- kills at random instants -------------------------------------------------------------

struct updater_books {
  std::uint64_t attempts[2];  // updates begun by each child slot
  std::uint64_t done[2];      // updates returned
};

// Children keep incrementing a counter and appending to their own list; 200 SIGKILLs at
// random instants later, each counter and list holds exactly the updates that returned,
// plus at most the one in flight at each kill, and every list is whole: 0, 1, 2, ...
TEST(SharedDictKill, TwoHundredRandomKillsLoseNoUpdateAndDeadlockNobody) {
  mproc::shared_dict<std::string, std::vector<std::uint64_t>> d;
  mproc::shared_value<updater_books> books;
  std::mt19937_64 rng(std::random_device{}());
  constexpr int kills = 200;
  int killed = 0;
  std::unique_ptr<mproc::process> slots[2];
  const auto spawn = [&](int slot) {
    slots[slot] = std::make_unique<mproc::process>([d, books, slot]() mutable {
      auto& b = books.value();
      const std::string mine = "list " + std::to_string(slot);
      for (;;) {
        std::atomic_ref<std::uint64_t>(b.attempts[slot]).fetch_add(1);
        d.update("counter", [](std::optional<std::vector<std::uint64_t>> v) {
          auto c = v.value_or(std::vector<std::uint64_t>{0});
          ++c[0];
          return c;
        });
        d.update(mine, [](std::optional<std::vector<std::uint64_t>> v) {
          auto list = v.value_or(std::vector<std::uint64_t>{});
          list.push_back(list.size());
          if (list.size() > 3000) list.clear();  // bounded, and a big free now and then
          return list;
        });
        std::atomic_ref<std::uint64_t>(b.done[slot]).fetch_add(1);
      }
    });
    slots[slot]->start();
  };
  spawn(0);
  spawn(1);
  while (killed < kills) {
    std::this_thread::sleep_for(std::chrono::microseconds(200 + rng() % 3000));
    const int slot = static_cast<int>(rng() % 2);
    slots[slot]->kill();
    ASSERT_TRUE(slots[slot]->join(10s));
    ASSERT_EQ(slots[slot]->exitcode(), -SIGKILL);
    ++killed;
    // A bounded read after each kill: the lock was not left held for good.
    if (killed % 20 == 0) in_child_within(10s, [d] { require(d.contains("counter"), "no counter"); });
    spawn(slot);
  }
  for (auto& p : slots) {
    p->kill();
    p->join();
  }
  const auto& b = books.value();
  const std::uint64_t done = b.done[0] + b.done[1];
  const std::uint64_t attempts = b.attempts[0] + b.attempts[1];
  const std::uint64_t counter = d.at("counter").at(0);
  EXPECT_GE(counter, done);
  EXPECT_LE(counter, attempts);
  EXPECT_LE(attempts - done, static_cast<std::uint64_t>(kills + 2));
  for (int slot = 0; slot < 2; ++slot) {
    const auto list = d.get("list " + std::to_string(slot)).value_or(std::vector<std::uint64_t>{});
    for (std::size_t i = 0; i < list.size(); ++i) ASSERT_EQ(list[i], i) << "list " << slot << " is not whole";
  }
  EXPECT_EQ(d.size(), 3u);
  EXPECT_GT(d.owner_deaths(), 0u);
  EXPECT_LE(d.owner_deaths(), static_cast<std::uint64_t>(kills + 2));
  std::printf("%llu updates, %llu holders killed holding the lock, counter %llu\n",
              static_cast<unsigned long long>(done), static_cast<unsigned long long>(d.owner_deaths()),
              static_cast<unsigned long long>(counter));
}

}  // namespace
