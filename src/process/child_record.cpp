#include "process/child_record.hpp"

#include "mproc/error.hpp"
#include "os/syscall.hpp"
#include "process/runtime.hpp"
#include "wait/readable.hpp"

namespace mproc::detail {

child_record::child_record(std::string name, bool daemon)
    : owner_(current_pid()), name_(std::move(name)), daemon_(daemon) {
  runtime::instance().register_fork_local(this);
}

child_record::~child_record() {
  runtime::instance().unregister_fork_local(this);
  if (owner_ != current_pid()) (void)handle_.release();  // not ours to close
}

void child_record::set_started(child_handle handle) noexcept {
  pid_ = handle.pid();
  handle_ = std::move(handle);
}

bool child_record::try_reap() {
  {
    std::lock_guard lock(mutex_);
    if (reaped_) return true;
    std::error_code ec;
    const std::optional<int> code = handle_.try_reap(ec);
    if (ec) {
      // Any of join(), is_alive(), exitcode(), active_children() may be reaping.
      if (ec != std::errc::no_child_process) throw_system_error(ec, "mproc::process: waitid");
      status_lost_ = true;  // someone else reaped it: it has ended, its status is gone
    } else if (!code) {
      return false;  // still running
    } else {
      exitcode_ = *code;
    }
    reaped_ = true;
  }
  runtime::instance().untrack(this);
  return true;
}

bool child_record::wait(deadline until) {
  {
    std::lock_guard lock(mutex_);
    if (reaped_) return true;
  }
  // Sleep first: a waitid probe before sleeping finds a just-started child running.
  for (;;) {
    if (!wait_readable(handle_.fd(), until, "mproc::process::join")) return try_reap();
    if (try_reap()) return true;
  }
}

std::optional<int> child_record::exitcode() {
  if (!try_reap()) return std::nullopt;
  std::lock_guard lock(mutex_);
  if (status_lost_) {
    throw error("mproc::process::exitcode: process " + name_ + " (pid " + std::to_string(pid_) +
                ") was reaped outside mproc (os::wait, os::waitpid, or SIGCHLD set to SIG_IGN), or its forkserver "
                "died before reporting its end, so its exit code is lost");
  }
  return exitcode_;
}

std::error_code child_record::signal(int sig) {
  std::lock_guard lock(mutex_);  // a reaped child's pid may be reused: never signal after reaping
  if (reaped_) return {};
  const std::error_code ec = handle_.signal(sig);
  if (ec == std::errc::no_such_process) return {};  // ended meanwhile
  return ec;
}

}  // namespace mproc::detail
