// The process runtime: exit rule, parent death, fork failure. Each test runs as its own
// ctest process, so making the test a child subreaper (to adopt and inspect orphans) does
// not leak into other tests.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <system_error>

#include "mproc/os.hpp"
#include "mproc/process.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using mproc_test::gate;
using mproc_test::test_pipe;

// Orphaned descendants are re-parented to this test process instead of init.
void become_subreaper() { ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0); }

struct helper_run {
  std::string output;
  std::optional<int> exitcode;
  std::chrono::steady_clock::duration took;
};

helper_run run_helper(const char* mode) {
  test_pipe out;
  mproc::process p([&out, mode] {
    ::dup2(out.write_fd(), STDOUT_FILENO);
    ::execl(MPROC_TEST_HELPER, MPROC_TEST_HELPER, mode, static_cast<char*>(nullptr));
    ::_exit(127);
  });
  const auto begin = std::chrono::steady_clock::now();
  p.start();
  out.close_write();
  helper_run r;
  r.output = out.read_all();  // EOF: the helper and every descendant closed stdout
  p.join();
  r.took = std::chrono::steady_clock::now() - begin;
  r.exitcode = p.exitcode();
  return r;
}

pid_t daemon_pid_in(const std::string& output) {
  const auto at = output.find("daemon ");
  if (at == std::string::npos) return 0;
  return static_cast<pid_t>(std::stoi(output.substr(at + 7)));
}

// At exit, the runtime joins non-daemon children and terminates daemon children.
TEST(Runtime, ExitJoinsNonDaemonsAndTerminatesDaemons) {
  become_subreaper();
  const helper_run r = run_helper("exit-rule");
  EXPECT_EQ(r.exitcode, 0);
  EXPECT_NE(r.output.find("non-daemon finished"), std::string::npos) << r.output;
  EXPECT_NE(daemon_pid_in(r.output), 0) << r.output;
  // Had the helper left any child behind, it would now be ours (we are its subreaper).
  EXPECT_TRUE(mproc_test::children_of_self().empty());
  EXPECT_LT(r.took, 1s) << "a daemon that obeys SIGTERM needs no grace period";
}

TEST(Runtime, DaemonIgnoringSigtermIsKilledAfterTheGrace) {
  become_subreaper();
  const helper_run r = run_helper("stubborn-daemon");
  EXPECT_EQ(r.exitcode, 0);
  EXPECT_NE(r.output.find("non-daemon finished"), std::string::npos) << r.output;
  EXPECT_TRUE(mproc_test::children_of_self().empty());
  EXPECT_GE(r.took, 900ms) << "SIGKILL came before the grace period";
  EXPECT_LT(r.took, 10s);
}

TEST(Runtime, ExitJoinsAChildWhoseProcessObjectIsGone) {
  become_subreaper();
  const helper_run r = run_helper("destroyed-then-exit");
  EXPECT_EQ(r.exitcode, 0);
  EXPECT_NE(r.output.find("non-daemon finished"), std::string::npos) << r.output;
  EXPECT_TRUE(mproc_test::children_of_self().empty());
}

// Starts a middle process that starts a grandchild (daemon or not) and reports its pid,
// SIGKILLs the middle, and returns the grandchild's pid and a pidfd for it (the test,
// being subreaper, adopts it).
std::pair<pid_t, int> orphan_grandchild(bool daemon, const gate& hold) {
  test_pipe out;
  mproc::process middle([&out, &hold, daemon] {
    mproc::process grandchild([&hold] { hold.wait(); });
    grandchild.set_daemon(daemon);
    grandchild.start();
    out.write(std::to_string(*grandchild.pid()) + "\n");
    for (;;) ::pause();
  });
  middle.start();
  out.close_write();
  const pid_t grandchild = static_cast<pid_t>(std::stoi(out.read_line().value_or("0")));
  middle.kill();
  middle.join();
  EXPECT_EQ(middle.exitcode(), -SIGKILL);
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, grandchild, 0));
  return {grandchild, pidfd};
}

// A daemon grandchild dies within two seconds of its parent's SIGKILL.
TEST(Runtime, DaemonGrandchildDiesWithin2sOfItsParentsSigkill) {
  become_subreaper();
  gate hold;
  const auto [grandchild, pidfd] = orphan_grandchild(true, hold);
  ASSERT_GT(grandchild, 0);
  if (pidfd < 0) {
    // Already gone and reaped by us? Not possible: we reap nothing behind mproc's back.
    FAIL() << "pidfd_open(" << grandchild << "): " << std::strerror(errno);
  }
  EXPECT_TRUE(mproc_test::fd_readable(pidfd, 2000)) << "daemon grandchild outlived its parent";
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(grandchild), &info, WEXITED), 0);
  EXPECT_EQ(info.si_code, CLD_KILLED);
  EXPECT_EQ(info.si_status, SIGKILL);
  ::close(pidfd);
}

TEST(Runtime, NonDaemonGrandchildIsOrphanedNotKilled) {
  become_subreaper();
  gate hold;
  const auto [grandchild, pidfd] = orphan_grandchild(false, hold);
  ASSERT_GE(pidfd, 0);
  EXPECT_FALSE(mproc_test::fd_readable(pidfd, 300)) << "a non-daemon child died with its parent";
  const auto st = mproc_test::read_proc_stat(grandchild);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->ppid, ::getpid()) << "the orphan was not adopted";
  hold.release();
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(grandchild), &info, WEXITED), 0);
  EXPECT_EQ(info.si_code, CLD_EXITED);
  EXPECT_EQ(info.si_status, 0);
  ::close(pidfd);
}

// Runs in a forked child: as an unprivileged user with RLIMIT_NPROC at 0, fork fails with
// EAGAIN. Returns a bit per broken expectation.
int fork_failure_scenario() {
  int broken = 0;
  if (::geteuid() == 0) {
    // root ignores RLIMIT_NPROC: become nobody
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 64;
    ::prctl(PR_SET_DUMPABLE, 1);  // keep /proc/self/fd readable
  }
  rlimit limit{};
  ::getrlimit(RLIMIT_NPROC, &limit);
  const rlimit none{0, limit.rlim_max};
  if (::setrlimit(RLIMIT_NPROC, &none) != 0) return 128;
  const int fds_before = mproc_test::count_open_fds();
  mproc::process p([] {});
  try {
    p.start();
    broken |= 1;
    p.join();
  } catch (const std::system_error& e) {
    if (e.code().value() != EAGAIN) broken |= 2;
  }
  if (p.pid().has_value() || p.is_alive()) broken |= 4;
  if (mproc_test::count_open_fds() != fds_before) broken |= 8;
  if (!mproc::active_children().empty()) broken |= 16;
  // Lifting the limit makes the same object startable.
  limit.rlim_cur = limit.rlim_max;
  if (::setrlimit(RLIMIT_NPROC, &limit) != 0) return 128;
  try {
    p.start();
    p.join();
    if (p.exitcode() != 0) broken |= 32;
  } catch (...) {
    broken |= 32;
  }
  return broken;
}

// A fork failure under RLIMIT_NPROC throws std::system_error and leaks nothing.
TEST(Runtime, ForkFailureUnderRlimitNprocThrowsAndLeaksNothing) {
  const pid_t pid = mproc::os::fork();
  if (pid == 0) ::_exit(fork_failure_scenario());
  const auto status = mproc::os::waitpid(pid);
  ASSERT_TRUE(status.exited());
  EXPECT_EQ(status.exit_code(), 0) << "bits: 1 no throw, 2 not EAGAIN, 4 started, 8 fd leak, "
                                      "16 child listed, 32 no recovery, 64 setuid, 128 setrlimit";
}

}  // namespace
