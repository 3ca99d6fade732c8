// Tutorial section "孤儿进程": 父进程结束,子进程还在执行任务; 子进程交给操作系统进行处理回收.
//
// Three generations. This program (the main program) starts the parent with
// mproc::process; the parent forks the child with mproc::os::fork() and ends without
// waiting for it, so the child becomes an orphan. The kernel hands an orphan to init
// (PID 1), or to its nearest ancestor that asked for orphans with PR_SET_CHILD_SUBREAPER
// (a "subreaper", as systemd or a container runtime may be); the adopter reaps it when it
// ends.
//
// Two pipes keep the output complete and in order without sleeping:
// - `reported`: the parent ends only after the child has printed its PPID, so the child
//   still sees its real parent there;
// - `done`: only the child keeps its write end, so the main program reads it to EOF to
//   know the child has finished; through it the child also sends the PID of its adopter.
//
// Every line ends with std::endl, not '\n': the three processes share stdout, and flushing
// each line keeps their lines in the order they were printed even when stdout is a pipe.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <system_error>
#include <thread>

#include <mproc/os.hpp>
#include <mproc/process.hpp>

namespace {

using namespace std::chrono_literals;

// How long the child waits for its parent to end before it gives up.
constexpr auto parent_end_limit = 10s;

struct pipe_fds {
  int read;
  int write;
};

pipe_fds make_pipe() {
  int fds[2];
  // O_CLOEXEC: the pipe is for these three processes, not for any program they exec.
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::system_category(), "pipe2");
  return {fds[0], fds[1]};
}

void write_all(int fd, const void* data, std::size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::system_error(errno, std::system_category(), "write");
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

// Everything the pipe delivers until every write end is closed.
std::string read_to_eof(int fd) {
  std::string data;
  char buffer[64];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::system_error(errno, std::system_category(), "read");
    if (n == 0) return data;
    data.append(buffer, static_cast<std::size_t>(n));
  }
}

// Who adopted the orphan, for the reader.
std::string describe_adopter(mproc::pid_t pid) {
  // An adopter outside our PID namespace has no PID in it: getppid() reports 0.
  if (pid == 0) return "本 PID 命名空间之外的进程";
  std::ifstream comm_file("/proc/" + std::to_string(pid) + "/comm");
  std::string comm;
  std::getline(comm_file, comm);
  return (pid == 1 ? "init 进程 " : "最近的 subreaper 进程 ") + comm;
}

[[noreturn]] void child(int reported_fd, int done_fd) {
  const mproc::pid_t parent = mproc::os::getppid();
  std::cout << "子进程PID:" << mproc::os::getpid() << ",父进程PPID:" << parent << std::endl;
  // The parent may end now: this child has shown it alive.
  write_all(reported_fd, "!", 1);
  ::close(reported_fd);

  // Nothing tells a child that its parent ended (PR_SET_PDEATHSIG would kill or signal
  // it, which is not the point here), so watch getppid() change.
  const auto deadline = std::chrono::steady_clock::now() + parent_end_limit;
  while (mproc::os::getppid() == parent) {
    if (std::chrono::steady_clock::now() >= deadline) {
      std::cerr << "子进程: 父进程没有在 10 秒内结束" << std::endl;
      std::_Exit(1);
    }
    std::this_thread::sleep_for(1ms);
  }
  const mproc::pid_t adopter = mproc::os::getppid();
  std::cout << "父进程结束,子进程还在执行任务" << std::endl;
  std::cout << "子进程PID:" << mproc::os::getpid() << ",现在的父进程PPID:" << adopter << " ("
            << describe_adopter(adopter) << ")" << std::endl;
  std::cout << "子进程交给操作系统进行处理回收" << std::endl;
  write_all(done_fd, &adopter, sizeof adopter);
  // Like Python's os._exit() after os.fork(): the code after fork() and the atexit
  // handlers belong to the parent's program, not to this copy of it.
  std::_Exit(0);
}

// Runs in the parent, started by the main program with mproc::process.
void parent_task(int done_fd) {
  const pipe_fds reported = make_pipe();
  std::cout << "父进程PID:" << mproc::os::getpid() << ",用 os.fork() 创建子进程" << std::endl;
  const mproc::pid_t pid = mproc::os::fork();
  if (pid == 0) {
    ::close(reported.read);
    child(reported.write, done_fd);
  }
  // Closed here so that read() sees EOF, instead of blocking, should the child die first.
  ::close(reported.write);
  read_to_eof(reported.read);
  ::close(reported.read);
  std::cout << "父进程PID:" << mproc::os::getpid() << " 结束,没有等待也没有回收子进程PID:" << pid << std::endl;
  // Returning ends this process. mproc joins the children it started with mproc::process,
  // never those of os.fork(), so the child is left running.
}

}  // namespace

int main() {
  const pipe_fds done = make_pipe();
  std::cout << "主程序PID:" << mproc::os::getpid() << ",启动父进程" << std::endl;
  mproc::process parent(parent_task, done.write);
  parent.start();
  // From now on only the parent and the child hold the write end; the parent's copy goes
  // when it ends, so EOF below means the child has ended.
  ::close(done.write);
  parent.join();
  const std::string report = read_to_eof(done.read);
  ::close(done.read);

  mproc::pid_t adopter = 0;
  if (parent.exitcode() != 0 || report.size() != sizeof adopter) {
    std::cerr << "orphan: 孤儿进程没有报告收养它的进程" << std::endl;
    return 1;
  }
  std::memcpy(&adopter, report.data(), sizeof adopter);
  std::cout << "主程序: 孤儿进程已结束,由收养它的进程PID:" << adopter << " 回收" << std::endl;
}
