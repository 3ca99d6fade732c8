// mproc::os — the low-level calls of Python's `os` module that the tutorial starts from.
//
// Contract:
// - Thin, throwing wrappers over fork(2), getpid(2), getppid(2), wait(2) and waitpid(2).
//   Failures throw `std::system_error` with the errno; EINTR is retried, never reported.
// - `fork()` flushes stdout, stderr and the standard C++ streams first, so buffered output
//   is not printed twice, and gives the child a fresh mproc runtime (it has no children).
// - `wait()` and `waitpid()` block until a child ends and reap it. They reap any child,
//   including one started by `mproc::process`; mixing the two on the same child leaves the
//   `process` unable to learn its exit code, so use one or the other per child.
#pragma once

#include <utility>

#include "mproc/types.hpp"

namespace mproc::os {

// The status of an ended child, as wait(2) reports it.
class wait_status {
 public:
  constexpr wait_status() noexcept = default;
  constexpr explicit wait_status(int raw) noexcept : raw_(raw) {}

  // The number Python's os.wait() prints: the exit code shifted left by 8 (256 for
  // exit code 1), or the signal number (plus 128 when a core was dumped).
  constexpr int raw() const noexcept { return raw_; }

  bool exited() const noexcept;       // ended by exit/_exit/return from main
  int exit_code() const noexcept;     // meaningful when exited()
  bool signaled() const noexcept;     // ended by a signal
  int signal() const noexcept;        // meaningful when signaled()
  bool core_dumped() const noexcept;  // meaningful when signaled()

  friend constexpr bool operator==(wait_status, wait_status) noexcept = default;

 private:
  int raw_ = 0;
};

// fork(2): returns the child's pid in the parent and 0 in the child.
pid_t fork();

pid_t getpid() noexcept;
pid_t getppid() noexcept;

// Blocks until any child ends; returns its pid and status. No child: std::system_error (ECHILD).
std::pair<pid_t, wait_status> wait();

// Blocks until child `pid` ends; returns its status. Not our child: std::system_error (ECHILD).
wait_status waitpid(pid_t pid);

}  // namespace mproc::os
