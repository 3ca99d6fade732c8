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

#include <algorithm>
#include <optional>
#include <system_error>
#include <vector>

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

  // What one wait() saw.
  struct events {
    bool parent_died = false;    // the server is to end, after its own clean-up
    bool control_ready = false;  // its control socket is readable (a request, or closed)
  };

  // One turn of the server's loop: waits until the control socket is readable, the parent
  // dies or a child ends. Every child that ended is reaped and handed to `ended(child,
  // code)` (its code as child_handle::try_reap gives it), then dropped from `children`,
  // whose elements have a child_handle `handle`; not once the parent is found dead.
  template <class Child, class Ended>
  events wait(int control, std::vector<Child>& children, Ended ended) noexcept {
    // A -1 descriptor (no pidfd, no signalfd) is skipped by poll. The timeout: -1, or
    // 100 ms without pidfds, to ask getppid().
    fds_.assign({{control, POLLIN, 0}, {parent_fd_.get(), POLLIN, 0}, {child_ended_.get(), POLLIN, 0}});
    for (const Child& c : children) fds_.push_back({c.handle.fd(), POLLIN, 0});
    if (::poll(fds_.data(), fds_.size(), parent_fd_ ? -1 : 100) < 0) return {};
    if (fds_[1].revents != 0 || (!parent_fd_ && ::getppid() != parent_)) return {.parent_died = true};
    const bool some_child_ended = drain_child_ended(fds_[2]);
    for (std::size_t i = 3; i < fds_.size(); ++i) {
      if (fds_[i].revents == 0 && !some_child_ended) continue;
      Child& c = children[i - 3];
      std::error_code ec;
      const std::optional<int> code = c.handle.try_reap(ec);
      if (!code) continue;
      ended(c, *code);
      c.handle.reset();
    }
    std::erase_if(children, [](const Child& c) { return !c.handle; });
    return {.control_ready = fds_[0].revents != 0};
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
  // Whether some child may have ended without its own entry saying so (the signalfd fired;
  // it is drained): then every child is to be checked.
  bool drain_child_ended(const pollfd& entry) noexcept {
    if (entry.revents == 0) return false;
    signalfd_siginfo info;
    while (::read(child_ended_.get(), &info, sizeof info) > 0) {
    }
    return true;
  }

  pid_t parent_;
  unique_fd parent_fd_;
  unique_fd child_ended_;  // the SIGCHLD signalfd, without pidfds
  sigset_t old_mask_;
  std::vector<pollfd> fds_;  // wait()'s poll set, kept for its memory
};

}  // namespace mproc::detail
