#include "process/child_handle.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include "os/quiet_thread.hpp"
#include "os/syscall.hpp"

#ifndef P_PIDFD
#define P_PIDFD 3  // Linux 5.4; older glibc headers lack the name
#endif

namespace mproc::detail {
namespace {

// --- the pid fallback's watchers -----------------------------------------------------------

// The write ends that watcher threads hold. No forked child may keep one open: the
// parent's poller would then see end of file only once that other child ended too. The
// fork handlers hold the lock across fork(2), so the child's copy of the list is exactly
// the write ends it inherited, and it closes them.
struct watcher_registry {
  struct watch {
    int write_end;
    pid_t child;
  };
  std::mutex mutex;
  std::vector<watch> watches;  // guarded by mutex
};

// Never destroyed: watcher threads may still run during static destruction.
// The first call (install_fork_handlers, inside start_watcher's try) may throw bad_alloc;
// every later one finds it made.
watcher_registry& registry() {
  static watcher_registry* const the = new watcher_registry;
  return *the;
}

void install_fork_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    registry();
    ::pthread_atfork([] { registry().mutex.lock(); }, [] { registry().mutex.unlock(); },
                     [] {
                       watcher_registry& r = registry();
                       for (const auto& w : r.watches) ::close(w.write_end);
                       r.watches.clear();
                       r.mutex.unlock();
                     });
  });
}

// Closes `write_end` and forgets it, in one step under the lock: a fork can neither copy
// it closed-but-listed (and close a reused number) nor open-but-unlisted.
void drop_write_end(int write_end) noexcept {
  watcher_registry& r = registry();
  std::lock_guard lock(r.mutex);
  std::erase_if(r.watches, [write_end](const auto& w) { return w.write_end == write_end; });
  ::close(write_end);
}

// The watcher of the child whose write end is `arg`: waits, without reaping (WNOWAIT),
// for the child to end, then closes the write end so that the handle's read end reads end
// of file. ECHILD (someone reaped the child first) means it ended too. The argument is
// the descriptor itself, not a pointer to memory: a process forked before the thread
// read it would have leaked that memory.
void* watch_child(void* arg) noexcept {
  const int write_end = static_cast<int>(reinterpret_cast<std::intptr_t>(arg));
  pid_t child = 0;
  {
    watcher_registry& r = registry();
    std::lock_guard lock(r.mutex);
    for (const auto& w : r.watches) {
      if (w.write_end == write_end) child = w.child;
    }
  }
  siginfo_t info{};
  retry_on_eintr([&] { return ::waitid(P_PID, static_cast<id_t>(child), &info, WEXITED | WNOWAIT); });
  drop_write_end(write_end);
  return nullptr;
}

// The read end of a pipe that reaches end of file when child `pid` ends; -1 and `ec` on
// failure.
int start_watcher(pid_t pid, std::error_code& ec) noexcept {
  int ends[2];
  try {
    install_fork_handlers();
    watcher_registry& r = registry();
    std::lock_guard lock(r.mutex);  // a fork must not copy a write end not yet listed
    if (::pipe2(ends, O_CLOEXEC) != 0) {
      ec = last_error();
      return -1;
    }
    try {
      r.watches.push_back({ends[1], pid});
    } catch (...) {
      ::close(ends[0]);
      ::close(ends[1]);
      throw;
    }
  } catch (const std::system_error& e) {
    ec = e.code();
    return -1;
  } catch (...) {
    ec = std::make_error_code(std::errc::not_enough_memory);
    return -1;
  }

  pthread_attr_t attr;
  ::pthread_attr_init(&attr);
  ::pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  ::pthread_attr_setstacksize(&attr, 256 * 1024);  // it only waits: the default 8 MiB is waste
  pthread_t thread;
  int err;
  {
    const all_signals_blocked quiet;  // see quiet_thread.hpp
    err = ::pthread_create(&thread, &attr, watch_child, reinterpret_cast<void*>(std::intptr_t{ends[1]}));
  }
  ::pthread_attr_destroy(&attr);
  if (err != 0) {
    drop_write_end(ends[1]);
    ::close(ends[0]);
    ec = {err, std::system_category()};
    return -1;
  }
  ec.clear();
  return ends[0];
}

}  // namespace

// --- child_handle --------------------------------------------------------------------------

child_handle child_handle::open(pid_t pid, std::error_code& ec, without_pidfd fallback) noexcept {
  child_handle handle;
  const int pidfd = pidfd_open(pid, ec);
  if (pidfd >= 0) {
    handle.pid_ = pid;
    handle.fd_ = pidfd;
    handle.is_pidfd_ = true;
    return handle;
  }
  if (ec != std::errc::function_not_supported) return handle;
  // No pidfds here (old kernel, valgrind, MPROC_FORCE_NO_PIDFD=1): fall back to the pid.
  if (fallback == without_pidfd::pid_only) {
    ec.clear();
    handle.pid_ = pid;
    return handle;
  }
  const int notice = start_watcher(pid, ec);
  if (notice < 0) return handle;
  handle.pid_ = pid;
  handle.fd_ = notice;
  return handle;
}

child_handle child_handle::reported(pid_t pid, int status, int pidfd) noexcept {
  child_handle handle;
  handle.pid_ = pid;
  handle.fd_ = status;
  handle.reported_ = true;
  handle.signal_fd_ = pidfd;
  return handle;
}

child_handle::child_handle(child_handle&& other) noexcept
    : pid_(std::exchange(other.pid_, 0)),
      fd_(std::exchange(other.fd_, -1)),
      is_pidfd_(std::exchange(other.is_pidfd_, false)),
      reported_(std::exchange(other.reported_, false)),
      signal_fd_(std::exchange(other.signal_fd_, -1)) {}

child_handle& child_handle::operator=(child_handle&& other) noexcept {
  if (this != &other) {
    reset();
    pid_ = std::exchange(other.pid_, 0);
    fd_ = std::exchange(other.fd_, -1);
    is_pidfd_ = std::exchange(other.is_pidfd_, false);
    reported_ = std::exchange(other.reported_, false);
    signal_fd_ = std::exchange(other.signal_fd_, -1);
  }
  return *this;
}

void child_handle::reset() noexcept {
  if (fd_ >= 0) ::close(fd_);
  if (signal_fd_ >= 0) ::close(signal_fd_);
  fd_ = -1;
  signal_fd_ = -1;
  pid_ = 0;
  is_pidfd_ = false;
  reported_ = false;
}

int child_handle::release() noexcept {
  pid_ = 0;
  is_pidfd_ = false;
  reported_ = false;
  signal_fd_ = -1;  // not ours either (a forked copy's)
  return std::exchange(fd_, -1);
}

// The reporter's records, skipping `ready`: the exit code once `exited` came; nullopt
// before (not blocking) or ECHILD in `ec` at end of file without it (the reporter died).
std::optional<int> child_handle::read_report(bool block, std::error_code& ec) noexcept {
  ec.clear();
  for (;;) {
    status_record record;
    const ssize_t n = retry_on_eintr([&] { return ::recv(fd_, &record, sizeof record, block ? 0 : MSG_DONTWAIT); });
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return std::nullopt;
      ec = last_error();
      return std::nullopt;
    }
    if (n == 0) {
      ec = std::make_error_code(std::errc::no_child_process);
      return std::nullopt;
    }
    if (n == static_cast<ssize_t>(sizeof record) && record.kind == status_record::exited) return record.value;
  }
}

std::optional<int> child_handle::wait(int options, std::error_code& ec) noexcept {
  if (reported_) return read_report((options & WNOHANG) == 0, ec);
  siginfo_t info{};
  int r;
  if (is_pidfd_) {
    r = retry_on_eintr(
        [&] { return ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(fd_), &info, WEXITED | options); });
    // Linux 5.3 has pidfd_open but not waitid(P_PIDFD): the child is not reaped yet, so
    // its pid is still its own.
    if (r < 0 && errno == EINVAL) {
      r = retry_on_eintr([&] { return ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | options); });
    }
  } else {
    r = retry_on_eintr([&] { return ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | options); });
  }
  if (r < 0) {
    ec = last_error();
    return std::nullopt;
  }
  ec.clear();
  if (info.si_pid == 0) return std::nullopt;  // still running (WNOHANG)
  return info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
}

std::optional<int> child_handle::try_reap(std::error_code& ec) noexcept { return wait(WNOHANG, ec); }

std::optional<int> child_handle::reap(std::error_code& ec) noexcept { return wait(0, ec); }

std::error_code child_handle::signal(int signal) const noexcept {
  // reported() without a pidfd: kill(2) on a pid that is not our child. The reporter has
  // not reaped it while its report is unread (child_record reads first), barring a window
  // of microseconds; accepted, as the contract above says.
  return send_signal(pid_, pidfd(), signal);
}

}  // namespace mproc::detail
