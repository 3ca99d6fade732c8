#include "wait/readable.hpp"

#include <poll.h>

#include <cerrno>
#include <ctime>
#include <string>

#include "os/syscall.hpp"

namespace mproc::detail {

bool wait_readable(int fd, deadline until, const char* who) {
  pollfd pfd{fd, POLLIN, 0};
  for (;;) {
    timespec ts{};
    timespec* tsp = nullptr;
    if (!until.is_never()) {
      const auto ns = until.left().count();
      ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
      ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
      tsp = &ts;
    }
    const int n = ::ppoll(&pfd, 1, tsp, nullptr);
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) throw_system_error(last_error(), std::string(who) + ": poll");
  }
}

}  // namespace mproc::detail
