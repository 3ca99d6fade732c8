#include "os/syscall.hpp"

#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <type_traits>

static_assert(std::is_same_v<mproc::pid_t, ::pid_t>, "mproc::pid_t must be POSIX pid_t");

namespace mproc::detail {

void throw_system_error(std::error_code ec, const char* what) { throw std::system_error(ec, what); }
void throw_system_error(std::error_code ec, const std::string& what) { throw std::system_error(ec, what); }

namespace {

// Set once pidfd_open(2) failed with ENOSYS: the kernel (or valgrind) has no pidfds, and
// asking again would only fail again.
std::atomic<bool> pidfd_open_missing{false};

// The test hook MPROC_FORCE_NO_PIDFD=1, read once.
bool pidfds_disabled_by_environment() noexcept {
  static const bool disabled = [] {
    // Read once, under the static's guard; nothing in mproc sets the environment.
    const char* value = std::getenv("MPROC_FORCE_NO_PIDFD");  // NOLINT(concurrency-mt-unsafe)
    return value != nullptr && std::strcmp(value, "1") == 0;
  }();
  return disabled;
}

}  // namespace

bool pidfds_supported() noexcept {
  return !pidfd_open_missing.load(std::memory_order_relaxed) && !pidfds_disabled_by_environment();
}

int pidfd_open(pid_t pid, std::error_code& ec) noexcept {
  if (!pidfds_supported()) {
    ec = std::make_error_code(std::errc::function_not_supported);
    return -1;
  }
  const long fd = ::syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) {
    ec = last_error();
    if (errno == ENOSYS) pidfd_open_missing.store(true, std::memory_order_relaxed);
    return -1;
  }
  ec.clear();
  return static_cast<int>(fd);
}

std::error_code pidfd_send_signal(int pidfd, int signal) noexcept {
  if (::syscall(SYS_pidfd_send_signal, pidfd, signal, nullptr, 0) < 0) return last_error();
  return {};
}

int pidfd_getfd(int pidfd, int fd, std::error_code& ec) noexcept {
  const long dup = ::syscall(SYS_pidfd_getfd, pidfd, fd, 0);
  if (dup < 0) {
    ec = last_error();
    return -1;
  }
  ec.clear();
  return static_cast<int>(dup);
}

std::error_code send_signal(pid_t pid, int pidfd, int signal) noexcept {
  if (pidfd >= 0) return pidfd_send_signal(pidfd, signal);
  if (::kill(pid, signal) < 0) return last_error();
  return {};
}

void kill_and_reap(pid_t pid) noexcept {
  ::kill(pid, SIGKILL);
  int status;
  retry_on_eintr([&] { return ::waitpid(pid, &status, 0); });
}

}  // namespace mproc::detail
