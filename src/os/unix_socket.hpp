// Whole messages over a SOCK_SEQPACKET socket, with at most one descriptor riding along
// (SCM_RIGHTS): how the pool's parent and zygote talk.
#pragma once

#include <sys/types.h>

#include <cstddef>

namespace mproc::detail {

// Sends one message, and `pass_fd` with it when >= 0. EINTR is retried, SIGPIPE never
// raised. Returns the bytes sent, or -1 with errno (EPIPE, ECONNRESET: the peer is gone);
// a caller that may ignore a failure leaves it to the reader's end of file.
// Async-signal-safe.
ssize_t send_message(int socket, const void* data, std::size_t size, int pass_fd = -1) noexcept;

// Receives one message into `data`: its size, 0 at end of file, -1 on error. A descriptor
// that came with it lands in *received (O_CLOEXEC), or is closed when `received` is null.
// `flags` add to recvmsg(2)'s (MSG_DONTWAIT). Async-signal-safe.
ssize_t receive_message(int socket, void* data, std::size_t size, int* received, int flags = 0) noexcept;

}  // namespace mproc::detail
