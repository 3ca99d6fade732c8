// mproc::process with real child processes.
#include "mproc/process.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "mproc/os.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using mproc_test::gate;
using mproc_test::test_pipe;

void return_at_once() {}

TEST(Process, ReturningTargetExitsWithZero) {
  mproc::process p(return_at_once);
  p.start();
  ASSERT_TRUE(p.pid().has_value());
  EXPECT_NE(*p.pid(), ::getpid());
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_FALSE(p.is_alive());
}

TEST(Process, ArgumentsAreCopiedIntoTheChild) {
  test_pipe out;
  std::string text = "hello";
  mproc::process p(
      [](int fd, int a, const std::string& s, std::vector<int> v) {
        const std::string line = std::to_string(a) + s + std::to_string(v.size()) + "\n";
        (void)::write(fd, line.data(), line.size());
      },
      out.write_fd(), 42, text, std::vector<int>{1, 2, 3});
  text = "changed after construction";  // the object holds its own copy
  p.start();
  out.close_write();
  EXPECT_EQ(out.read_line(), "42hello3");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Process, ExitCodeOfExitAndUnderscoreExit) {
  mproc::process by_exit([] { std::exit(7); });
  mproc::process by_underscore_exit([] { ::_exit(3); });
  by_exit.start();
  by_underscore_exit.start();
  by_exit.join();
  by_underscore_exit.join();
  EXPECT_EQ(by_exit.exitcode(), 7);
  EXPECT_EQ(by_underscore_exit.exitcode(), 3);
}

// The child's stderr goes to `err` before the exception escapes run().
std::string stderr_of_throwing_child(mproc::process& p, test_pipe& err) {
  p.start();
  err.close_write();
  std::string text = err.read_all();
  p.join();
  return text;
}

// An uncaught exception exits with 1 and reports its type and message.
TEST(Process, UncaughtExceptionExitsWithOneAndReportsIt) {
  test_pipe err;
  mproc::process p(
      [](int fd) {
        ::dup2(fd, STDERR_FILENO);
        throw std::invalid_argument("boom");
      },
      err.write_fd());
  p.set_name("thrower");
  const std::string text = stderr_of_throwing_child(p, err);
  EXPECT_EQ(p.exitcode(), 1);
  EXPECT_EQ(text, "process thrower (pid " + std::to_string(*p.pid()) + "): std::invalid_argument: boom\n");
}

TEST(Process, NonStdExceptionIsReportedWithItsType) {
  test_pipe err;
  mproc::process p(
      [](int fd) {
        ::dup2(fd, STDERR_FILENO);
        throw 42;
      },
      err.write_fd());
  const std::string text = stderr_of_throwing_child(p, err);
  EXPECT_EQ(p.exitcode(), 1);
  EXPECT_NE(text.find("(pid " + std::to_string(*p.pid()) + "): int: "), std::string::npos) << text;
}

TEST(Process, TerminateGivesMinus15) {
  gate g;
  mproc::process p([&g] { g.wait(); });
  p.start();
  p.terminate();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGTERM);
  EXPECT_EQ(p.exitcode(), -15);
}

TEST(Process, KillGivesMinus9) {
  mproc::process p([] {
    ::signal(SIGTERM, SIG_IGN);  // kill cannot be ignored
    for (;;) ::pause();
  });
  p.start();
  p.kill();
  p.join();
  EXPECT_EQ(p.exitcode(), -9);
}

TEST(Process, SignalsAfterTheEndAreNoOps) {
  mproc::process p(return_at_once);
  p.start();
  p.join();
  EXPECT_NO_THROW(p.terminate());
  EXPECT_NO_THROW(p.kill());
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Process, JoinWithTimeoutIsFalseWhileAliveThenTrue) {
  gate g;
  mproc::process p([&g] { g.wait(); });
  p.start();
  EXPECT_FALSE(p.join(50ms));
  EXPECT_TRUE(p.is_alive());
  EXPECT_FALSE(p.exitcode().has_value());
  g.release();
  EXPECT_TRUE(p.join(10s));
  EXPECT_FALSE(p.is_alive());
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Process, JoinWithTimeoutWaitsTheWholeTimeout) {
  gate g;
  mproc::process p([&g] { g.wait(); });
  p.start();
  const auto begin = std::chrono::steady_clock::now();
  EXPECT_FALSE(p.join(std::chrono::duration<double>(0.2)));
  const auto waited = std::chrono::steady_clock::now() - begin;
  EXPECT_GE(waited, 200ms);
  EXPECT_LT(waited, 5s);
  g.release();
  p.join();
}

extern "C" void on_alarm(int) {}

TEST(Process, SignalsDoNotShortenOrStretchJoinTimeout) {
  struct sigaction sa {};
  sa.sa_handler = on_alarm;  // no SA_RESTART: every tick interrupts the wait with EINTR
  ASSERT_EQ(::sigaction(SIGALRM, &sa, nullptr), 0);
  gate g;
  mproc::process p([&g] { g.wait(); });
  p.start();
  std::atomic<bool> stop{false};
  const pthread_t waiter = ::pthread_self();
  std::thread ticker([&] {
    while (!stop) {
      ::pthread_kill(waiter, SIGALRM);
      std::this_thread::sleep_for(5ms);
    }
  });
  const auto begin = std::chrono::steady_clock::now();
  const bool ended = p.join(300ms);
  const auto waited = std::chrono::steady_clock::now() - begin;
  stop = true;
  ticker.join();
  EXPECT_FALSE(ended);
  EXPECT_GE(waited, 300ms);
  EXPECT_LT(waited, 5s);
  g.release();
  p.join();
  ::signal(SIGALRM, SIG_DFL);
}

TEST(Process, StartTwiceThrows) {
  mproc::process p(return_at_once);
  p.start();
  EXPECT_THROW(p.start(), mproc::error);
  p.join();
  EXPECT_THROW(p.start(), mproc::error);
}

TEST(Process, SetDaemonAfterStartThrows) {
  mproc::process p(return_at_once);
  p.start();
  EXPECT_THROW(p.set_daemon(true), mproc::error);
  EXPECT_FALSE(p.daemon());
  p.join();
}

TEST(Process, SentinelBecomesReadableWhenTheChildEnds) {
  gate g;
  mproc::process p([&g] { g.wait(); });
  p.start();
  const int fd = p.sentinel();
  EXPECT_GE(fd, 0);
  EXPECT_FALSE(mproc_test::fd_readable(fd, 0));
  g.release();
  EXPECT_TRUE(mproc_test::fd_readable(fd, 10'000));
  EXPECT_EQ(::fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  p.join();
}

// The ctest registrations prefixed nopidfd. run this file with MPROC_FORCE_NO_PIDFD=1:
// mproc must then manage children by pid, as on a kernel or under a tool (valgrind)
// without pidfds, and the sentinel is its notice pipe instead of a pidfd.
TEST(Process, SentinelIsAPidfdUnlessTheFallbackIsForced) {
  gate g;
  mproc::process p([&g] { g.wait(); });
  p.start();
  char target[64] = {};
  const std::string link = "/proc/self/fd/" + std::to_string(p.sentinel());
  ASSERT_GT(::readlink(link.c_str(), target, sizeof target - 1), 0);
  const char* forced = std::getenv("MPROC_FORCE_NO_PIDFD");
  if (forced != nullptr && std::string(forced) == "1") {
    EXPECT_EQ(std::string(target).rfind("pipe:", 0), 0U) << target;
  } else {
    EXPECT_STREQ(target, "anon_inode:[pidfd]");
  }
  g.release();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

class writer_process : public mproc::process {
 public:
  explicit writer_process(int fd) : fd_(fd) {}
  void run() override {
    const std::string line = "subclass ran in " + std::to_string(::getpid()) + "\n";
    (void)::write(fd_, line.data(), line.size());
  }

 private:
  int fd_;
};

TEST(Process, SubclassOverridesRun) {
  test_pipe out;
  writer_process p(out.write_fd());
  p.start();
  out.close_write();
  EXPECT_EQ(out.read_line(), "subclass ran in " + std::to_string(*p.pid()));
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Process, DefaultRunDoesNothing) {
  mproc::process p;
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Process, BufferedStreamOutputIsNeitherDuplicatedNorLost) {
  test_pipe out;
  const pid_t pid = mproc::os::fork();
  if (pid == 0) {
    // A program of its own: unsynchronised C++ streams keep their own buffer.
    ::dup2(out.write_fd(), STDOUT_FILENO);
    std::ios_base::sync_with_stdio(false);
    std::cout << "before ";  // buffered: start() must flush it, or the child prints it too
    std::printf("c-before ");
    mproc::process p([] {
      std::cout << "child ";  // buffered when run() returns: must not be lost
      std::printf("c-child ");
    });
    p.start();
    p.join();
    std::cout << "after" << std::flush;
    std::fflush(stdout);
    ::_exit(p.exitcode() == 0 ? 0 : 1);
  }
  out.close_write();
  const std::string text = out.read_all();
  EXPECT_EQ(mproc::os::waitpid(pid).raw(), 0);
  // The two libraries' buffers are flushed in a fixed order (C++ first, then stdio).
  EXPECT_EQ(text, "before c-before child c-child after");
}

TEST(Process, NoZombiesAfter100StartJoinCycles) {
  for (int i = 0; i < 100; ++i) {
    mproc::process p(return_at_once);
    p.start();
    p.join();
    ASSERT_EQ(p.exitcode(), 0);
  }
  EXPECT_EQ(mproc_test::count_zombie_children(), 0);
  EXPECT_TRUE(mproc_test::children_of_self().empty());
}

TEST(Process, IsAliveReapsAnEndedChild) {
  mproc::process p(return_at_once);
  p.start();
  ASSERT_TRUE(mproc_test::fd_readable(p.sentinel(), 10'000));  // ended, not yet reaped
  EXPECT_FALSE(p.is_alive());
  EXPECT_FALSE(mproc_test::read_proc_stat(*p.pid()).has_value()) << "still in /proc: not reaped";
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Process, ExitcodeReapsAnEndedChild) {
  mproc::process p([] { ::_exit(5); });
  p.start();
  ASSERT_TRUE(mproc_test::fd_readable(p.sentinel(), 10'000));
  EXPECT_EQ(p.exitcode(), 5);
  EXPECT_FALSE(mproc_test::read_proc_stat(*p.pid()).has_value());
}

TEST(Process, DestroyedWhileRunningIsReapedByTheRuntime) {
  gate g;
  pid_t pid;
  {
    mproc::process p([&g] { g.wait(); });
    p.start();
    pid = *p.pid();
  }  // handed to the runtime, still running
  ASSERT_TRUE(mproc_test::read_proc_stat(pid).has_value());
  const auto alive = mproc::active_children();
  EXPECT_NE(std::find(alive.begin(), alive.end(), pid), alive.end());
  g.release();
  // No mproc call from here on: the runtime must reap it by itself.
  EXPECT_TRUE(mproc_test::eventually([&] { return !mproc_test::read_proc_stat(pid).has_value(); }))
      << "handed-off child " << pid << " left as a zombie";
}

TEST(Process, ActiveChildrenListsRunningOnesAndReapsEndedOnes) {
  gate g;
  std::vector<mproc::process> ps;
  for (int i = 0; i < 3; ++i) ps.emplace_back([&g] { g.wait(); });
  for (auto& p : ps) p.start();
  auto alive = mproc::active_children();
  std::sort(alive.begin(), alive.end());
  std::vector<pid_t> expected;
  for (auto& p : ps) expected.push_back(*p.pid());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(alive, expected);
  g.release(3);
  for (auto& p : ps) ASSERT_TRUE(mproc_test::fd_readable(p.sentinel(), 10'000));
  EXPECT_TRUE(mproc::active_children().empty());
  EXPECT_EQ(mproc_test::count_zombie_children(), 0);  // active_children() reaped them
  for (auto& p : ps) EXPECT_EQ(p.exitcode(), 0);
}

TEST(Process, MovedProcessesStillJoin) {
  std::vector<mproc::process> ps;
  for (int i = 0; i < 8; ++i) ps.emplace_back([](int code) { ::_exit(code); }, i);
  for (auto& p : ps) p.start();
  std::vector<mproc::process> moved = std::move(ps);
  for (int i = 0; i < 8; ++i) {
    moved[static_cast<std::size_t>(i)].join();
    EXPECT_EQ(moved[static_cast<std::size_t>(i)].exitcode(), i);
  }
}

TEST(Process, MoveAssignOverARunningProcessHandsItOff) {
  gate g;
  mproc::process p([&g] { g.wait(); });
  p.start();
  const pid_t first = *p.pid();
  p = mproc::process(return_at_once);
  EXPECT_FALSE(p.pid().has_value());
  g.release();
  EXPECT_TRUE(mproc_test::eventually([&] { return !mproc_test::read_proc_stat(first).has_value(); }));
}

TEST(Process, ChildIdentity) {
  test_pipe out;
  mproc::process p(
      [](int fd) {
        const auto me = mproc::current_process();
        const auto parent = mproc::parent_process();
        const std::string line = me.name + " " + std::to_string(me.pid == ::getpid()) + " " +
                                 std::to_string(me.daemon) + " " +
                                 (parent ? parent->name + " " + std::to_string(parent->pid) : "none") + "\n";
        (void)::write(fd, line.data(), line.size());
      },
      out.write_fd());
  p.set_name("worker-a");
  p.set_daemon(true);
  p.start();
  out.close_write();
  EXPECT_EQ(out.read_line(), "worker-a 1 1 MainProcess " + std::to_string(::getpid()));
  p.join();
}

TEST(Process, NestedProcesses) {
  const pid_t test_pid = ::getpid();
  mproc::process outer([test_pid] {
    mproc::process inner([] {
      const auto parent = mproc::parent_process();
      ::_exit(parent && parent->name == "outer" && parent->pid == ::getppid() ? 5 : 50);
    });
    inner.start();
    inner.join();
    const auto parent = mproc::parent_process();
    const bool parent_ok = parent && parent->name == "MainProcess" && parent->pid == test_pid;
    ::_exit(*inner.exitcode() + (parent_ok ? 1 : 100));
  });
  outer.set_name("outer");
  outer.start();
  outer.join();
  EXPECT_EQ(outer.exitcode(), 6) << "5: inner saw outer as its parent; +1: outer saw the test";
}

TEST(Process, ChildJoinsItsOwnChildrenBeforeEnding) {
  gate g;
  mproc::process outer([&g] {
    mproc::process inner([&g] { g.wait(); });
    inner.start();
    // returning from run() must wait for `inner`, as Python's exit rule does
  });
  outer.start();
  EXPECT_FALSE(outer.join(200ms));
  g.release();
  EXPECT_TRUE(outer.join(10s));
  EXPECT_EQ(outer.exitcode(), 0);
}

TEST(Process, OnlyTheStarterMayJoin) {
  gate g;
  mproc::process p([&g] { g.wait(); });
  p.start();
  mproc::process checker([&p] {
    int failures = 0;
    try {
      p.join();
    } catch (const mproc::error&) {
      ++failures;
    }
    try {
      p.terminate();
    } catch (const mproc::error&) {
      ++failures;
    }
    ::_exit(failures);
  });
  checker.start();
  checker.join();
  EXPECT_EQ(checker.exitcode(), 2);
  g.release();
  p.join();
}

TEST(Process, ChildDoesNotInheritSiblingPidfds) {
  gate g;
  mproc::process first([&g] { g.wait(); });
  first.start();
  const int sibling_fd = first.sentinel();
  mproc::process second([](int fd) { ::_exit(::fcntl(fd, F_GETFD) == -1 && errno == EBADF ? 0 : 1); }, sibling_fd);
  second.start();
  second.join();
  EXPECT_EQ(second.exitcode(), 0) << "a child kept its sibling's pidfd open";
  g.release();
  first.join();
}

TEST(Process, ManyThreadsStartAndJoinAtOnce) {
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&failures, t] {
      for (int i = 0; i < 25; ++i) {
        mproc::process p([](int code) { ::_exit(code); }, (t * 25 + i) % 100);
        p.start();
        p.join();
        if (p.exitcode() != (t * 25 + i) % 100) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(mproc_test::count_zombie_children(), 0);
}

}  // namespace
