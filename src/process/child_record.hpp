// The parent's record of one child started by mproc::process.
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>

#include "mproc/detail/wait/deadline.hpp"
#include "mproc/types.hpp"
#include "os/fork_local.hpp"
#include "process/child_handle.hpp"

namespace mproc::detail {

// Shared by the `process` object that started the child and by the runtime, which keeps
// every unreaped child so that none is left a zombie. Only the process that started the
// child (`owner`) may wait for or signal it: a forked copy of the record in another
// process has no handle. Whether the handle is a pidfd or the pid fallback is the
// child_handle's business alone.
class child_record final : public fork_local {
 public:
  child_record(std::string name, bool daemon);
  ~child_record();
  child_record(const child_record&) = delete;
  child_record& operator=(const child_record&) = delete;

  // Called once by the owner right after fork(2), before the record is shared.
  void set_started(child_handle handle) noexcept;
  // Instead of set_started, when the child had already ended and been reaped by someone
  // else before a handle could be opened on it (SIGCHLD ignored, SA_NOCLDWAIT, or a
  // handler that reaps every child): it did run, and its exit code is lost.
  void set_reaped_elsewhere(pid_t pid) noexcept {
    pid_ = pid;
    reaped_ = true;
    status_lost_ = true;
  }

  pid_t owner() const noexcept { return owner_; }
  pid_t pid() const noexcept { return pid_; }
  // Readable once the child has ended (a pidfd, or the fallback's notice pipe); -1 in a
  // forked copy.
  int sentinel() const noexcept { return handle_.fd(); }
  const std::string& name() const noexcept { return name_; }
  bool daemon() const noexcept { return daemon_; }

  // Reaps the child if it has ended; true when it is reaped (now or before). Never blocks.
  bool try_reap();
  // Waits until the child ends and reaps it; false when `until` passed first.
  bool wait(deadline until);
  // nullopt while running; -N for signal N. Throws mproc::error if someone else reaped it.
  std::optional<int> exitcode();
  // Sends `signal`; a no-op once reaped. Under the lock that reaping takes, so the pid
  // fallback's kill(2) never hits a recycled pid (see child_handle.hpp).
  std::error_code signal(int signal);

  // In a forked child, the record belongs to the parent: close its handle's descriptor
  // (async-signal-safe; the record's mutex is not touched). Touches only what is set:
  // each page first written in a fresh child costs a page fault.
  void forget_in_fork_child() noexcept override {
    if (handle_.fd() >= 0) handle_.reset();
  }

 private:
  const pid_t owner_;
  pid_t pid_ = 0;
  child_handle handle_;  // reaping (waitid) guarded by mutex_
  std::string name_;
  bool daemon_;

  std::mutex mutex_;          // serialises reaping: waitid must run once
  bool reaped_ = false;       // guarded by mutex_
  bool status_lost_ = false;  // guarded by mutex_: reaped by os::wait or SIGCHLD=SIG_IGN
  int exitcode_ = 0;          // guarded by mutex_
};

}  // namespace mproc::detail
