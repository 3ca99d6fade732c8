// The parent's record of one child started by mproc::process.
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>

#include "mproc/types.hpp"

namespace mproc::detail {

// Shared by the `process` object that started the child and by the runtime, which keeps
// every unreaped child so that none is left a zombie. Only the process that started the
// child (`owner`) may wait for or signal it: a forked copy of the record in another
// process has no pidfd.
class child_record {
 public:
  child_record(std::string name, bool daemon);
  ~child_record();
  child_record(const child_record&) = delete;
  child_record& operator=(const child_record&) = delete;

  // Called once by the owner right after fork(2), before the record is shared.
  void set_started(pid_t pid, int pidfd) noexcept;

  pid_t owner() const noexcept { return owner_; }
  pid_t pid() const noexcept { return pid_; }
  int pidfd() const noexcept { return pidfd_; }
  const std::string& name() const noexcept { return name_; }
  bool daemon() const noexcept { return daemon_; }

  // Reaps the child if it has ended; true when it is reaped (now or before). Never blocks.
  bool try_reap();
  // Waits until the child ends and reaps it; false when `deadline` passed first.
  bool wait(const std::chrono::steady_clock::time_point* deadline);
  // nullopt while running; -N for signal N. Throws mproc::error if someone else reaped it.
  std::optional<int> exitcode();
  // Sends `signal` through the pidfd, so a recycled pid is never hit; a no-op once reaped.
  std::error_code signal(int signal);

  // In a forked child, the record belongs to the parent: forget its pidfd.
  void forget_in_fork_child() noexcept { pidfd_ = -1; }

 private:
  const pid_t owner_;
  pid_t pid_ = 0;
  int pidfd_ = -1;
  std::string name_;
  bool daemon_;

  std::mutex mutex_;          // serialises reaping: waitid must run once
  bool reaped_ = false;       // guarded by mutex_
  bool status_lost_ = false;  // guarded by mutex_: reaped by os::wait or SIGCHLD=SIG_IGN
  int exitcode_ = 0;          // guarded by mutex_
};

}  // namespace mproc::detail
