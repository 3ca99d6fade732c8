// Taking: finding the lane with the oldest message, reading its records under the
// lane's reader lock, handing each message to the sink, and committing through the
// journal only once the sink is done with it.
#include <exception>
#include <new>
#include <vector>

#include "ipc/channel_state.hpp"

namespace mproc::detail {

namespace {

// What one get hands to its sinks, and how many it took.
struct take_request {
  message_sink sink;
  std::size_t max_messages;
  unreadable_sink on_unreadable;
  spanning_sink on_spanning;
  std::uint64_t below_ticket;  // after the first, take only messages with a lower ticket
};

// A message spanning blocks, read in place for an on_spanning sink.
class lane_message_reader final : public message_reader {
 public:
  lane_message_reader(stream_reader<channel::state>& r, std::size_t size) : message_reader(size), r_(r) {}
  void read(std::byte* into, std::size_t n) override {
    if (n > left_) throw error("mproc queue: a read past the end of a message");
    try {
      r_.read(into, n);
    } catch (...) {
      corrupted_ = true;  // the stream's checks failed: not the sink's error
      throw;
    }
    left_ -= n;
  }
  bool corrupted() const noexcept { return corrupted_; }
  // What the sink left unread.
  void skip_rest() {
    r_.skip_payload(left_);
    left_ = 0;
  }

 private:
  stream_reader<channel::state>& r_;
  bool corrupted_ = false;
};

}  // namespace

// Lane `i`'s reader lock held: takes up to max_messages of its messages. Returns how many;
// rethrows what a sink threw, once the take is committed.
// One crash-safe take: its steps share the reader's position, the hand-off and the commit.
// Splitting it into named steps is still to do (readability-function-size).
// NOLINTNEXTLINE(readability-function-size)
static std::size_t take_from_lane(channel::state& s, const void* self, std::uint32_t i, const take_request& request) {
  header& h = *s.h;
  lane& l = h.lanes[i];
  thread_local std::vector<std::byte> gathered;  // only for a message that spans blocks; reused
  const position start = unpack(l.head.load(std::memory_order_relaxed));
  const std::uint64_t first_seq = l.get_seq.load(std::memory_order_relaxed);
  const auto [end_word, put] = s.published_end(i, first_seq);
  if (put <= first_seq) return 0;
  const position end = unpack_end(end_word).pos;
  std::exception_ptr failure;
  std::size_t taken = 0;
  position stop = start;
  struct clear_handing {
    ~clear_handing() { current_handing = {}; }
  } clear;
  try {
    stream_reader r(s, start, end);
    while (taken < request.max_messages && !r.at_end()) {
      current_handing = {self, i, first_seq + taken};
      const position record = r.pos;
      const std::uint64_t record_length = r.next_length();
      if (record_length < sizeof(std::uint64_t)) corrupted("record without a ticket");
      std::uint64_t ticket;
      r.read(&ticket, sizeof ticket);
      if (taken != 0 && ticket >= request.below_ticket) {
        r.pos = record;  // another lane's first message was put before this one
        break;
      }
      const std::uint64_t length = record_length - sizeof ticket;
      const auto cannot_hold = [&] {                      // a message this consumer has no memory for
        if (taken != 0 || !request.on_unreadable) throw;  // left queued
        std::byte prefix[unreadable_prefix_bytes];
        const std::size_t k = std::min<std::size_t>(length, sizeof prefix);
        r.read(prefix, k);
        r.skip_payload(length - k);
        ++taken;
        try {
          request.on_unreadable({prefix, k}, static_cast<std::size_t>(length));
        } catch (...) {
          failure = std::current_exception();
        }
      };
      if (request.on_spanning && !r.fits_here(length)) {
        lane_message_reader message(r, static_cast<std::size_t>(length));
        try {
          request.on_spanning(message);
        } catch (const std::bad_alloc&) {
          if (message.remaining() == message.size()) {
            cannot_hold();  // nothing read: the reader is still at the message's start
            break;
          }
          failure = std::current_exception();
        } catch (...) {
          if (message.corrupted()) throw;
          failure = std::current_exception();
        }
        message.skip_rest();
        r.align();
        ++taken;
        if (failure) break;
        continue;
      }
      std::span<const std::byte> message;
      try {
        message = r.payload(length, gathered);
      } catch (const std::bad_alloc&) {
        cannot_hold();
        break;
      }
      ++taken;
      try {
        request.sink(message);
      } catch (...) {
        failure = std::current_exception();
        break;
      }
    }
    stop = r.pos;
  } catch (const error&) {
    // Corrupted memory: drop what is unread so the lane stays usable.
    channel::state::commit(l.get_journal, l.head, l.get_seq, end, put);
    throw;
  }
  if (taken == 0) return 0;
  channel::state::commit(l.get_journal, l.head, l.get_seq, stop, first_seq + taken);
  for (std::uint32_t b = start.block; b != stop.block;) {
    const std::uint32_t next = s.meta(b).next.load(std::memory_order_acquire);
    s.free_block(b);
    b = next;
  }
  if (failure) std::rethrow_exception(failure);
  return taken;
}

// Still to split into named steps (readability-function-size): choosing the lane, waiting.
// NOLINTNEXTLINE(readability-function-size)
std::size_t channel::get(message_sink sink, std::size_t max_messages, deadline until, unreadable_sink on_unreadable,
                         spanning_sink on_spanning) {
  state& s = *state_;
  header& h = *s.h;
  // Takes from lane `i`, whose reader lock the caller just got, messages with tickets below
  // `below` after the first; unlocks it.
  const auto take_locked = [&](std::uint32_t i, std::uint64_t below) {
    lane& l = h.lanes[i];
    std::size_t taken = 0;
    std::exception_ptr failure;
    try {
      taken = take_from_lane(s, state_.get(), i, {sink, max_messages, on_unreadable, on_spanning, below});
    } catch (...) {
      failure = std::current_exception();
    }
    // Another consumer may sleep while this one held the lane: only then is it worth
    // reading the lane's end again.
    const bool more = h.not_empty.sleepers.load(std::memory_order_relaxed) != 0 && s.has_messages(i);
    ::pthread_mutex_unlock(&l.reader);
    if (taken != 0) {
      // Producers asleep on a full queue are woken together once it has drained to half
      // (see full_queue_sleep), not one per message taken.
      if (h.maxsize != 0 && h.not_full.sleepers.load(std::memory_order_relaxed) != 0 && s.size() <= h.maxsize / 2) {
        h.not_full.announce(INT_MAX);
      }
      if (more) h.not_empty.announce(1);
    }
    if (failure) std::rethrow_exception(failure);
    return taken;
  };
  for (;;) {
    if (!wait_for_condition(
            h.not_empty, [&] { return s.any_messages(); }, until))
      return 0;
    // Which lanes hold messages, looked at twice: a lane seen empty the first time may have
    // been published to before a message seen in another (a put made after that one
    // returned), and is visible the second time. Only when several hold messages are their
    // first tickets read (each under its lane's lock), and the lowest taken first.
    const std::uint32_t used = s.lanes_used();
    bool holds[lane_count];
    for (std::uint32_t i = 0; i < used; ++i) holds[i] = s.has_messages(i);
    for (std::uint32_t i = 0; i < used; ++i) {
      if (!holds[i]) holds[i] = s.has_messages(i);
    }
    std::uint32_t order[lane_count];
    std::uint32_t candidates = 0;
    for (std::uint32_t i = 0; i < used; ++i) {
      if (holds[i]) order[candidates++] = i;
    }
    std::uint64_t tickets[lane_count];
    for (std::uint32_t k = 0; k < candidates; ++k) {
      tickets[order[k]] = candidates == 1 ? state::no_ticket : s.head_ticket(order[k]);
    }
    std::sort(order, order + candidates, [&](std::uint32_t a, std::uint32_t b) { return tickets[a] < tickets[b]; });
    const auto next_ticket_after = [&](std::uint32_t k) {
      return k + 1 < candidates ? tickets[order[k + 1]] : state::no_ticket;
    };
    std::uint32_t busy = lane_count;
    std::uint64_t busy_limit = state::no_ticket;
    for (std::uint32_t k = 0; k < candidates; ++k) {
      const std::uint32_t i = order[k];
      lane& l = h.lanes[i];
      const int r = robust_mutex_try_lock_raw(l.reader);
      if (r < 0) {
        if (busy == lane_count) {
          busy = i;
          busy_limit = next_ticket_after(k);
        }
        continue;
      }
      if (r == 1) {
        s.recover_reader(l);
        robust_mutex_mark_consistent(l.reader);
      }
      if (const std::size_t taken = take_locked(i, next_ticket_after(k))) return taken;
    }
    if (busy != lane_count) {
      // Every lane with messages is being read by another consumer: wait for one of them.
      // A reader holds a lane for one take (a copy), so spin on it a little first: sleeping
      // in the kernel at once made two pool workers sleep and wake on every task.
      lane& l = h.lanes[busy];
      int r = -1;
      for (unsigned i = 0; i < 64 && r < 0; ++i) {
        if (i < 48) {
#if defined(__x86_64__) || defined(__i386__)
          for (int k = 0; k < 8; ++k) __builtin_ia32_pause();
#endif
        } else {
          yield_cpu();
        }
        if (!s.has_messages(busy)) break;
        r = robust_mutex_try_lock_raw(l.reader);
      }
      if (r == 1) {
        s.recover_reader(l);
        robust_mutex_mark_consistent(l.reader);
      } else if (r < 0) {
        if (!s.has_messages(busy)) continue;
        if (!robust_mutex_lock(l.reader, until, [&] { s.recover_reader(l); })) return 0;
      }
      if (const std::size_t taken = take_locked(busy, busy_limit)) return taken;
    }
  }
}

}  // namespace mproc::detail
