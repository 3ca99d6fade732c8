// Trust boundaries: what another program or process can reach of mproc's objects.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include "mproc/mproc.hpp"
#include "test_support.hpp"

namespace {

// The descriptors a program exec'd by a forked child starts with: what mproc would leak
// into a subprocess (the child's stdout is the pipe; `ls` lists its own directory fd too).
std::set<std::string> descriptors_an_exec_sees() {
  mproc_test::test_pipe out;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out.write_fd(), STDOUT_FILENO);
    ::execl("/bin/ls", "ls", "-1", "/proc/self/fd", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  out.close_write();
  const std::string listing = out.read_all();
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << listing;
  std::set<std::string> fds;
  std::istringstream lines(listing);
  for (std::string line; std::getline(lines, line);) fds.insert(line);
  return fds;
}

int twice(int x) { return 2 * x; }

// What each open descriptor of the calling process is, counted by kind: "memfd:mproc-queue",
// "memfd:mproc-pool", "pidfd", "eventfd", "socket", ... (the directory being read left out).
std::map<std::string, int> descriptor_kinds() {
  std::map<std::string, int> kinds;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return kinds;
  for (dirent* e; (e = ::readdir(dir)) != nullptr;) {
    if (e->d_name[0] == '.' || std::atoi(e->d_name) == ::dirfd(dir)) continue;
    char target[256];
    const std::string link = std::string("/proc/self/fd/") + e->d_name;
    const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    if (n < 0) continue;
    std::string kind(target, static_cast<std::size_t>(n));
    if (kind.rfind("/memfd:", 0) == 0)
      kind = kind.substr(1, kind.find(' ') - 1);
    else if (kind.rfind("anon_inode:", 0) == 0)
      kind = kind.substr(11);
    else if (kind.find(':') != std::string::npos)
      kind = kind.substr(0, kind.find(':'));
    ++kinds[kind];
  }
  ::closedir(dir);
  return kinds;
}

std::string describe(const std::map<std::string, int>& kinds) {
  std::string out;
  for (const auto& [kind, count] : kinds) out += kind + "=" + std::to_string(count) + " ";
  return out;
}

// A process child holds no descriptor of the pools or the other children of its parent.
// A `process` child inherits the handles it can use (queues, locks and shared memory made
// before the fork work there: DESIGN), and nothing else of mproc: not the descriptors of
// the parent's pool (its zygote's socket and pidfd, its workers' pidfds, its channels,
// control memory and eventfd), nor the pidfds of the parent's other children.
TEST(Trust, AProcessChildHoldsNoDescriptorOfPoolsOrSiblings) {
  mproc::queue<std::string> report;
  mproc::mutex m;
  mproc::pool pool(2);
  ASSERT_EQ(pool.apply(twice, 21), 42);
  mproc::event e;
  mproc::process sibling([](mproc::event go) { go.wait(); }, e);
  sibling.start();
  mproc::process child([](mproc::queue<std::string> out) { out.put(describe(descriptor_kinds())); }, report);
  child.start();
  const std::string in_child = report.get(std::chrono::seconds(10));
  child.join();
  e.set();
  sibling.join();
  const auto parent_now = descriptor_kinds();
  EXPECT_GT(parent_now.count("memfd:mproc-pool"), 0u) << describe(parent_now);
  EXPECT_EQ(in_child.find("mproc-pool"), std::string::npos) << in_child;
  EXPECT_EQ(in_child.find("pidfd"), std::string::npos) << in_child;
  EXPECT_EQ(in_child.find("eventfd"), std::string::npos) << in_child;
  EXPECT_EQ(in_child.find("socket"), std::string::npos) << in_child;
  EXPECT_NE(in_child.find("memfd:mproc-queue=1 "), std::string::npos) << in_child;  // `report`
  EXPECT_NE(in_child.find("memfd:mproc-lock=1 "), std::string::npos) << in_child;   // `m`
  pool.close();
  pool.join();
}

// What a `process` started inside a pool task holds: its own queue, not the pool's task
// and result channels, which the worker keeps only to map them as they grow.
std::string descriptors_of_a_process_started_in_a_task() {
  mproc::queue<std::string> report;
  mproc::process child([](mproc::queue<std::string> out) { out.put(describe(descriptor_kinds())); }, report);
  child.start();
  std::string kinds = report.get(std::chrono::seconds(10));
  child.join();
  return kinds;
}

TEST(Trust, AProcessStartedInAPoolTaskHoldsNoDescriptorOfThePool) {
  mproc::pool pool(1);
  const std::string in_child = pool.apply(descriptors_of_a_process_started_in_a_task);
  EXPECT_NE(in_child.find("memfd:mproc-queue=1 "), std::string::npos) << in_child;  // `report` only
  EXPECT_EQ(in_child.find("mproc-pool"), std::string::npos) << in_child;
  pool.close();
  pool.join();
}

// Every descriptor mproc opens is O_CLOEXEC: a program exec'd from a process that holds
// queues, locks, pipes, a pool and running children inherits none of them.
TEST(Trust, AnExecdProgramInheritsNoMprocDescriptor) {
  const auto before = descriptors_an_exec_sees();
  mproc::queue<int> q;
  mproc::joinable_queue<std::string> jq;
  mproc::mutex m;
  mproc::condition c;
  mproc::semaphore s(2);
  mproc::event e;
  mproc::barrier b(2);
  mproc::shared_array<double> a(16);
  auto [left, right] = mproc::pipe();
  mproc::pool pool(2);
  ASSERT_EQ(pool.apply(twice, 21), 42);
  mproc::process child([](mproc::event go) { go.wait(); }, e);
  child.start();
  q.put(1);
  const auto after = descriptors_an_exec_sees();
  EXPECT_EQ(after, before) << "mproc descriptors leak into exec'd programs";
  e.set();
  child.join();
  pool.close();
  pool.join();
}

// Shared memory is a memfd, never a name another user could open, and its mode is 0600.
TEST(Trust, SharedMemoryIsAnUnnamedPrivateMemfd) {
  const auto shm_before = mproc_test::dev_shm_entries_but_named_shm();
  const int fds_before = mproc_test::count_open_fds();
  mproc::queue<int> q;
  mproc::mutex m;
  EXPECT_EQ(mproc_test::dev_shm_entries_but_named_shm(), shm_before);
  int memfds = 0;
  for (int fd = 0; fd < 1024; ++fd) {
    char link[64];
    char target[256];
    std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    const ssize_t n = ::readlink(link, target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    if (std::string(target).rfind("/memfd:mproc", 0) != 0) continue;
    ++memfds;
    struct stat st {};
    ASSERT_EQ(::fstat(fd, &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600U) << target;
    EXPECT_NE(::fcntl(fd, F_GETFD) & FD_CLOEXEC, 0) << target;
  }
  EXPECT_GE(memfds, 2);
  EXPECT_GE(mproc_test::count_open_fds(), fds_before + 2);
}

}  // namespace
