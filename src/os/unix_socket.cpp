#include "os/unix_socket.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "os/syscall.hpp"

namespace mproc::detail {

ssize_t send_message(int socket, const void* data, std::size_t size, int pass_fd) noexcept {
  iovec iov{const_cast<void*>(data), size};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  if (pass_fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
  }
  return retry_on_eintr([&] { return ::sendmsg(socket, &msg, MSG_NOSIGNAL); });
}

ssize_t receive_message(int socket, void* data, std::size_t size, int* received, int flags) noexcept {
  iovec iov{data, size};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  const ssize_t n = retry_on_eintr([&] { return ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC | flags); });
  if (received != nullptr) *received = -1;
  if (n < 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int passed;
    std::memcpy(&passed, CMSG_DATA(c), sizeof(int));
    if (received != nullptr) {
      *received = passed;
    } else {
      ::close(passed);
    }
  }
  return n;
}

}  // namespace mproc::detail
