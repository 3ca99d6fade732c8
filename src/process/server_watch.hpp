// What a single-threaded process that forks children on another's behalf (the pool's
// zygote, the forkserver) watches: its parent's death and its children's ends.
//
// - The parent: its pidfd becomes readable when it dies. Without pidfds (valgrind, Linux
//   < 5.3) getppid() changes instead (the server is re-parented): poll with
//   poll_timeout_ms() and ask parent_died() after each poll.
// - The children: the server reaps them itself, so SIGCHLD is set to its default (SIG_IGN
//   or SA_NOCLDWAIT inherited from the program would make the kernel reap them first, and
//   their ends would go unnoticed). With pidfds each child's handle is its own poll entry.
//   Without them it hears of their ends through a SIGCHLD signalfd, not child_handle's
//   watcher threads: it must stay single-threaded, or a child forked while a watcher
//   thread held a lock (an allocator's, as ASan's does as the thread exits) would inherit
//   it held, and deadlock on it.
// Everything here is async-signal-safe; a failure to set it up ends the server (_exit(1)),
// as does a parent already dead, so that the server never outlives its parent.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <system_error>

#include "os/fd.hpp"
#include "os/syscall.hpp"

namespace mproc::detail {

class server_watch {
 public:
  // First thing in the server, whose parent is `parent`.
  explicit server_watch(pid_t parent) noexcept : parent_(parent) {
    std::error_code ec;
    parent_fd_.reset(pidfd_open(parent_, ec));
    if ((!parent_fd_ && ec != std::errc::function_not_supported) || ::getppid() != parent_) ::_exit(1);
    struct sigaction default_chld {};
    default_chld.sa_handler = SIG_DFL;
    ::sigaction(SIGCHLD, &default_chld, nullptr);
    sigemptyset(&old_mask_);
    if (pidfds_supported()) return;
    sigset_t chld_only;
    sigemptyset(&chld_only);
    sigaddset(&chld_only, SIGCHLD);
    // The server is single-threaded: sigprocmask is its thread's mask.
    ::sigprocmask(SIG_BLOCK, &chld_only, &old_mask_);  // NOLINT(concurrency-mt-unsafe): queued for the signalfd
    child_ended_.reset(::signalfd(-1, &chld_only, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!child_ended_) ::_exit(1);
  }
  server_watch(const server_watch&) = delete;
  server_watch& operator=(const server_watch&) = delete;

  // The two entries of the server's poll set (a -1 descriptor is skipped by poll), and its
  // timeout: -1, or 100 ms without pidfds, to ask getppid().
  pollfd parent_entry() const noexcept { return {parent_fd_.get(), POLLIN, 0}; }
  pollfd children_entry() const noexcept { return {child_ended_.get(), POLLIN, 0}; }
  int poll_timeout_ms() const noexcept { return parent_fd_ ? -1 : 100; }

  // After a poll: whether the parent died.
  bool parent_died(const pollfd& parent_entry) const noexcept {
    return parent_entry.revents != 0 || (!parent_fd_ && ::getppid() != parent_);
  }
  // After a poll: whether some child may have ended without its own entry saying so (the
  // signalfd fired; it is drained): then every child is to be checked.
  bool some_child_ended(const pollfd& children_entry) noexcept {
    if (children_entry.revents == 0) return false;
    signalfd_siginfo info;
    while (::read(child_ended_.get(), &info, sizeof info) > 0) {
    }
    return true;
  }

  // In a child just forked from the server: drops what the server watches with, and gives
  // back the signal mask the server had.
  void forget_in_child() noexcept {
    parent_fd_.reset();
    if (child_ended_) {
      child_ended_.reset();
      ::sigprocmask(SIG_SETMASK, &old_mask_, nullptr);  // NOLINT(concurrency-mt-unsafe): one thread
    }
  }

 private:
  pid_t parent_;
  unique_fd parent_fd_;
  unique_fd child_ended_;  // the SIGCHLD signalfd, without pidfds
  sigset_t old_mask_;
};

}  // namespace mproc::detail
