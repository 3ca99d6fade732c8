#include "child_record.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mproc/error.hpp"
#include "runtime.hpp"
#include "syscall.hpp"

#ifndef P_PIDFD
#define P_PIDFD 3  // Linux 5.4; older glibc headers lack the name
#endif

namespace mproc::detail {

child_record::child_record(std::string name, bool daemon)
    : owner_(current_pid()), name_(std::move(name)), daemon_(daemon) {
  runtime::instance().register_record(this);
}

child_record::~child_record() {
  runtime::instance().unregister_record(this);
  if (pidfd_ >= 0 && owner_ == current_pid()) ::close(pidfd_);
}

void child_record::set_started(pid_t pid, int pidfd) noexcept {
  pid_ = pid;
  pidfd_ = pidfd;
}

bool child_record::try_reap() {
  {
    std::lock_guard lock(mutex_);
    if (reaped_) return true;
    siginfo_t info{};
    const int r = retry_on_eintr(
        [&] { return ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_), &info,
                              WEXITED | WNOHANG); });
    if (r < 0) {
      if (errno != ECHILD) throw_system_error(last_error(), "waitid");
      status_lost_ = true;  // someone else reaped it: it has ended, its status is gone
    } else if (info.si_pid == 0) {
      return false;  // still running
    } else {
      exitcode_ = info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
    }
    reaped_ = true;
  }
  runtime::instance().untrack(this);
  return true;
}

bool child_record::wait(const std::chrono::steady_clock::time_point* deadline) {
  {
    std::lock_guard lock(mutex_);
    if (reaped_) return true;
  }
  // Sleep first: a waitid probe before sleeping finds a just-started child running.
  for (;;) {
    if (!wait_readable(pidfd_, deadline)) return try_reap();
    if (try_reap()) return true;
  }
}

std::optional<int> child_record::exitcode() {
  if (!try_reap()) return std::nullopt;
  std::lock_guard lock(mutex_);
  if (status_lost_) {
    throw error("process " + name_ + " (pid " + std::to_string(pid_) +
                ") was reaped outside mproc (os::wait, os::waitpid or SIGCHLD set to SIG_IGN); "
                "its exit code is lost");
  }
  return exitcode_;
}

std::error_code child_record::signal(int sig) {
  std::lock_guard lock(mutex_);  // a reaped child's pid may be reused; its pidfd never is
  if (reaped_) return {};
  const std::error_code ec = pidfd_send_signal(pidfd_, sig);
  if (ec == std::errc::no_such_process) return {};  // ended meanwhile
  return ec;
}

}  // namespace mproc::detail
