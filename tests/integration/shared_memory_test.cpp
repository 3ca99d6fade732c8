// mproc::shared_memory and its resource tracker, with real processes and real SIGKILLs.
#include "mproc/shared_memory.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "mproc/error.hpp"
#include "mproc/process.hpp"
#include "mproc/queue.hpp"
#include "mproc/shared.hpp"
#include "os/syscall.hpp"
#include "shm/shm_tracker.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using mproc_test::eventually;
using mproc_test::gate;
using mproc_test::test_pipe;

// Unique per test process and call, so parallel ctest runs never share a name.
std::string unique_name(const char* what) {
  static std::atomic<int> made{0};
  return "mproc-test-" + std::to_string(::getpid()) + "-" + what + "-" + std::to_string(made++);
}

bool name_exists(const std::string& name) { return ::access(("/dev/shm/" + name).c_str(), F_OK) == 0; }

// Names in /dev/shm that start with `prefix`.
std::vector<std::string> names_starting_with(const std::string& prefix) {
  std::vector<std::string> out;
  for (const std::string& n : mproc_test::dev_shm_entries()) {
    if (n.rfind(prefix, 0) == 0) out.push_back(n);
  }
  return out;
}

// The private names create() makes blocks under, for the processes in `pids`.
bool private_names_left(const std::vector<pid_t>& pids) {
  return std::any_of(pids.begin(), pids.end(),
                     [](pid_t pid) { return !names_starting_with(".mproc-" + std::to_string(pid) + "-").empty(); });
}

std::string text_at(const mproc::shared_memory& shm, std::size_t length) {
  return {reinterpret_cast<const char*>(shm.bytes().data()), length};
}

void put_text(mproc::shared_memory& shm, const std::string& text) {
  std::memcpy(shm.bytes().data(), text.data(), text.size());
}

std::error_code code_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const std::system_error& e) {
    return e.code();
  }
  return {};
}

TEST(SharedMemory, AChildWritesAndTheParentReads) {
  const std::string name = unique_name("rw");
  mproc::shared_memory shm = mproc::shared_memory::create(name, 4096);
  put_text(shm, "from the parent");
  mproc::process child(
      [](const std::string& n) {
        mproc::shared_memory mine = mproc::shared_memory::open(n);
        if (text_at(mine, 15) != "from the parent") ::_exit(3);
        put_text(mine, "from the child!");
      },
      name);
  child.start();
  child.join();
  ASSERT_EQ(child.exitcode(), 0);
  EXPECT_EQ(text_at(shm, 15), "from the child!");
}

TEST(SharedMemory, CreateOfAnExistingNameThrowsEexist) {
  const std::string name = unique_name("exists");
  mproc::shared_memory first = mproc::shared_memory::create(name, 64);
  put_text(first, "kept");
  EXPECT_EQ(code_of([&] { (void)mproc::shared_memory::create(name, 128); }), std::errc::file_exists);
  EXPECT_EQ(code_of([&] { (void)mproc::shared_memory::create("/" + name, 128); }), std::errc::file_exists);
  EXPECT_TRUE(name_exists(name));
  EXPECT_EQ(mproc::shared_memory::open(name).size(), 64U);
  EXPECT_EQ(text_at(mproc::shared_memory::open(name), 4), "kept");
  EXPECT_FALSE(private_names_left({::getpid()}));
}

TEST(SharedMemory, OpenOfAnAbsentNameThrowsEnoent) {
  EXPECT_EQ(code_of([] { (void)mproc::shared_memory::open(unique_name("absent")); }),
            std::errc::no_such_file_or_directory);
}

TEST(SharedMemory, BadNamesThrowAClearError) {
  const std::vector<std::string> bad = {
      "", "/", "a/b", "/a/b", "//a", ".", "..", "/..", std::string("a\0b", 3), std::string(256, 'n')};
  for (const std::string& name : bad) {
    EXPECT_THROW((void)mproc::shared_memory::create(name, 1), mproc::error) << name;
    EXPECT_THROW((void)mproc::shared_memory::open(name), mproc::error) << name;
  }
  try {
    (void)mproc::shared_memory::create(std::string(300, 'n'), 1);
    FAIL() << "a 300-byte name was taken";
  } catch (const mproc::error& e) {
    EXPECT_NE(std::string(e.what()).find("255 (NAME_MAX)"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("mproc::shared_memory::create: ", 0), 0U) << e.what();
  }
  // The longest name allowed works, with or without the '/'.
  std::string longest = unique_name("long");
  longest.resize(255, 'x');
  mproc::shared_memory shm = mproc::shared_memory::create("/" + longest, 1);
  EXPECT_EQ(shm.name(), longest);
}

TEST(SharedMemory, ALeadingSlashNamesTheSameBlock) {
  const std::string name = unique_name("slash");
  mproc::shared_memory shm = mproc::shared_memory::create("/" + name, 8);
  EXPECT_EQ(shm.name(), name);
  put_text(shm, "same");
  EXPECT_EQ(text_at(mproc::shared_memory::open(name), 4), "same");
  EXPECT_EQ(text_at(mproc::shared_memory::open("/" + name), 4), "same");
}

TEST(SharedMemory, SizeIsWhatWasAskedAndZeroIsAnError) {
  const std::string name = unique_name("size");
  EXPECT_THROW((void)mproc::shared_memory::create(name, 0), mproc::error);
  EXPECT_FALSE(name_exists(name));
  mproc::shared_memory shm = mproc::shared_memory::create(name, 10'000);
  EXPECT_EQ(shm.size(), 10'000U);
  EXPECT_EQ(shm.bytes().size(), 10'000U);
  EXPECT_TRUE(std::all_of(shm.bytes().begin(), shm.bytes().end(), [](std::byte b) { return b == std::byte{0}; }));
  EXPECT_EQ(mproc::shared_memory::open(name).size(), 10'000U);
}

TEST(SharedMemory, UnlinkRemovesTheNameButNotTheMappings) {
  const std::string name = unique_name("unlink");
  mproc::shared_memory shm = mproc::shared_memory::create(name, 64);
  mproc::shared_memory opener = mproc::shared_memory::open(name);
  shm.unlink();
  EXPECT_FALSE(name_exists(name));
  EXPECT_EQ(code_of([&] { (void)mproc::shared_memory::open(name); }), std::errc::no_such_file_or_directory);
  put_text(shm, "still shared");
  EXPECT_EQ(text_at(opener, 12), "still shared");
  shm.unlink();  // a second time does nothing
  opener.unlink();
  // A new block under the same name is not the old handles' to remove.
  mproc::shared_memory again = mproc::shared_memory::create(name, 8);
  shm.unlink();
  { mproc::shared_memory old = std::move(opener); }
  EXPECT_TRUE(name_exists(name));
}

TEST(SharedMemory, TheCreatorsHandleRemovesTheNameAnOpenersDoesNot) {
  const std::string name = unique_name("owner");
  std::optional<mproc::shared_memory> creator = mproc::shared_memory::create(name, 64);
  { mproc::shared_memory opener = mproc::shared_memory::open(name); }
  EXPECT_TRUE(name_exists(name));
  creator.reset();
  EXPECT_FALSE(name_exists(name));
}

TEST(SharedMemory, AnOpenerInAnotherProcessCanUnlink) {
  const std::string name = unique_name("opener-unlinks");
  mproc::shared_memory creator = mproc::shared_memory::create(name, 64);
  mproc::process child([](const std::string& n) { mproc::shared_memory::open(n).unlink(); }, name);
  child.start();
  child.join();
  ASSERT_EQ(child.exitcode(), 0);
  EXPECT_FALSE(name_exists(name));
}

// A forked child holds a copy of the creator's handle; destroying the copy only unmaps.
TEST(SharedMemory, AForkedCopyOfTheCreatorLeavesTheName) {
  const std::string name = unique_name("forked");
  std::optional<mproc::shared_memory> creator = mproc::shared_memory::create(name, 64);
  const pid_t pid = ::fork();
  if (pid == 0) {
    creator.reset();
    ::_exit(0);
  }
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(name_exists(name));
  creator.reset();
  EXPECT_FALSE(name_exists(name));
}

TEST(SharedMemory, MovingLeavesAnEmptyHandle) {
  const std::string name = unique_name("move");
  const std::string other_name = unique_name("move-other");
  mproc::shared_memory a = mproc::shared_memory::create(name, 32);
  mproc::shared_memory b = std::move(a);
  EXPECT_TRUE(a.name().empty());  // NOLINT(bugprone-use-after-move): what a moved-from handle gives
  EXPECT_TRUE(a.bytes().empty());
  EXPECT_EQ(a.size(), 0U);
  EXPECT_THROW(a.unlink(), mproc::error);
  EXPECT_EQ(b.name(), name);
  EXPECT_TRUE(name_exists(name));
  mproc::shared_memory c = mproc::shared_memory::create(other_name, 32);
  c = std::move(b);  // c's old block was this process's: its name goes
  EXPECT_FALSE(name_exists(other_name));
  EXPECT_TRUE(name_exists(name));
  { mproc::shared_memory last = std::move(c); }
  EXPECT_FALSE(name_exists(name));
}

// A handle travels by name; the receiver is an opener, which never removes it.
TEST(SharedMemory, AHandleSentThroughAQueueOpensTheBlock) {
  const std::string name = unique_name("sent");
  mproc::shared_memory shm = mproc::shared_memory::create(name, 64);
  mproc::queue<mproc::shared_memory> q;
  mproc::process child(
      [](mproc::queue<mproc::shared_memory> in) {
        mproc::shared_memory got = in.get();
        put_text(got, "received");
      },
      q);
  child.start();
  q.put(shm);
  child.join();
  ASSERT_EQ(child.exitcode(), 0);
  EXPECT_EQ(text_at(shm, 8), "received");
  EXPECT_TRUE(name_exists(name));
}

// The tracker is no child of ours, has only its socket, /dev/null and the pidfd of each
// client (here: us), and mproc's children do not count it.
TEST(SharedMemory, TheTrackerIsInvisible) {
  mproc::shared_value<int> mapped_before(1);  // memory the tracker must not keep alive
  const std::string name = unique_name("invisible");
  mproc::shared_memory shm = mproc::shared_memory::create(name, 8);
  const pid_t tracker = mproc::detail::shm_tracker_pid();
  ASSERT_GT(tracker, 0);
  const auto st = mproc_test::read_proc_stat(tracker);
  ASSERT_TRUE(st.has_value());
  EXPECT_NE(st->ppid, ::getpid());
  EXPECT_TRUE(mproc::active_children().empty());
  EXPECT_TRUE(mproc_test::children_of_self().empty());
  // What the tracker has open, once it has read our hello (create() does not wait for it).
  const int pidfds = mproc::detail::pidfds_supported() ? 1 : 0;  // none under MPROC_FORCE_NO_PIDFD
  std::vector<std::string> targets;
  auto read_targets = [&] {
    targets.clear();
    for (int fd = 0; fd < 64; ++fd) {
      char target[256] = {};
      const std::string link = "/proc/" + std::to_string(tracker) + "/fd/" + std::to_string(fd);
      const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
      if (n > 0) targets.emplace_back(target, static_cast<std::size_t>(n));
    }
    return targets.size() >= 4U + static_cast<std::size_t>(pidfds);
  };
  EXPECT_TRUE(eventually(read_targets, 5s));
  auto count_starting = [&](const std::string& prefix) {
    return std::count_if(targets.begin(), targets.end(), [&](const std::string& t) { return t.rfind(prefix, 0) == 0; });
  };
  EXPECT_EQ(targets.size(), 4U + static_cast<std::size_t>(pidfds));
  EXPECT_EQ(count_starting("/dev/null"), 3);
  EXPECT_EQ(count_starting("socket:"), 1);
  EXPECT_EQ(count_starting("anon_inode:[pidfd]"), pidfds);
  // No shared mapping inherited from us: "start-end perms ..." with perms "rw-s".
  std::ifstream maps("/proc/" + std::to_string(tracker) + "/maps");
  int lines = 0;
  for (std::string line; std::getline(maps, line); ++lines) {
    const std::size_t perms = line.find(' ') + 1;
    EXPECT_NE(line.at(perms + 3), 's') << line;
  }
  EXPECT_GT(lines, 0);
}

// The creator and two openers, all SIGKILLed: the tracker removes the name, and ends
// itself once the only process that could tell it anything is gone.
TEST(SharedMemory, KillingEveryUserLeavesNothingInDevShm) {
  const std::string name = unique_name("killed");
  test_pipe reports;
  gate never;
  mproc::process creator(
      [&](const std::string& n) {
        mproc::shared_memory shm = mproc::shared_memory::create(n, 1 << 20);
        reports.write(std::to_string(mproc::detail::shm_tracker_pid()) + "\n");
        never.wait();
      },
      name);
  creator.start();
  const std::optional<std::string> tracker_line = reports.read_line();
  ASSERT_TRUE(tracker_line.has_value());
  const pid_t tracker = std::stoi(*tracker_line);
  ASSERT_GT(tracker, 0);
  std::vector<mproc::process> openers;
  for (int i = 0; i < 2; ++i) {
    openers.emplace_back(
        [&](const std::string& n) {
          mproc::shared_memory shm = mproc::shared_memory::open(n);
          reports.write("open\n");
          never.wait();
        },
        name);
    openers.back().start();
  }
  for (int i = 0; i < 2; ++i) ASSERT_EQ(reports.read_line(), "open");
  ASSERT_TRUE(name_exists(name));
  const pid_t creator_pid = *creator.pid();
  creator.kill();
  for (mproc::process& p : openers) p.kill();
  creator.join();
  for (mproc::process& p : openers) p.join();
  EXPECT_EQ(creator.exitcode(), -SIGKILL);
  EXPECT_TRUE(eventually([&] { return !name_exists(name); }, 5s)) << name << " left in /dev/shm";
  EXPECT_FALSE(private_names_left({creator_pid}));
  // Ended; reaping it is init's job (or the nearest subreaper's), never ours: it is no
  // zombie of this process. (Some container inits reap only now and then.)
  EXPECT_TRUE(eventually(
      [&] {
        const auto st = mproc_test::read_proc_stat(tracker);
        return !st || (st->state == 'Z' && st->ppid != ::getpid());
      },
      5s))
      << "tracker " << tracker << " still running";
  EXPECT_EQ(mproc_test::count_zombie_children(), 0);
}

// A child forked after the parent started the tracker shares it; its own names go when it
// is killed, while the parent (which keeps the tracker alive) lives on.
TEST(SharedMemory, AForkedChildsNamesGoWhenItIsKilled) {
  const std::string parents = unique_name("parents");
  mproc::shared_memory mine = mproc::shared_memory::create(parents, 8);
  const pid_t tracker = mproc::detail::shm_tracker_pid();
  const std::string childs = unique_name("childs");
  test_pipe reports;
  gate never;
  mproc::process child(
      [&](const std::string& n) {
        mproc::shared_memory shm = mproc::shared_memory::create(n, 8);
        reports.write(std::to_string(mproc::detail::shm_tracker_pid()) + "\n");
        never.wait();
      },
      childs);
  child.start();
  ASSERT_EQ(reports.read_line(), std::to_string(tracker));  // the same tracker
  ASSERT_TRUE(name_exists(childs));
  child.kill();
  child.join();
  EXPECT_TRUE(eventually([&] { return !name_exists(childs); }, 5s)) << childs << " left in /dev/shm";
  EXPECT_TRUE(name_exists(parents));
  EXPECT_TRUE(mproc_test::read_proc_stat(tracker).has_value());
}

// Creators making and dropping names in a loop, SIGKILLed at random instants (inside
// create(), between the steps of a name's life): nothing may be left.
TEST(SharedMemory, AKillStormLeavesNothingInDevShm) {
  const std::string prefix = unique_name("storm");
  mproc::shared_memory shared_tracker_keeper = mproc::shared_memory::create(prefix + "-keeper", 8);
  std::mt19937 random(static_cast<unsigned>(::getpid()));
  std::vector<pid_t> killed;
  for (int round = 0; round < 12; ++round) {
    test_pipe started;
    mproc::process creator(
        [&](int r) {
          started.write("go\n");
          for (int i = 0;; ++i) {
            mproc::shared_memory a =
                mproc::shared_memory::create(prefix + "-" + std::to_string(r) + "-" + std::to_string(i), 4096);
            mproc::shared_memory b = mproc::shared_memory::open(a.name());
            if (i % 2 == 0) a.unlink();
          }
        },
        round);
    creator.start();
    ASSERT_EQ(started.read_line(), "go");
    std::this_thread::sleep_for(std::chrono::microseconds(random() % 20'000));
    killed.push_back(*creator.pid());
    creator.kill();
    creator.join();
    EXPECT_EQ(creator.exitcode(), -SIGKILL);
  }
  EXPECT_TRUE(eventually([&] { return names_starting_with(prefix + "-").size() == 1; }, 5s))
      << names_starting_with(prefix + "-").size() - 1 << " names left";
  EXPECT_TRUE(eventually([&] { return !private_names_left(killed); }, 5s));
}

}  // namespace
