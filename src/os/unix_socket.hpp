// Whole messages over a SOCK_SEQPACKET socket, with at most one descriptor riding along
// (SCM_RIGHTS): how the pool's parent and zygote talk.
#pragma once

#include <sys/types.h>

#include <cstddef>

namespace mproc::detail {

// Sends one message, and `pass_fd` with it when >= 0. EINTR is retried; other failures
// (the peer gone) are left to the reader's end of file.
void send_message(int socket, const void* data, std::size_t size, int pass_fd = -1) noexcept;

// Receives one message into `data`: its size, 0 at end of file, -1 on error. A descriptor
// that came with it lands in *received (O_CLOEXEC), or is closed when `received` is null.
ssize_t receive_message(int socket, void* data, std::size_t size, int* received) noexcept;

}  // namespace mproc::detail
