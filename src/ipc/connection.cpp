#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <limits>
#include <string>

#include "mproc/pipe.hpp"
#include "os/fd.hpp"
#include "os/syscall.hpp"
#include "wait/readable.hpp"

namespace mproc {
namespace {

// Every message is a fixed-size header, the payload's length in bytes, then the payload.
// Both ends run on one machine, so the header is in native byte order.
using frame_header = std::uint64_t;

// The receive buffer is first made this large (or the message's size, if smaller), then
// grows fourfold each time it fills, never past the announced size: a message up to this
// size costs one exact allocation, and a forged length costs at most this much plus four
// times what was actually sent. (Growth in steps of 2 or from 64 KiB measured 10-30%
// slower for 1-100 MiB messages.)
constexpr std::size_t first_chunk = std::size_t{1} << 20;
constexpr std::size_t growth_factor = 4;

// Buffers reused by send<T>/recv<T> that grew larger than this are released after the
// message that needed them, so one big message does not pin its memory for life.
constexpr std::size_t kept_buffer = std::size_t{4} << 20;

constexpr std::uint8_t flag_readable = 1;
constexpr std::uint8_t flag_writable = 2;

// `call`: the member called, "send" for send and send_bytes, "recv" for recv and recv_bytes.
[[noreturn]] void throw_closed_by_this_side(const char* call) {
  throw closed_error(std::string("mproc::connection::") + call +
                     ": this end is closed: close() was called on it, it was moved from, or it was never opened");
}

[[noreturn]] void throw_peer_closed_mid_message() {
  throw closed_error(
      "mproc::connection::recv: the other end closed in the middle of a message (its process died "
      "mid-send?); the partial message was discarded");
}

// Waits until `fd` can take more bytes; for a descriptor a user has made non-blocking.
void wait_writable(int fd) {
  pollfd pfd{fd, POLLOUT, 0};
  while (::poll(&pfd, 1, -1) < 0) {
    if (errno != EINTR) detail::throw_system_error(detail::last_error(), "mproc::connection::send: poll");
  }
}

enum class read_result { complete, eof };

// Reads exactly `size` bytes, retrying after signals and short reads. `got` counts what
// has been read so far, across calls for one message. EOF before `size`: eof.
read_result read_exact(int fd, std::byte* data, std::size_t size, std::size_t& got) {
  while (got < size) {
    const ssize_t n = ::recv(fd, data + got, size - got, MSG_WAITALL);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
    } else if (n == 0 || errno == ECONNRESET) {
      // ECONNRESET: the peer closed with bytes of ours unread; for us too the stream ended.
      return read_result::eof;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      detail::wait_readable(fd, detail::deadline::never(), "mproc::connection::recv");
    } else if (errno != EINTR) {
      detail::throw_system_error(detail::last_error(), "mproc::connection::recv: recv");
    }
  }
  return read_result::complete;
}

}  // namespace

std::pair<connection, connection> pipe(bool duplex) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    detail::throw_system_error(detail::last_error(), "mproc::pipe: socketpair");
  }
  detail::unique_fd first(fds[0]);
  detail::unique_fd second(fds[1]);
  if (!duplex) {
    // The kernel enforces the direction too, for code that uses fileno() directly: the
    // reader cannot write, the writer cannot read.
    if (::shutdown(first.get(), SHUT_WR) != 0 || ::shutdown(second.get(), SHUT_RD) != 0) {
      detail::throw_system_error(detail::last_error(), "mproc::pipe: shutdown");
    }
  }
  return {connection(first.release(), true, duplex), connection(second.release(), duplex, true)};
}

connection::connection(connection&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      readable_(std::exchange(other.readable_, false)),
      writable_(std::exchange(other.writable_, false)),
      recv_broken_(std::exchange(other.recv_broken_, false)),
      send_buffer_(std::move(other.send_buffer_)),
      recv_buffer_(std::move(other.recv_buffer_)) {}

connection& connection::operator=(connection&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    readable_ = std::exchange(other.readable_, false);
    writable_ = std::exchange(other.writable_, false);
    recv_broken_ = std::exchange(other.recv_broken_, false);
    send_buffer_ = std::move(other.send_buffer_);
    recv_buffer_ = std::move(other.recv_buffer_);
  }
  return *this;
}

connection::~connection() { close(); }

void connection::close() noexcept {
  detail::unique_fd doomed(std::exchange(fd_, -1));  // close(2) is never retried
  readable_ = false;
  writable_ = false;
  recv_broken_ = false;
  send_buffer_ = {};
  recv_buffer_ = {};
}

int connection::fileno() const {
  if (fd_ < 0) throw_closed_by_this_side("fileno");
  return fd_;
}

void connection::begin(op_kind kind) {
  if (fd_ < 0) throw_closed_by_this_side(kind == op_send ? "send" : "recv");
  if (kind == op_send) {
    if (!writable_) {
      throw error(
          "mproc::connection::send: this is the read end of a one-way pipe; send on the writer (pipe(false) "
          "returns (reader, writer))");
    }
    if (sending_.exchange(true, std::memory_order_acquire)) {
      throw error("mproc::connection::send: two threads sent on this end at once; send from one thread at a time");
    }
  } else {
    if (!readable_) {
      throw error(
          "mproc::connection::recv: this is the write end of a one-way pipe; receive on the reader (pipe(false) "
          "returns (reader, writer))");
    }
    if (receiving_.exchange(true, std::memory_order_acquire)) {
      throw error(
          "mproc::connection::recv: two threads received on this end at once; receive from one thread at a time");
    }
  }
}

void connection::end(op_kind kind) noexcept {
  (kind == op_send ? sending_ : receiving_).store(false, std::memory_order_release);
}

void connection::send_bytes(std::span<const std::byte> bytes) {
  operation op(*this, op_send);
  send_frame(bytes);
}

std::vector<std::byte> connection::recv_bytes() {
  operation op(*this, op_recv);
  std::vector<std::byte> out;
  recv_frame(out);
  return out;
}

void connection::send_frame(std::span<const std::byte> payload) {
  frame_header header = payload.size();
  // One sendmsg for header and payload: one system call for a small message, no copy.
  iovec iov[2] = {{&header, sizeof header}, {const_cast<std::byte*>(payload.data()), payload.size()}};
  iovec* next = iov;
  int count = payload.empty() ? 1 : 2;
  while (count > 0) {
    msghdr msg{};
    msg.msg_iov = next;
    msg.msg_iovlen = static_cast<std::size_t>(count);
    const ssize_t n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        wait_writable(fd_);
        continue;
      }
      if (errno == EPIPE || errno == ECONNRESET) {
        throw closed_error("mproc::connection::send: the other end is closed");
      }
      detail::throw_system_error(detail::last_error(), "mproc::connection::send: sendmsg");
    }
    // A signal (or a non-blocking descriptor) may cut a send short: resume where it stopped.
    auto sent = static_cast<std::size_t>(n);
    while (count > 0 && sent >= next->iov_len) {
      sent -= next->iov_len;
      ++next;
      --count;
    }
    if (count > 0) {
      next->iov_base = static_cast<char*>(next->iov_base) + sent;
      next->iov_len -= sent;
    }
  }
}

void connection::recv_frame(std::vector<std::byte>& out) {
  out.clear();
  if (recv_broken_) {
    throw error(
        "mproc::connection::recv: an earlier error struck in the middle of an incoming message, and the stream "
        "cannot be resynchronised; close this connection");
  }
  // From here on, an exception other than at a message boundary leaves the stream
  // positioned inside a message: remember it.
  frame_header header = 0;
  std::size_t got = 0;
  read_result result;
  try {
    result = read_exact(fd_, reinterpret_cast<std::byte*>(&header), sizeof header, got);
  } catch (...) {
    recv_broken_ = got != 0;
    throw;
  }
  if (result == read_result::eof) {  // the stream ended; later calls see the end again
    if (got == 0) throw closed_error("mproc::connection::recv: nothing to receive: the other end is closed");
    throw_peer_closed_mid_message();
  }
  struct break_guard {
    connection& c;
    bool armed = true;
    ~break_guard() {
      if (armed) c.recv_broken_ = true;
    }
  } guard{*this};
  if (header > out.max_size() || header > static_cast<frame_header>(std::numeric_limits<std::ptrdiff_t>::max())) {
    throw error("mproc::connection::recv: received a message length of " + std::to_string(header) +
                " bytes, more than a process can hold: the stream is corrupt; close this connection");
  }
  const auto size = static_cast<std::size_t>(header);
  got = 0;
  while (got < size) {
    if (got == out.size()) {
      // Past the first chunk, grow only as bytes arrive, never to what the header claims.
      const std::size_t grown = out.size() > size / growth_factor
                                    ? size
                                    : std::max({out.size() * growth_factor, first_chunk, out.capacity()});
      out.resize(std::min(size, grown));
    }
    if (read_exact(fd_, out.data(), out.size(), got) == read_result::eof) {
      guard.armed = false;
      out.clear();
      throw_peer_closed_mid_message();
    }
  }
  guard.armed = false;
}

bool connection::poll() { return poll_for(std::chrono::nanoseconds::zero()); }

bool connection::poll_for(std::chrono::nanoseconds timeout) {
  return detail::wait_readable(poll_fd("mproc::connection::poll"), detail::deadline::in(timeout),
                               "mproc::connection::poll");
}

int connection::poll_fd(const char* who) const {
  if (fd_ < 0) {
    throw closed_error(std::string(who) +
                       ": this end is closed: close() was called on it, it was moved from, or it was never opened");
  }
  if (!readable_) {
    throw error(std::string(who) +
                ": this is the write end of a one-way pipe, and nothing is ever received on it; poll the reader");
  }
  return fd_;
}

detail::fd_token connection::make_token() const {
  if (fd_ < 0) throw closed_error("mproc::connection::save: this end is closed, and a closed end cannot be sent");
  return detail::make_fd_token(fd_, "mproc::connection::save");
}

std::uint8_t connection::direction_flags() const noexcept {
  return static_cast<std::uint8_t>((readable_ ? flag_readable : 0) | (writable_ ? flag_writable : 0));
}

void connection::adopt_token(const detail::fd_token& token, std::uint8_t flags) {
  if (flags == 0 || (flags & ~(flag_readable | flag_writable)) != 0) {
    throw serialization_error("mproc::connection::load: the end received has invalid direction flags " +
                              std::to_string(flags));
  }
  detail::unique_fd fd(detail::claim_fd_token(token, "mproc::connection::load"));
  int type = 0;
  socklen_t length = sizeof type;
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_TYPE, &type, &length) != 0 || type != SOCK_STREAM) {
    throw serialization_error("mproc::connection::load: the handle received does not name a pipe end");
  }
  close();
  fd_ = fd.release();
  readable_ = (flags & flag_readable) != 0;
  writable_ = (flags & flag_writable) != 0;
}

void connection::trim(std::vector<std::byte>& buffer) noexcept {
  if (buffer.capacity() > kept_buffer) buffer = {};
}

}  // namespace mproc
