// How a handle (queue, connection, lock, ...) crosses to another process that did not
// inherit it by fork: the sender describes its file descriptor with an fd_token, and the
// receiver claims a descriptor of its own for the same open file.
//
// Contract:
// - The token names the sender's pid and descriptor number, plus the identity of the file
//   (device and inode) so that a descriptor number reused meanwhile is detected.
// - claim_fd_token() duplicates the sender's descriptor with pidfd_getfd(2), falling back
//   to reopening /proc/<pid>/fd/<n> when pidfd_getfd is refused (Yama) or missing (no
//   pidfds: Linux < 5.6, valgrind). That reopening works for memfds and pipes, not for
//   sockets: without pidfd_getfd a connection cannot be passed to a running process. The sender
//   must therefore still be alive and still hold the handle when the token is claimed;
//   otherwise claim_fd_token() throws mproc::error saying so. A token claimed in the
//   sender itself is a plain dup.
// - Every descriptor returned is O_CLOEXEC. Nothing is left behind after SIGKILL: there is
//   no broker and no named object.
#pragma once

#include <cstdint>

namespace mproc::detail {

struct fd_token {
  std::int32_t pid = 0;
  std::int32_t fd = -1;
  std::uint64_t device = 0;
  std::uint64_t inode = 0;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(pid, fd, device, inode);
  }
};

// `who` is the public call that sends or receives the handle ("mproc::queue::load"): the
// errors below begin with it.

// Describes `fd` of the calling process. Throws std::system_error if fd is not open.
fd_token make_fd_token(int fd, const char* who);

// A new O_CLOEXEC descriptor, owned by the caller, for the file the token names.
int claim_fd_token(const fd_token& token, const char* who);

}  // namespace mproc::detail
