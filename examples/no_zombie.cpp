// Tutorial section "僵尸进程": 子进程任务结束,父进程没有结束且没有对子进程进行资源回收.
//
// First a zombie made on purpose with os.fork(): the child ends at once and the parent
// does not reap it, so /proc shows it in state Z until os.waitpid() reaps it. Then the same
// with mproc::process, which leaves none: join() reaps the child, and a child whose
// `process` object is destroyed while it runs is reaped by mproc's runtime when it ends,
// with no call at all.
//
// Every line ends with std::endl, not '\n', so the lines appear as they are printed even
// when stdout is a pipe.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <system_error>
#include <thread>

#include <mproc/os.hpp>
#include <mproc/process.hpp>

namespace {

using namespace std::chrono_literals;

// How long to watch /proc for a change the kernel or mproc makes within milliseconds.
constexpr auto watch_limit = 10s;

std::string proc_dir(mproc::pid_t pid) { return "/proc/" + std::to_string(pid); }

// The state letter of /proc/<pid>/stat (R running, S sleeping, Z zombie, ...); nullopt
// once the pid is gone.
std::optional<char> proc_state(mproc::pid_t pid) {
  std::ifstream stat_file(proc_dir(pid) + "/stat");
  std::string stat;
  if (!std::getline(stat_file, stat)) return std::nullopt;
  // "pid (comm) state ...": comm may hold spaces and parentheses, so look after the last ')'.
  const auto close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return std::nullopt;
  return stat[close + 2];
}

// Polls /proc until `done(state)` holds; false when `watch_limit` passed first.
template <class Pred>
bool watch(mproc::pid_t pid, Pred done) {
  const auto deadline = std::chrono::steady_clock::now() + watch_limit;
  while (!done(proc_state(pid))) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

bool gone(std::optional<char> state) { return !state; }

std::string describe(std::optional<char> state) {
  if (!state) return "已不存在";
  return std::string("状态为 ") + *state + (*state == 'Z' ? " (僵尸进程)" : "");
}

int zombie_with_os_fork() {
  std::cout << "一、os.fork() 创建的子进程立即结束,父进程不回收它" << std::endl;
  const mproc::pid_t pid = mproc::os::fork();
  if (pid == 0) {
    // Like Python's os._exit(0): end the child at once, running none of the parent's code.
    std::_Exit(0);
  }
  if (!watch(pid, [](std::optional<char> s) { return s == 'Z'; })) {
    std::cerr << "no_zombie: 子进程PID:" << pid << " 没有成为僵尸进程" << std::endl;
    return 1;
  }
  std::cout << "子进程PID:" << pid << " 任务结束,父进程没有结束且没有对子进程进行资源回收: " << proc_dir(pid) << " "
            << describe(proc_state(pid)) << std::endl;
  std::cout << "僵尸进程会对系统造成资源浪费,所以要尽量避免僵尸进程存在" << std::endl;
  const mproc::os::wait_status status = mproc::os::waitpid(pid);
  std::cout << "父进程调用 os.waitpid() 回收子进程,结束状态" << status.raw() << ": " << proc_dir(pid) << " "
            << describe(proc_state(pid)) << std::endl;
  return 0;
}

int joined_process() {
  std::cout << "二、mproc::process: join() 回收子进程" << std::endl;
  mproc::process p([] {});
  p.start();
  p.join();
  const mproc::pid_t pid = *p.pid();
  std::cout << "子进程PID:" << pid << " 结束,join() 之后: " << proc_dir(pid) << " " << describe(proc_state(pid))
            << std::endl;
  return proc_state(pid) ? 1 : 0;
}

int dropped_process() {
  std::cout << "三、mproc::process 对象在子进程运行时被销毁,没有调用 join()" << std::endl;
  // The child runs until the write end of `release` closes; that, not a sleep, decides
  // that it is still running when its object is destroyed.
  int release[2];
  if (::pipe2(release, O_CLOEXEC) != 0) throw std::system_error(errno, std::system_category(), "pipe2");
  const int read_fd = release[0];
  const int write_fd = release[1];
  mproc::pid_t pid = 0;
  {
    mproc::process p([read_fd, write_fd] {
      ::close(write_fd);  // else the child would keep its own pipe open forever
      char byte;
      while (::read(read_fd, &byte, 1) < 0 && errno == EINTR) {
      }
    });
    p.start();
    pid = *p.pid();
  }  // ~process hands the running child to mproc's runtime
  std::cout << "process 对象已销毁,子进程PID:" << pid << " 还在运行: " << proc_dir(pid) << " "
            << describe(proc_state(pid)) << std::endl;
  ::close(write_fd);  // the child ends now
  ::close(read_fd);
  if (!watch(pid, gone)) {
    std::cerr << "no_zombie: 子进程PID:" << pid << " 结束后没有被回收: " << describe(proc_state(pid)) << std::endl;
    return 1;
  }
  std::cout << "子进程结束后,mproc 的运行时自动回收了它: " << proc_dir(pid) << " 已不存在,没有僵尸进程" << std::endl;
  return 0;
}

}  // namespace

int main() {
  if (zombie_with_os_fork() != 0) return 1;
  if (joined_process() != 0) return 1;
  return dropped_process();
}
