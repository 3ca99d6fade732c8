// mproc::queue, joinable_queue and simple_queue — Python's multiprocessing.Queue,
// JoinableQueue and SimpleQueue.
//
// Contract:
// - A queue object is a copyable handle to one shared queue. Every process forked after it
//   was made shares it, and a handle can also be sent to a process made at any time (as
//   an argument of a `process`, or inside a message on another queue or a pipe): it is
//   serialisable. The process that serialised a handle must still hold it when the
//   receiver decodes it (see detail/fd_token.hpp).
// - Values cross by value through mproc's serialisation (<mproc/serialize.hpp>): T is any
//   serialisable type. Any size works. FIFO per producer; each value is received by
//   exactly one consumer.
// - `maxsize` counts messages (0: bounded only by memory). put blocks while the queue is
//   full, get while it is empty. Blocking waits spin for a few microseconds, then sleep.
// - Timed calls: `put(v, timeout)` / `get(timeout)` throw queue_full / queue_empty when the
//   timeout passes (as Python's do); `try_put_for` / `try_get_for` return false / nullopt
//   instead; `put_nowait` / `get_nowait` / `try_put` / `try_get` never wait. A timeout is
//   any std::chrono::duration and becomes one absolute deadline.
// - `close()` closes this handle only: its put and get then throw closed_error. Other
//   handles, in this process or others, are unaffected.
// - Crash safety: a process killed at any instant while using the queue leaves it
//   consistent; a message is received whole or not at all; nobody deadlocks on a dead
//   holder's lock. A consumer killed inside get leaves its message to the next consumer.
// - A message whose bytes do not decode as T throws serialization_error from get; the
//   message is consumed, so it cannot block the queue.
// - A value of a memcpy-serializable T (a number, an enum with a fixed type, a std::array
//   of those) travels as its own sizeof(T) bytes, without serialisation's version byte:
//   every end of a queue runs one layout version of it, and a smaller record means fewer
//   cache lines to move between the processes' cores (8-byte values: 16-byte records, not
//   24). A message of another size throws serialization_error.
// - Thread safety: a handle may be used from several threads at once, except close().
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mproc/detail/ipc/channel.hpp"
#include "mproc/detail/ipc/queue_calls.hpp"
#include "mproc/detail/wait/deadline.hpp"
#include "mproc/error.hpp"
#include "mproc/serialize.hpp"

namespace mproc {

template <class T>
class queue : public detail::queue_calls<queue<T>, T> {
 public:
  static constexpr const char* api_name = "mproc::queue";
  // Names memory of this machine: cannot go to another (mproc::mpi).
  using mproc_local_handle = void;
  // A new, empty queue holding at most `maxsize` messages (0: no limit).
  explicit queue(std::size_t maxsize = 0) : channel_(std::make_shared<detail::channel>(maxsize)) {}

  // Batches, for small messages: one synchronisation for many values. put_many blocks
  // until all are put (waiting for room when the queue is bounded); get_many blocks until
  // at least one value is there and returns up to `max_items` of those available.
  void put_many(std::span<const T> values) {
    check_open();
    auto& buffer = detail::encode_buffer();
    buffer.clear();
    thread_local std::vector<std::size_t> ends;
    ends.clear();
    for (const T& v : values) {
      encode(v, buffer);
      ends.push_back(buffer.size());
    }
    channel_->put(buffer, ends, detail::deadline::never());
  }
  std::vector<T> get_many(std::size_t max_items) { return get_many_until(max_items, detail::deadline::never()); }
  // As get_many, waiting at most `timeout`: empty when nothing came.
  template <detail::duration D>
  std::vector<T> get_many(std::size_t max_items, D timeout) {
    return get_many_until(max_items, detail::deadline::in(timeout));
  }

  // Messages in the queue now (a snapshot: others may put and get meanwhile).
  std::size_t qsize() const { return channel_->size(); }
  std::size_t maxsize() const { return channel_->maxsize(); }

  // This handle puts and gets no more: both then throw closed_error.
  void close() noexcept { closed_ = true; }

  // How often a process was found dead holding the queue's lock (and recovered from).
  std::uint64_t owner_deaths() const { return channel_->owner_deaths(); }

  // cereal: a handle travels as a token its receiver turns into its own mapping.
  template <class Archive>
  void save(Archive& archive) const {
    check_open();
    archive(channel_->token());
  }
  template <class Archive>
  void load(Archive& archive) {
    detail::fd_token token;
    archive(token);
    channel_ = std::make_shared<detail::channel>(token);
    closed_ = false;
  }

 protected:
  detail::channel& channel() const {
    check_open();
    return *channel_;
  }

 private:
  friend detail::queue_calls<queue, T>;  // put, get and the rest, over put_until and get_until

  // For mproc::wait_ready: ready while it holds a message.
  friend detail::wait_probe mproc_wait_probe(queue& q) { return q.channel().probe(); }

  void check_open() const {
    if (closed_) throw closed_error("mproc::queue: this handle was closed; use another handle of the queue");
  }

  bool put_until(const T& value, detail::deadline until) {
    check_open();
    if constexpr (detail::is_memcpy_serializable_v<T>) {
      return channel_->put_one(detail::raw_bytes(value), until);
    } else if constexpr (detail::is_flat_v<T>) {  // the header, then the elements where they lie
      const auto header = detail::flat_header(value);
      const std::span<const std::byte> pieces[] = {header, detail::flat_elements(value)};
      return channel_->put_pieces(pieces, until) == 1;
    } else {
      auto& buffer = detail::encode_buffer();
      buffer.clear();
      encode(value, buffer);
      return channel_->put_one(buffer, until);
    }
  }

  std::optional<T> get_until(detail::deadline until) {
    check_open();
    std::optional<T> value;
    const auto take = [&](std::span<const std::byte> bytes) { value.emplace(decode(bytes)); };
    const auto take_spanning = [&](auto& message) -> void { value.emplace(read_spanning(message)); };
    channel_->get(take, 1, until, {.on_spanning = spanning_sink(take_spanning)});
    return value;
  }

  std::vector<T> get_many_until(std::size_t max_items, detail::deadline until) {
    check_open();
    std::vector<T> values;
    if (max_items == 0) return values;
    values.reserve(std::min<std::size_t>(max_items, 4096));
    const auto take = [&](std::span<const std::byte> bytes) { values.push_back(decode(bytes)); };
    const auto take_spanning = [&](auto& message) -> void { values.push_back(read_spanning(message)); };
    channel_->get(take, max_items, until, {.on_spanning = spanning_sink(take_spanning)});
    return values;
  }

  static void encode(const T& value, std::vector<std::byte>& out) { detail::encode_message(value, out); }
  static T decode(std::span<const std::byte> bytes) { return detail::decode_message<T>(bytes, "mproc::queue::get"); }

  // For a flat T: a message spanning blocks is decoded straight from them into the new
  // value, without a gathered copy (`take` is generic, so it is never instantiated for
  // other types). Empty for other types.
  template <class Take>
  static detail::spanning_sink spanning_sink(const Take& take) {
    if constexpr (detail::is_flat_v<T>) {
      return take;
    } else {
      return {};
    }
  }
  static T read_spanning(detail::message_reader& message) {
    return detail::read_flat<T>(
        message.size(), [&](std::byte* into, std::size_t n) { message.read(into, n); },
        [&](std::size_t max) { return message.read_in_place(max); });
  }

  std::shared_ptr<detail::channel> channel_;
  bool closed_ = false;
};

// Python's JoinableQueue: every value put is a task; join() waits until task_done() has
// been called once for each.
template <class T>
class joinable_queue : public queue<T> {
 public:
  explicit joinable_queue(std::size_t maxsize = 0) : queue<T>(maxsize) {}

  // One value taken from the queue has been dealt with. More calls than values put:
  // mproc::error.
  void task_done() { this->channel().task_done(); }
  // Blocks until every value put has been marked done.
  void join() { this->channel().join(detail::deadline::never()); }
  // As join(), at most `timeout`; true when all were done.
  template <detail::duration D>
  bool join(D timeout) {
    return this->channel().join(detail::deadline::in(timeout));
  }
};

// Python's SimpleQueue: unbounded, put/get/empty/close only.
template <class T>
class simple_queue {
 public:
  // Names memory of this machine: cannot go to another (mproc::mpi).
  using mproc_local_handle = void;
  simple_queue() = default;
  void put(const T& value) { queue_.put(value); }
  T get() { return queue_.get(); }
  bool empty() const { return queue_.empty(); }
  void close() noexcept { queue_.close(); }

  template <class Archive>
  void serialize(Archive& archive) {
    archive(queue_);
  }

 private:
  queue<T> queue_;
};

}  // namespace mproc
