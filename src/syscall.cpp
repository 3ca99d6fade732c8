#include "syscall.hpp"

#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <ctime>
#include <type_traits>

static_assert(std::is_same_v<mproc::pid_t, ::pid_t>, "mproc::pid_t must be POSIX pid_t");

namespace mproc::detail {

void throw_system_error(std::error_code ec, const char* what) { throw std::system_error(ec, what); }

int pidfd_open(pid_t pid, std::error_code& ec) noexcept {
  const long fd = ::syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) {
    ec = last_error();
    return -1;
  }
  ec.clear();
  return static_cast<int>(fd);
}

std::error_code pidfd_send_signal(int pidfd, int signal) noexcept {
  if (::syscall(SYS_pidfd_send_signal, pidfd, signal, nullptr, 0) < 0) return last_error();
  return {};
}

std::chrono::steady_clock::time_point deadline_after(std::chrono::nanoseconds timeout) noexcept {
  const auto now = std::chrono::steady_clock::now();
  if (timeout >= std::chrono::steady_clock::time_point::max() - now) {
    return std::chrono::steady_clock::time_point::max();
  }
  return now + timeout;
}

bool wait_readable(int fd, const std::chrono::steady_clock::time_point* deadline) {
  pollfd pfd{fd, POLLIN, 0};
  for (;;) {
    timespec ts{};
    timespec* tsp = nullptr;
    if (deadline != nullptr && *deadline != std::chrono::steady_clock::time_point::max()) {
      auto left = *deadline - std::chrono::steady_clock::now();
      if (left < decltype(left)::zero()) left = decltype(left)::zero();
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
      ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
      ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
      tsp = &ts;
    }
    const int n = ::ppoll(&pfd, 1, tsp, nullptr);
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) throw_system_error(last_error(), "poll");
  }
}

}  // namespace mproc::detail
