// The byte-level core under every queue type: a multi-producer multi-consumer channel of
// variable-size messages in shared memory. Typed queues are thin templates over it.
//
// Contract:
// - Messages are byte strings of any size; each is delivered whole to exactly one
//   consumer, FIFO per producer. `maxsize` (0: unbounded) counts messages, as in Python:
//   a producer waits while the queue holds maxsize. Producers that put at the same instant
//   may each add their message past it (at most one message per such producer); a single
//   producer never does.
// - Shared memory is one memfd: nothing is ever named in /dev/shm. A process maps it when
//   it creates the channel, inherits it by fork, or claims it from an fd_token.
// - Lanes: each producing process (per channel object) writes its own lane, a record
//   stream that only it appends to (its threads take turns on a process-local mutex), so a
//   put takes no shared lock: it writes its records, then publishes them with one release
//   store of the first one's head word, which consumers poll. Consumers take from any
//   lane, each lane under a lock of its own that names its holder's process. When every
//   lane is held by a live producer, the others share one lane under a robust lock.
// - Crash safety: a process killed at any instant inside any call leaves the channel
//   consistent. A producer killed mid-write never published: its message is absent, and
//   the next owner of its lane overwrites the bytes. One killed after publishing, before
//   it stored the lane's end word, leaves its messages whole: the next owner finds them
//   and writes after them. A consumer's commit (head and count)
//   goes through a small journal that the lane's next locker replays. A consumer commits
//   its read only once it has used the bytes, so a consumer killed mid-get leaves the
//   message for the next one.
// - Blocking calls take a deadline (deadline::never(): forever; deadline::no_wait(): do
//   not wait). They spin briefly, then sleep on a futex; a side is woken only
//   when it announced that it sleeps.
// - Thread safety: every member may be called from any thread of any process.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "mproc/detail/os/fd_token.hpp"
#include "mproc/detail/os/function_ref.hpp"
#include "mproc/detail/wait/deadline.hpp"
#include "mproc/detail/wait/wait_probe.hpp"

namespace mproc::detail {

// Receives one message's bytes; valid only during the call. May throw: the message is
// consumed all the same (a message that cannot be decoded must not block the channel).
using message_sink = function_ref<void(std::span<const std::byte> message)>;

// Receives the first bytes and the full length of a message too large to gather (get).
using unreadable_sink = function_ref<void(std::span<const std::byte> prefix, std::size_t length)>;
inline constexpr std::size_t unreadable_prefix_bytes = 64;

// A message that spans blocks, read in order straight from them (get's `on_spanning`), so
// that a consumer can put the bytes where they go (a big vector) instead of into a
// gathered copy first.
class message_reader {
 public:
  std::size_t size() const noexcept { return size_; }       // the message's length
  std::size_t remaining() const noexcept { return left_; }  // bytes not read yet
  // The next n bytes; mproc::error past the message's end.
  virtual void read(std::byte* into, std::size_t n) = 0;
  // The next bytes where they lie, without a copy: between 1 and `max` of them (as many as
  // its block holds), valid until the next read. mproc::error past the message's end.
  virtual std::span<const std::byte> read_in_place(std::size_t max) = 0;

 protected:
  explicit message_reader(std::size_t size) noexcept : size_(size), left_(size) {}
  ~message_reader() = default;
  std::size_t size_;
  std::size_t left_;
};
using spanning_sink = function_ref<void(message_reader& message)>;

// What a get may do beside handing messages to its sink; every member may be left empty.
struct get_options {
  // A message spanning blocks is gathered into one buffer first; when that allocation
  // fails (std::bad_alloc), the message stays queued and get throws, unless it is the
  // call's first message and `on_unreadable` is given: then it gets the message's first
  // bytes (up to unreadable_prefix_bytes) and its length, and the message is taken.
  unreadable_sink on_unreadable{};
  // A message spanning blocks goes here instead, to read in place: what it leaves unread
  // is skipped; if it throws std::bad_alloc before reading a byte, the message is treated
  // as one that could not be gathered (above); any other exception, as the sink's.
  spanning_sink on_spanning{};
  // Checked before the get sleeps and whenever it wakes: once true, a get that found no
  // message returns 0 before its deadline. wake_consumers() makes sleeping gets check it.
  function_ref<bool()> stop_waiting{};
};

// A message given as pieces, written one after another (put_pieces).
using message_pieces = std::span<const std::span<const std::byte>>;

class channel {
 public:
  // `type`: the public type the channel serves ("mproc::pool" for a pool's), which the
  // errors of making it and of its memory name.
  explicit channel(std::size_t maxsize, const char* type = "mproc::queue");
  explicit channel(const fd_token& token);  // the channel another process described
  ~channel();
  channel(const channel&) = delete;
  channel& operator=(const channel&) = delete;

  // Puts `messages[i]` = bytes [ends[i-1], ends[i]) of `data`, in order. Waits for room
  // while the channel holds maxsize messages. Returns how many were put before `until`
  // passed (all of them when it did not).
  std::size_t put(std::span<const std::byte> data, std::span<const std::size_t> ends, deadline until);
  // Puts one message; false when `until` passed first.
  bool put_one(std::span<const std::byte> message, deadline until);
  // Puts one message made of `pieces` (a header, then a payload read where it lies): as
  // put of their concatenation, without making it. Returns 1, or 0 when the deadline passed.
  std::size_t put_pieces(message_pieces pieces, deadline until);

  // Takes at least one and at most `max_messages` messages, handing each to `sink`.
  // Returns how many were taken: 0 when the deadline passed first, or `stop_waiting` said
  // so (see get_options for the rest).
  std::size_t get(message_sink sink, std::size_t max_messages, deadline until, const get_options& options = {});
  // Wakes every get asleep on this channel, in any process, to check its stop_waiting: how
  // a thread of the consumer's own process calls it away without putting a message.
  void wake_consumers() noexcept;

  // For mproc::wait_ready: ready while it holds a message; slept on as a get() sleeps.
  wait_probe probe() noexcept;

  std::size_t size() const noexcept;  // messages put and not yet taken
  std::size_t maxsize() const noexcept;

  // joinable_queue: one task of the messages put is done; join waits until all are.
  void task_done();
  bool join(deadline until);

  // How many times a process was found dead holding one of the channel's locks.
  std::uint64_t owner_deaths() const noexcept;
  // Of those, how many were a producer found dead owning its lane, which a new producer
  // then took over (the others: a lock's holder).
  std::uint64_t lane_takeovers() const noexcept;

  // Inside the sink of a get: the id of the message handed (its lane and its place there).
  std::uint64_t message_id() const noexcept;
  // Whether the take of message `id` has committed (it can no longer be taken again).
  bool committed(std::uint64_t id) const noexcept;
  // Whether the calling thread holds the consumers' lock of the lane of message `id`: in
  // a get's sink, that message's lane; in hold_consumers' action, every lane.
  bool held_by_caller(std::uint64_t id) const noexcept;

  // Runs `action()` holding the consumers' lock of every lane, recovered first from a
  // consumer that died holding it: no get commits meanwhile. Waits for live consumers.
  void hold_consumers(function_ref<void()> action);

  fd_token token() const;

  // For a copy in a forked process that will never use the channel (a pool's, in a
  // child): closes its descriptor. Async-signal-safe.
  void forget_descriptor() noexcept;

  struct state;  // defined in src/ipc/channel_state.hpp
  // For tests that stage what a process killed at a given instant leaves behind.
  state& shared_state() const noexcept { return *state_; }

 private:
  std::unique_ptr<state> state_;
};

}  // namespace mproc::detail
