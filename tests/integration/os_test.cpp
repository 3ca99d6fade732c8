// mproc::os with real child processes.
#include "mproc/os.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <system_error>

#include "mproc/process.hpp"
#include "test_support.hpp"

namespace {

TEST(Os, ForkAndWaitReport256ForExitCodeOne) {
  const pid_t pid = mproc::os::fork();
  if (pid == 0) ::_exit(1);
  const auto [waited, status] = mproc::os::wait();
  EXPECT_EQ(waited, pid);
  EXPECT_EQ(status.raw(), 256);
  EXPECT_TRUE(status.exited());
  EXPECT_EQ(status.exit_code(), 1);
}

TEST(Os, WaitpidReportsASignal) {
  const pid_t pid = mproc::os::fork();
  if (pid == 0) {
    for (;;) ::pause();
  }
  ::kill(pid, SIGKILL);
  const auto status = mproc::os::waitpid(pid);
  EXPECT_TRUE(status.signaled());
  EXPECT_EQ(status.signal(), SIGKILL);
  EXPECT_EQ(status.raw(), 9);
}

TEST(Os, PidsSeenFromBothSides) {
  mproc_test::test_pipe out;
  const pid_t parent = mproc::os::getpid();
  EXPECT_EQ(parent, ::getpid());
  EXPECT_EQ(mproc::os::getppid(), ::getppid());
  const pid_t pid = mproc::os::fork();
  if (pid == 0) {
    const std::string line = std::to_string(mproc::os::getpid()) + " " + std::to_string(mproc::os::getppid()) + "\n";
    (void)::write(out.write_fd(), line.data(), line.size());
    ::_exit(0);
  }
  out.close_write();
  EXPECT_EQ(out.read_line(), std::to_string(pid) + " " + std::to_string(parent));
  EXPECT_EQ(mproc::os::waitpid(pid).raw(), 0);
}

TEST(Os, WaitWithoutChildrenThrowsSystemError) {
  try {
    (void)mproc::os::wait();
    FAIL() << "wait() without children returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), ECHILD);
  }
}

TEST(Os, WaitpidOfAStrangerThrowsSystemError) {
  try {
    (void)mproc::os::waitpid(1);
    FAIL() << "waitpid(1) returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), ECHILD);
  }
  EXPECT_THROW((void)mproc::os::waitpid(0), std::system_error);
  EXPECT_THROW((void)mproc::os::waitpid(-1), std::system_error);
}

TEST(Os, ForkFlushesBufferedOutputOnce) {
  mproc_test::test_pipe out;
  const pid_t writer = mproc::os::fork();
  if (writer == 0) {
    // stdout to a pipe is fully buffered: without a flush before fork the grandchild
    // would print "before" a second time.
    ::dup2(out.write_fd(), STDOUT_FILENO);
    std::printf("before\n");
    const pid_t pid = mproc::os::fork();
    if (pid == 0) {
      std::printf("child\n");
      std::fflush(stdout);
      ::_exit(0);
    }
    mproc::os::waitpid(pid);
    ::_exit(0);
  }
  out.close_write();
  EXPECT_EQ(out.read_all(), "before\nchild\n");
  mproc::os::waitpid(writer);
}

TEST(Os, ReapingAProcessChildElsewhereMakesItsExitcodeAClearError) {
  mproc::process p([] { ::_exit(4); });
  p.start();
  const auto [pid, status] = mproc::os::wait();  // steals the child's status
  EXPECT_EQ(pid, *p.pid());
  EXPECT_EQ(status.exit_code(), 4);
  p.join();  // returns: the child has ended
  EXPECT_FALSE(p.is_alive());
  EXPECT_THROW((void)p.exitcode(), mproc::error);
}

}  // namespace
