#include "mproc/os.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "os/syscall.hpp"
#include "process/runtime.hpp"

namespace mproc::os {

bool wait_status::exited() const noexcept { return WIFEXITED(raw_); }
int wait_status::exit_code() const noexcept { return WEXITSTATUS(raw_); }
bool wait_status::signaled() const noexcept { return WIFSIGNALED(raw_); }
int wait_status::signal() const noexcept { return WTERMSIG(raw_); }
bool wait_status::core_dumped() const noexcept { return WCOREDUMP(raw_); }

pid_t fork() {
  detail::flush_std_streams();
  const pid_t pid = ::fork();
  if (pid < 0) detail::throw_system_error(detail::last_error(), "mproc::os::fork: fork");
  return pid;
}

pid_t getpid() noexcept { return ::getpid(); }
pid_t getppid() noexcept { return ::getppid(); }

std::pair<pid_t, wait_status> wait() {
  int status = 0;
  const pid_t pid = detail::retry_on_eintr([&] { return ::wait(&status); });
  if (pid < 0) detail::throw_system_error(detail::last_error(), "mproc::os::wait: wait");
  return {pid, wait_status(status)};
}

wait_status waitpid(pid_t pid) {
  if (pid <= 0) {
    // waitpid(0) and waitpid(-n) wait for process groups; this call names one child.
    detail::throw_system_error(std::make_error_code(std::errc::invalid_argument),
                               "mproc::os::waitpid: pid " + std::to_string(pid) +
                                   " does not name one child (0 and negative pids wait for groups of children)");
  }
  int status = 0;
  const pid_t r = detail::retry_on_eintr([&] { return ::waitpid(pid, &status, 0); });
  if (r < 0) detail::throw_system_error(detail::last_error(), "mproc::os::waitpid: waitpid");
  return wait_status(status);
}

}  // namespace mproc::os
