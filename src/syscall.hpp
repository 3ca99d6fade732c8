// Internal syscall wrappers: they return std::error_code and never throw; the public layer
// converts failures to exceptions at its boundary.
#pragma once

#include <cerrno>
#include <chrono>
#include <system_error>

#include "mproc/types.hpp"

namespace mproc::detail {

inline std::error_code last_error() noexcept { return {errno, std::system_category()}; }

[[noreturn]] void throw_system_error(std::error_code ec, const char* what);

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

// A pidfd for child `pid`, O_CLOEXEC (pidfds always are).
int pidfd_open(pid_t pid, std::error_code& ec) noexcept;
std::error_code pidfd_send_signal(int pidfd, int signal) noexcept;

// Blocks until `fd` is readable or the absolute CLOCK_MONOTONIC `deadline` passes (no
// deadline: forever). EINTR never stretches the wait. Returns true when readable.
bool wait_readable(int fd, const std::chrono::steady_clock::time_point* deadline);

// The deadline `timeout` from now, saturated at time_point::max().
std::chrono::steady_clock::time_point deadline_after(std::chrono::nanoseconds timeout) noexcept;

}  // namespace mproc::detail
