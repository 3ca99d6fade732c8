// mproc::pipe and mproc::connection — Python's multiprocessing.Pipe() and its Connection.
//
// Contract:
// - `pipe()` returns the two ends of a duplex channel: what one end sends, the other
//   receives, in order, in both directions. `pipe(false)` returns (reader, writer): the
//   first end can only receive, the second only send.
// - Messages keep their boundaries: each send() is one recv() on the other side, never
//   merged with the next nor split, whatever its size (empty and 100 MiB messages work).
//   A receiver allocates memory as the bytes of a message arrive, not on the strength of
//   the length it was told: a corrupt or forged length costs at most 1 MiB plus a few
//   times the bytes actually sent. send<T>/recv<T> reuse a buffer per end and direction
//   (kept up to 4 MiB); send_bytes sends from the caller's bytes without a copy.
// - What blocks: send/send_bytes until the whole message is in the kernel (the peer may
//   have to read some of it first); recv/recv_bytes until a whole message has arrived or
//   the peer has closed its end; poll(timeout) at most `timeout` (one absolute
//   CLOCK_MONOTONIC deadline; signals do not stretch it; zero or negative: do not wait).
//   poll() never blocks. close(), fileno() and the destructor never block.
// - Signals: EINTR is retried, never reported; SIGPIPE is never raised (a send to a
//   closed peer throws instead).
// - What throws:
//   * `closed_error` — any call on an end this side closed or moved from; recv/recv_bytes
//     when the peer has closed its end and every message it sent has been received; recv
//     when the peer closed or died in the middle of a message (the partial message is
//     discarded); send/send_bytes when the peer has closed its end.
//   * `mproc::error` — send on the read end of a one-way pipe, recv or poll on its write
//     end; two threads sending (or two receiving) on one end at once.
//   * `serialization_error` — send<T>() of a value that cannot be encoded (nothing is
//     sent); recv<T>() of bytes that do not decode as a T (the message is consumed). The
//     connection stays usable after either.
//   * `std::system_error` — failures of the operating system (socketpair under EMFILE, ...).
// - poll() and poll(timeout) return true when a message has begun to arrive (recv then
//   waits only for the rest of it) or the peer has closed (recv then throws closed_error
//   at once).
// - Thread safety: per end, one sender and one receiver at a time: a thread may send while
//   another receives or polls on the same end. A second concurrent sender (or receiver)
//   on the same end gets mproc::error at once and nothing is interleaved. close(), moving,
//   assigning and destroying an end must not race with any other call on that end; to
//   wake a thread blocked in recv, have the peer send a message or close its end.
// - Crossing processes: an end is inherited by fork, so a `process` target may take it by
//   value (pass it with std::move; start() drops the parent's copy, as Python does) or by
//   reference (pass std::ref(end)). A child inherits every end open at fork: close the
//   ends a process does not use (Python's `child_conn.close()` after start()), since recv
//   reports a closed peer only once every copy of the other end, in every process, is
//   closed.
//   An end is also serialisable: sent with send<connection>() (or as part of any message,
//   or as an argument to a process or pool task), it arrives as a new descriptor for the
//   same end in the receiving process, which may have been forked before the pipe
//   existed. The sender must keep its end open until the receiver has received it (then
//   close it, as the previous bullet says); otherwise the receiver's recv throws
//   serialization_error saying so. Sending a closed end: serialization_error.
// - Every descriptor is close-on-exec. The destructor closes the end and never throws.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "mproc/detail/os/fd_token.hpp"
#include "mproc/detail/wait/duration.hpp"
#include "mproc/detail/wait/wait_probe.hpp"
#include "mproc/error.hpp"
#include "mproc/serialize.hpp"

namespace mproc {

class connection;

// A new channel. duplex: both ends send and receive. !duplex: (reader, writer).
// Throws std::system_error if the descriptors cannot be made.
std::pair<connection, connection> pipe(bool duplex = true);

// One end of a pipe. Move-only; a moved-from or default-constructed end is closed.
class connection {
 public:
  // Names memory of this machine: cannot go to another (mproc::mpi).
  using mproc_local_handle = void;
  // A closed end: every call but close() throws closed_error. Assign a real end to it,
  // or receive one into it.
  connection() noexcept = default;
  connection(connection&& other) noexcept;
  connection& operator=(connection&& other) noexcept;
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection();

  // Sends `value` as one message. Blocks until it is all handed to the kernel.
  // Throws closed_error (this end or the peer closed), mproc::error (read end of a one-way
  // pipe), serialization_error (the value cannot be encoded), std::system_error.
  // T must be serializable (see <mproc/serialize.hpp>); to_bytes says what to do if not.
  template <class T>
  void send(const T& value) {
    operation op(*this, op_send);
    send_buffer_.clear();
    to_bytes(value, send_buffer_);
    send_frame(send_buffer_);
    trim(send_buffer_);
  }

  // Receives one message and decodes it as a T. Blocks until a whole message arrives.
  // Throws closed_error (this end closed; the peer closed, before or in the middle of a
  // message), mproc::error (write end of a one-way pipe), serialization_error (the bytes
  // are not a T; the message is consumed), std::system_error.
  template <class T>
  T recv() {
    operation op(*this, op_recv);
    recv_frame(recv_buffer_);
    struct trimmer {
      std::vector<std::byte>& buffer;
      ~trimmer() { trim(buffer); }
    } trim_after{recv_buffer_};
    return from_bytes<T>(std::span<const std::byte>(recv_buffer_));
  }

  // send() and recv() of raw bytes: the message is exactly these bytes (it may be empty).
  // They block, and throw, as send() and recv() do (but never serialization_error).
  void send_bytes(std::span<const std::byte> bytes);
  std::vector<std::byte> recv_bytes();

  // True when a message has begun to arrive or the peer has closed (see the contract).
  // poll() never blocks; poll(timeout) waits at most `timeout` (any std::chrono
  // duration; zero or negative: no wait). Throws closed_error (this end closed),
  // mproc::error (write end of a one-way pipe), std::system_error.
  bool poll();
  template <detail::duration D>
  bool poll(D timeout) {
    return poll_for(detail::to_nanoseconds(timeout));
  }

  // Closes this end in this process. Idempotent; never throws, never blocks.
  void close() noexcept;

  // The end's descriptor, for poll/select/epoll. Owned by the connection: do not close it.
  // Throws closed_error once closed.
  int fileno() const;

  // Python's Connection.closed / readable / writable. A closed end is neither.
  bool closed() const noexcept { return fd_ < 0; }
  bool readable() const noexcept { return fd_ >= 0 && readable_; }
  bool writable() const noexcept { return fd_ >= 0 && writable_; }

  // Serialisation (cereal-style): the end travels as a token naming this process's
  // descriptor; loading claims a descriptor of its own for the same end (see the
  // contract above). Saving a closed end throws closed_error (which to_bytes reports as
  // serialization_error).
  template <class Archive>
  void save(Archive& archive) const {
    const detail::fd_token token = make_token();
    const std::uint8_t flags = direction_flags();
    archive(token, flags);
  }
  template <class Archive>
  void load(Archive& archive) {
    detail::fd_token token;
    std::uint8_t flags = 0;
    archive(token, flags);
    adopt_token(token, flags);
  }

 private:
  friend std::pair<connection, connection> pipe(bool duplex);
  // For mproc::wait_ready: ready when readable, as poll().
  friend detail::wait_probe mproc_wait_probe(connection& c) { return {.fd = c.poll_fd("mproc::wait_ready")}; }
  connection(int fd, bool readable, bool writable) noexcept : fd_(fd), readable_(readable), writable_(writable) {}

  enum op_kind : unsigned char { op_send, op_recv };

  // Marks this end busy sending (or receiving) for the scope, after checking that the
  // end is open and can do it.
  class operation {
   public:
    operation(connection& c, op_kind kind) : c_(c), kind_(kind) { c_.begin(kind_); }
    ~operation() { c_.end(kind_); }
    operation(const operation&) = delete;
    operation& operator=(const operation&) = delete;

   private:
    connection& c_;
    op_kind kind_;
  };

  void begin(op_kind kind);
  void end(op_kind kind) noexcept;
  void send_frame(std::span<const std::byte> payload);
  void recv_frame(std::vector<std::byte>& out);
  bool poll_for(std::chrono::nanoseconds timeout);
  // The descriptor to poll for a message; throws as poll() does, naming `who`.
  int poll_fd(const char* who) const;
  detail::fd_token make_token() const;
  std::uint8_t direction_flags() const noexcept;
  void adopt_token(const detail::fd_token& token, std::uint8_t flags);
  // Releases a buffer that grew large for one big message, so it is not kept for life.
  static void trim(std::vector<std::byte>& buffer) noexcept;

  int fd_ = -1;
  bool readable_ = false;
  bool writable_ = false;
  bool recv_broken_ = false;  // an error struck in the middle of an incoming message
  std::atomic<bool> sending_{false};
  std::atomic<bool> receiving_{false};
  std::vector<std::byte> send_buffer_;  // reused by send<T>
  std::vector<std::byte> recv_buffer_;  // reused by recv<T>
};

}  // namespace mproc
