// A handle on one child of the calling process: wait for it, reap it, signal it, poll for
// its end. The one place that knows whether mproc manages children through pidfds or,
// without them, through plain pids.
//
// Contract:
// - With pidfd support (Linux >= 5.3; see pidfds_supported() in syscall.hpp) the handle
//   holds the child's pidfd: fd() is it, signals go through it, reaping is
//   waitid(P_PIDFD). This path costs exactly one pidfd_open(2) per child.
// - Without it (pidfd_open fails with ENOSYS: an older kernel, or valgrind; or the test
//   hook MPROC_FORCE_NO_PIDFD=1) the handle falls back to the pid: reaping is
//   waitid(P_PID), signals are kill(2), and fd() is the read end of a pipe whose write
//   end a small watcher thread holds, blocked in waitid(P_PID, WNOWAIT) on the child,
//   and closes the moment the child ends. So fd() becomes readable (end of file) when
//   the child ends and before it is reaped, exactly as a pidfd does; it does not depend
//   on the child's own descriptors (an exec or a grandchild cannot end it early or
//   late), and pollers, the sentinel and the reaper need not know which kind they hold.
//   The watcher never reaps and holds no lock across fork(2) but its own (taken in a
//   pthread_atfork handler), so a process that has watchers may still fork; a forked
//   child closes every watcher's write end it inherited, so it never delays another
//   process's end-of-file. A watcher costs one thread while its child runs.
//   A process that must stay single-threaded (the pool's zygote: its workers are forked
//   from it and must inherit no lock a thread holds) opens its handles with
//   without_pidfd::pid_only instead: no watcher, fd() is -1 without pidfds, and the
//   process learns of its children's ends another way (a SIGCHLD signalfd).
// - A child of another process (the forkserver's children: handle made by reported())
//   cannot be waited for with waitid: that process reaps it and reports its end as a
//   status_record on a SOCK_SEQPACKET socket, which is fd() (readable once the report is
//   there, or the reporter is gone: end of file, the status lost, ECHILD). Signals go
//   through the pidfd the reporter passed, or without pidfds by pid: the pid could be
//   reused between the reporter's reaping and the report's arrival, a window of
//   microseconds.
// - Pid-reuse caveat of the fallback: a pid is unique only until it is reaped. The owner
//   of the handle reaps through it and never signals after reaping (child_record holds
//   its lock across both), so it cannot hit a recycled pid -- unless someone reaped the
//   child behind mproc's back (os::wait(), SIGCHLD set to SIG_IGN), which the process
//   contract already forbids; with a pidfd even that cannot misdirect a signal.
// - fd() is O_CLOEXEC. Thread safety: const members may be called from several threads;
//   reaping must be serialised by the caller (waitid must run once).
#pragma once

#include <cstdint>
#include <optional>
#include <system_error>

#include "mproc/types.hpp"

namespace mproc::detail {

// What a handle does for a child's end when the system has no pidfds.
enum class without_pidfd {
  watcher_thread,  // fd() is a pipe that a watcher thread closes when the child ends
  pid_only,        // fd() is -1: the caller learns of the end itself, and starts no thread
};

// What a reporter (the forkserver) tells the owner of a reported() handle, in order: the
// child has its arguments (`ready`, written by the child itself), the child ended
// (`exited`, value: its exit code, or -N for signal N).
struct status_record {
  enum kind_t : std::int32_t { ready = 1, exited = 2 };
  std::int32_t kind = 0;
  std::int32_t value = 0;
};

class child_handle {
 public:
  child_handle() noexcept = default;
  // For `pid`, a child of the calling process not yet reaped: call it right after
  // fork(2). On failure (no descriptor, no thread) the handle is empty and `ec` says why;
  // the child is then still the caller's to end and reap.
  static child_handle open(pid_t pid, std::error_code& ec,
                           without_pidfd fallback = without_pidfd::watcher_thread) noexcept;

  // For child `pid` of another process, which reports its end on `status`; `pidfd` (-1
  // without pidfds) signals it. Takes both descriptors.
  static child_handle reported(pid_t pid, int status, int pidfd) noexcept;

  child_handle(child_handle&& other) noexcept;
  child_handle& operator=(child_handle&& other) noexcept;
  child_handle(const child_handle&) = delete;
  child_handle& operator=(const child_handle&) = delete;
  ~child_handle() { reset(); }

  explicit operator bool() const noexcept { return pid_ != 0; }
  pid_t pid() const noexcept { return pid_; }
  // Readable once the child has ended (before it is reaped); for poll(2). -1 when empty,
  // and without pidfds when opened pid_only.
  int fd() const noexcept { return fd_; }
  // The pidfd, or -1 without pidfd support: what to pass to another process that must
  // signal the child (see send_signal() in syscall.hpp).
  int pidfd() const noexcept { return reported_ ? signal_fd_ : (is_pidfd_ ? fd_ : -1); }

  // Reaps the child if it has ended: its exit code (n, or -N for signal N); nullopt
  // while it runs. An error in `ec` (ECHILD: someone else reaped it) gives nullopt.
  std::optional<int> try_reap(std::error_code& ec) noexcept;
  // The same, waiting for the child to end. EINTR is retried.
  std::optional<int> reap(std::error_code& ec) noexcept;
  // Sends `signal`; ESRCH (std::errc::no_such_process) when the child is gone.
  std::error_code signal(int signal) const noexcept;

  // Closes the descriptor (async-signal-safe: usable in a forked child) and empties the
  // handle. A watcher thread still waiting goes on harmlessly until the child ends.
  void reset() noexcept;
  // Empties the handle without closing: the descriptor is returned to the caller.
  int release() noexcept;

 private:
  std::optional<int> wait(int options, std::error_code& ec) noexcept;
  std::optional<int> read_report(bool block, std::error_code& ec) noexcept;

  pid_t pid_ = 0;
  int fd_ = -1;
  bool is_pidfd_ = false;
  bool reported_ = false;
  int signal_fd_ = -1;  // reported(): the pidfd that signals, or -1
};

}  // namespace mproc::detail
