#include "mproc/detail/os/fd_token.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <system_error>

#include "mproc/error.hpp"
#include "os/fd.hpp"
#include "os/syscall.hpp"
#include "os/thread_identity.hpp"

namespace mproc::detail {
namespace {

bool same_file(int fd, const fd_token& token) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 && st.st_dev == token.device && st.st_ino == token.inode;
}

[[noreturn]] void throw_unclaimable(const fd_token& token, const char* who, const std::string& why) {
  throw error(std::string(who) + ": cannot receive the handle from process " + std::to_string(token.pid) + " (fd " +
              std::to_string(token.fd) + "): " + why +
              "; the sending process must still hold the handle when it is received");
}

// Out of descriptors is the receiver's own failure, not a sign that the sender let go:
// std::system_error with the errno (EMFILE, ENFILE), as any OS failure.
void throw_if_out_of_descriptors(const std::error_code& ec, const char* who) {
  if (ec == std::errc::too_many_files_open || ec == std::errc::too_many_files_open_in_system) {
    throw_system_error(ec, std::string(who) + ": no free file descriptor in this process for the handle received");
  }
}

}  // namespace

fd_token make_fd_token(int fd, const char* who) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_system_error(last_error(), std::string(who) + ": fstat");
  return {this_process_id(), fd, static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
}

int claim_fd_token(const fd_token& token, const char* who) {
  if (token.pid <= 0 || token.fd < 0) {
    throw error(std::string(who) + ": the handle received is malformed (process " + std::to_string(token.pid) +
                ", fd " + std::to_string(token.fd) + ")");
  }
  unique_fd claimed;
  if (token.pid == this_process_id()) {
    claimed.reset(::fcntl(token.fd, F_DUPFD_CLOEXEC, 0));
    if (!claimed) throw_if_out_of_descriptors(last_error(), who);
  } else {
    std::error_code ec;
    unique_fd pidfd(pidfd_open(token.pid, ec));
    if (!pidfd) throw_if_out_of_descriptors(ec, who);
    if (!pidfd && ec != std::errc::function_not_supported) throw_unclaimable(token, who, "that process has ended");
    if (pidfd) claimed.reset(pidfd_getfd(pidfd.get(), token.fd, ec));
    if (pidfd && !claimed) throw_if_out_of_descriptors(ec, who);
    if (!claimed) {
      // pidfd_getfd needs ptrace-attach rights (Yama may refuse them) and pidfds (no
      // valgrind, Linux >= 5.6); reading /proc/<pid>/fd needs less, and works for memfds,
      // which are files. By pid, the process may have ended and its pid been reused:
      // same_file() below then refuses the descriptor.
      const std::string path = "/proc/" + std::to_string(token.pid) + "/fd/" + std::to_string(token.fd);
      claimed.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
      if (!claimed) throw_if_out_of_descriptors(last_error(), who);
    }
  }
  if (!claimed) throw_unclaimable(token, who, "its descriptor is gone");
  if (!same_file(claimed.get(), token)) throw_unclaimable(token, who, "its descriptor now names another file");
  return claimed.release();
}

}  // namespace mproc::detail
