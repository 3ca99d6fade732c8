#include "os/process_incarnation.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mproc::detail {
namespace {

struct stat_fields {
  char state = '?';
  std::uint64_t start_ticks = 0;
};

// Fields 3 (state) and 22 (starttime) of /proc/<pid>/stat; false if it cannot be read.
bool read_stat(std::uint32_t pid, stat_fields& out) noexcept {
  char path[48];
  std::snprintf(path, sizeof path, "/proc/%u/stat", pid);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buffer[1024];
  const ssize_t n = ::read(fd, buffer, sizeof buffer - 1);
  ::close(fd);
  if (n <= 0) return false;
  buffer[n] = '\0';
  // The command name (field 2) is in parentheses and may hold spaces and ')': the fields
  // after it start at the last ')'.
  const char* p = std::strrchr(buffer, ')');
  if (p == nullptr || p[1] != ' ') return false;
  p += 2;
  out.state = *p;
  for (int field = 3; field < 22; ++field) {
    p = std::strchr(p, ' ');
    if (p == nullptr) return false;
    ++p;
  }
  out.start_ticks = std::strtoull(p, nullptr, 10);
  return true;
}

std::uint64_t incarnation_of(std::uint32_t pid, std::uint64_t start_ticks) noexcept {
  return std::uint64_t{pid} << 32 | static_cast<std::uint32_t>(start_ticks);
}

}  // namespace

std::uint64_t refresh_process_incarnation() noexcept {
  (void)this_thread_id();  // registers the fork handler that bumps fork_generation
  const std::uint32_t generation = fork_generation.load(std::memory_order_relaxed);
  const auto pid = static_cast<std::uint32_t>(::getpid());
  stat_fields f;
  const std::uint64_t id = incarnation_of(pid, read_stat(pid, f) ? f.start_ticks : 0);
  __atomic_store_n(&this_process_incarnation_cache.id, id, __ATOMIC_RELAXED);
  __atomic_store_n(&this_process_incarnation_cache.generation, generation, __ATOMIC_RELEASE);
  return id;
}

bool process_incarnation_alive(std::uint64_t id) noexcept {
  const auto pid = static_cast<std::uint32_t>(id >> 32);
  if (pid == 0) return false;
  stat_fields f;
  if (static_cast<std::uint32_t>(id) != 0 && read_stat(pid, f)) {
    if (f.state == 'Z' || f.state == 'X') return false;
    return incarnation_of(pid, f.start_ticks) == id;
  }
  // No /proc: the pid alone (a reused pid passes for its dead owner: a lane stays held).
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

}  // namespace mproc::detail
