// Internal syscall wrappers: they return std::error_code and never throw; the public layer
// converts failures to exceptions at its boundary.
#pragma once

#include <cerrno>
#include <string>
#include <system_error>

#include "mproc/types.hpp"

namespace mproc::detail {

inline std::error_code last_error() noexcept { return {errno, std::system_category()}; }

// `what` names the call, in the house voice: "mproc::<type>::<call>: <syscall>", which
// std::system_error follows with the errno's text.
[[noreturn]] void throw_system_error(std::error_code ec, const char* what);
[[noreturn]] void throw_system_error(std::error_code ec, const std::string& what);

// Retries `call` while it fails with EINTR. Only for calls whose retry needs no
// recomputed argument (no timeout); timed waits go through wait_readable().
template <class Call>
auto retry_on_eintr(Call call) noexcept {
  decltype(call()) result;
  do {
    result = call();
  } while (result == -1 && errno == EINTR);
  return result;
}

// Whether this process can use pidfds. False once pidfd_open(2) has failed with ENOSYS
// (Linux < 5.3, or valgrind, which does not know the call), and from the start when the
// environment variable MPROC_FORCE_NO_PIDFD is "1" when mproc first asks (a test hook:
// it makes the pid-based fallback testable on a kernel that has pidfds). Cheap: a load.
bool pidfds_supported() noexcept;

// A pidfd for process `pid`, O_CLOEXEC (pidfds always are). Without pidfd support
// (above) it fails with ENOSYS (std::errc::function_not_supported) and does not ask the
// kernel again. For children of the calling process use child_handle (child_handle.hpp),
// which falls back to the pid.
int pidfd_open(pid_t pid, std::error_code& ec) noexcept;
std::error_code pidfd_send_signal(int pidfd, int signal) noexcept;
// A duplicate (O_CLOEXEC) of descriptor `fd` of the process behind `pidfd`.
int pidfd_getfd(int pidfd, int fd, std::error_code& ec) noexcept;

// Sends `signal` to process `pid`: through `pidfd` when it is one (>= 0), else by
// kill(2). Through a pidfd a recycled pid is never hit. kill(2) is safe only while `pid`
// is an unreaped child of the caller (its pid cannot be reused before it is reaped); for
// any other process a pid reused since the process ended would be hit: callers that use
// it without a pidfd say why that is acceptable.
std::error_code send_signal(pid_t pid, int pidfd, int signal) noexcept;

// SIGKILL to `pid`, an unreaped child of the caller that must not outlive a failed start,
// then reaps it (so kill(2) cannot hit a reused pid).
void kill_and_reap(pid_t pid) noexcept;

}  // namespace mproc::detail
