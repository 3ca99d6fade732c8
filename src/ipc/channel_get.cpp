// Taking: finding the lane with the oldest message, reading its records under the
// lane's reader lock, handing each message to the sink, and committing through the
// journal only once the sink is done with it.
#include <exception>
#include <new>
#include <optional>
#include <type_traits>
#include <vector>

#include "ipc/channel_state.hpp"

namespace mproc::detail {

namespace {

// What one get hands to its sinks, and how many it took.
struct take_request {
  message_sink sink;
  std::size_t max_messages;
  const get_options& options;
  std::uint64_t below_ticket;  // after the first, take only messages with a lower ticket
};

// A message spanning blocks, read in place for an on_spanning sink.
class lane_message_reader final : public message_reader {
 public:
  lane_message_reader(stream_reader<channel::state>& r, std::size_t size) : message_reader(size), r_(r) {}
  void read(std::byte* into, std::size_t n) override {
    if (n > left_) throw error("mproc::queue::get: a read past the end of a message");
    from_stream([&] { r_.read(into, n); });
    left_ -= n;
  }
  std::span<const std::byte> read_in_place(std::size_t max) override {
    if (left_ == 0 || max == 0) throw error("mproc::queue::get: a read past the end of a message");
    const auto piece = from_stream([&] { return r_.read_in_place(std::min(max, left_)); });
    left_ -= piece.size();
    return piece;
  }
  bool corrupted() const noexcept { return corrupted_; }
  // What the sink left unread.
  void skip_rest() {
    r_.skip_payload(left_);
    left_ = 0;
  }

 private:
  // A read of the stream, whose failed checks mark the message corrupted: not the sink's
  // error.
  template <class Read>
  std::invoke_result_t<Read&> from_stream(Read read) {
    try {
      return read();
    } catch (...) {
      corrupted_ = true;
      throw;
    }
  }

  stream_reader<channel::state>& r_;
  bool corrupted_ = false;
};

}  // namespace

// One take from lane `i`, whose reader lock the caller holds: reads records from the
// lane's head, hands each message to the request's sinks, and commits how far it got
// through the journal only once the sinks are done, so a consumer killed mid-take leaves
// the messages queued.
class lane_take {
 public:
  lane_take(channel::state& s, const void* self, std::uint32_t i, const take_request& request)
      : s_(s),
        l_(s.h->lanes[i]),
        self_(self),
        i_(i),
        request_(request),
        start_(unpack(l_.head.load(std::memory_order_relaxed))),
        first_seq_(l_.get_seq.load(std::memory_order_relaxed)) {}

  // How many messages were taken; rethrows what a sink threw, once the take is committed.
  std::size_t run() {
    position stop = start_;
    struct clear_handing {
      ~clear_handing() { current_handing = {}; }
    } clear;
    try {
      stream_reader r(s_, start_);
      while (taken_ < request_.max_messages && take_one(r)) {
      }
      stop = r.pos;
    } catch (const error&) {
      drop_unread();
      throw;
    }
    if (taken_ == 0) return 0;
    commit_through(stop);
    if (failure_) std::rethrow_exception(failure_);
    return taken_;
  }

 private:
  using reader = stream_reader<channel::state>;

  // Corrupted memory: drops what is unread so that the lane stays usable, up to the lane's
  // end word. When this consumer has passed it (its producer is between publishing records
  // and storing the end, or died there), that end is behind: the message stays, and each
  // get throws until the end moves on.
  void drop_unread() {
    const std::uint64_t end_word = l_.tail.load(std::memory_order_acquire);
    const std::uint64_t put = published(end_word, first_seq_);
    if (put > first_seq_) channel::state::commit(l_.get_journal, l_.head, l_.get_seq, unpack_end(end_word).pos, put);
  }

  // Reads the next record and hands its message on; false when the take ends here.
  bool take_one(reader& r) {
    current_handing = {self_, i_, first_seq_ + taken_};
    const position record = r.pos;
    const std::optional<record_head> head = r.next_head();
    if (!head) return false;
    const auto [length, ticket] = *head;
    if (taken_ != 0 && !ticket_before(ticket, request_.below_ticket)) {
      r.pos = record;  // another lane's first message was put before this one
      return false;
    }
    if (request_.options.on_spanning && !r.fits_here(length)) return take_spanning(r, record, length);
    return take_whole(r, record, length);
  }

  // A message that spans blocks, read in place by the on_spanning sink.
  bool take_spanning(reader& r, position record, std::uint64_t length) {
    lane_message_reader message(r, static_cast<std::size_t>(length));
    try {
      request_.options.on_spanning(message);
    } catch (const std::bad_alloc&) {
      if (message.remaining() == message.size()) {
        cannot_hold(r, record, length);  // nothing read: the reader is still at the message's start
        return false;
      }
      failure_ = std::current_exception();
    } catch (...) {
      if (message.corrupted()) throw;
      failure_ = std::current_exception();
    }
    message.skip_rest();
    r.align();
    ++taken_;
    return !failure_;
  }

  // A message handed to the sink as one span: in place, or gathered when it spans blocks.
  bool take_whole(reader& r, position record, std::uint64_t length) {
    thread_local std::vector<std::byte> gathered;  // only for a message that spans blocks; reused
    std::span<const std::byte> message;
    try {
      message = r.payload(length, gathered);
    } catch (const std::bad_alloc&) {
      cannot_hold(r, record, length);
      return false;
    }
    ++taken_;
    try {
      request_.sink(message);
    } catch (...) {
      failure_ = std::current_exception();
      return false;
    }
    return true;
  }

  // Called while handling the bad_alloc of a message this consumer has no memory for.
  // After other messages, the take ends before it and it stays queued for the next get;
  // as the first, it goes to on_unreadable (its prefix and size) and is dropped, or
  // without one the bad_alloc goes on with the message left queued.
  void cannot_hold(reader& r, position record, std::uint64_t length) {
    if (taken_ != 0) {
      r.pos = record;
      return;
    }
    if (!request_.options.on_unreadable) throw;
    std::byte prefix[unreadable_prefix_bytes];
    const std::size_t k = std::min<std::size_t>(length, sizeof prefix);
    r.read(prefix, k);
    r.skip_payload(length - k);
    ++taken_;
    try {
      request_.options.on_unreadable({prefix, k}, static_cast<std::size_t>(length));
    } catch (...) {
      failure_ = std::current_exception();
    }
  }

  // Moves the lane's head to `stop` and frees the blocks it left behind.
  void commit_through(position stop) {
    channel::state::commit(l_.get_journal, l_.head, l_.get_seq, stop, first_seq_ + taken_);
    for (std::uint32_t b = start_.block; b != stop.block;) {
      const std::uint32_t next = s_.meta(b).next.load(std::memory_order_acquire);
      s_.free_block(b);
      b = next;
    }
  }

  channel::state& s_;
  lane& l_;
  const void* self_;
  std::uint32_t i_;
  const take_request& request_;
  position start_;
  std::uint64_t first_seq_;
  std::size_t taken_ = 0;
  std::exception_ptr failure_;
};

// Gives back lane `i`'s reader lock after a take of `taken` messages, and wakes whom the
// take concerns.
static void unlock_after_take(channel::state& s, std::uint32_t i, std::size_t taken) noexcept {
  header& h = *s.h;
  // Another consumer may sleep while this one held the lane: only then is it worth
  // reading the lane's end again.
  const bool more = h.not_empty.sleepers.load(std::memory_order_relaxed) != 0 && s.has_messages(i);
  h.lanes[i].reader.unlock();
  if (taken != 0) {
    // Producers asleep on a full queue are woken together once it has drained to half
    // (see full_queue_sleep), not one per message taken.
    if (h.maxsize != 0 && h.not_full.sleepers.load(std::memory_order_relaxed) != 0 && s.fill_check_due(taken) &&
        s.size() <= h.maxsize / 2) {
      h.not_full.announce(INT_MAX);
    }
    if (more) h.not_empty.announce_one();
  }
}

// Takes from lane `i`, whose reader lock the caller just got, then unlocks it and wakes
// whom the take concerns.
static std::size_t take_and_unlock(channel::state& s, const void* self, std::uint32_t i, const take_request& request) {
  std::size_t taken = 0;
  std::exception_ptr failure;
  try {
    taken = lane_take(s, self, i, request).run();
  } catch (...) {
    failure = std::current_exception();
  }
  unlock_after_take(s, i, taken);
  if (failure) std::rethrow_exception(failure);
  return taken;
}

// The common get made lean: one message, from lane `only` (the oldest first message's),
// when no other consumer reads that lane and the message lies whole in its block. It is
// the take lane_take makes (handed over in place, committed through the journal once the
// sink is done with it), with fewer calls and checks, which every get would pay. Empty,
// having taken nothing, when any of that does not hold: the general path then decides,
// and reports what it finds wrong.
static std::optional<std::size_t> take_lean(channel::state& s, const void* self, message_sink sink,
                                            std::uint32_t only) {
  lane& l = s.h->lanes[only];
  if (l.reader.try_lock() != lock_result::locked) return std::nullopt;
  const position start = unpack(l.head.load(std::memory_order_relaxed));
  const std::byte* record = nullptr;
  std::uint64_t word = 0;
  if (start.offset < channel::state::block_bytes && valid_position<channel::state>(start, s.block_count())) {
    try {
      record = s.block(start.block) + start.offset;
      word = load_word(record);
    } catch (...) {
      // Mapping the block failed: the general path reports it, with the lock given back.
    }
  }
  const std::uint64_t length = word >> tag_bits;
  if (word == 0 || length > channel::state::block_bytes - 8 - start.offset) {
    l.reader.unlock();  // taken meanwhile, in the next block, spanning blocks, or unmapped
    return std::nullopt;
  }
  const std::uint64_t seq = l.get_seq.load(std::memory_order_relaxed);
  std::exception_ptr failure;
  current_handing = {self, only, seq};
  try {
    sink({record + 8, static_cast<std::size_t>(length)});
  } catch (...) {
    failure = std::current_exception();  // the message is taken all the same
  }
  current_handing = {};
  channel::state::commit(l.get_journal, l.head, l.get_seq,
                         {start.block, static_cast<std::uint32_t>(start.offset + 8 + round8(length))}, seq + 1);
  unlock_after_take(s, only, 1);
  if (failure) std::rethrow_exception(failure);
  return 1;
}

namespace {

// The lanes that hold messages, oldest first message first.
// Which lanes hold messages is looked at twice: a lane seen empty the first time may have
// been published to before a message seen in another (a put made after that one
// returned), and is visible the second time. Each lane's first ticket comes with its first
// word (first_word: loads only), and the lowest is taken first.
struct lanes_in_order {
  std::uint32_t order[lane_count];
  std::uint64_t tickets[lane_count];
  std::uint32_t count = 0;

  explicit lanes_in_order(channel::state& s) {
    const std::uint32_t used = s.lanes_used();
    std::uint64_t words[lane_count];
    for (std::uint32_t i = 0; i < used; ++i) words[i] = s.first_word(i);
    for (std::uint32_t i = 0; i < used; ++i) {
      if (words[i] == 0) words[i] = s.first_word(i);
    }
    std::uint32_t unmappable = lane_count;
    for (std::uint32_t i = 0; i < used; ++i) {
      if (words[i] == 0) continue;
      if (words[i] == unmappable_word) {
        unmappable = i;
        continue;
      }
      tickets[i] = words[i] & tag_mask;
      order[count++] = i;
    }
    if (count > 1) {
      std::sort(order, order + count,
                [&](std::uint32_t a, std::uint32_t b) { return ticket_before(tickets[a], tickets[b]); });
    }
    // First: taking from it meets the mapping's error, which the get throws.
    if (unmappable != lane_count) {
      std::copy_backward(order, order + count, order + count + 1);
      order[0] = unmappable;
      tickets[unmappable] = 0;
      ++count;
    }
  }
  // The ticket below which a take from the k-th lane may go on: the next lane's first.
  std::uint64_t limit_of(std::uint32_t k) const { return k + 1 < count ? tickets[order[k + 1]] : no_ticket; }
};

}  // namespace

enum class busy_lane { locked, emptied, timed_out };

// Lane `i` holds messages but another consumer reads it: takes its reader lock, unless it
// emptied or the deadline passed first. A reader holds a lane for one take (a copy),
// so this spins on it a little first: sleeping in the kernel at once made two pool
// workers sleep and wake on every task.
static busy_lane lock_busy_lane(channel::state& s, std::uint32_t i, deadline until) {
  lane& l = s.h->lanes[i];
  for (unsigned spin = 0; spin < 64; ++spin) {
    if (spin < 48) {
      for (int k = 0; k < 8; ++k) cpu_relax();
    } else {
      yield_cpu();
    }
    if (!s.has_messages(i)) return busy_lane::emptied;
    if (l.reader.try_lock() == lock_result::locked) return busy_lane::locked;
  }
  switch (l.reader.lock(until)) {
    case lock_result::recovered:
      s.recover_reader(l);
      return busy_lane::locked;
    case lock_result::timed_out:
      return busy_lane::timed_out;
    default:
      return busy_lane::locked;
  }
}

std::size_t channel::get(message_sink sink, std::size_t max_messages, deadline until, const get_options& options) {
  state& s = *state_;
  header& h = *s.h;
  const auto stop = [&] { return options.stop_waiting && options.stop_waiting(); };
  for (;;) {
    const lanes_in_order lanes(s);
    if (lanes.count == 0) {
      if (!wait_for_condition(
              h.not_empty, [&] { return s.any_messages() || stop(); }, until))
        return 0;
      if (stop() && !s.any_messages()) return 0;  // stop() is false at once without stop_waiting
      continue;
    }
    if (max_messages == 1) {
      if (const auto taken = take_lean(s, state_.get(), sink, lanes.order[0])) return *taken;
    }
    std::uint32_t busy = lane_count;
    std::uint64_t busy_limit = no_ticket;
    for (std::uint32_t k = 0; k < lanes.count; ++k) {
      const std::uint32_t i = lanes.order[k];
      lane& l = h.lanes[i];
      if (l.reader.try_lock() != lock_result::locked) {
        if (busy == lane_count) {
          busy = i;
          busy_limit = lanes.limit_of(k);
        }
        continue;
      }
      const take_request request{sink, max_messages, options, lanes.limit_of(k)};
      if (const std::size_t taken = take_and_unlock(s, state_.get(), i, request)) return taken;
    }
    // Every lane with messages is being read by another consumer: wait for one of them.
    if (busy == lane_count) continue;
    const busy_lane got = lock_busy_lane(s, busy, until);
    if (got == busy_lane::timed_out) return 0;
    if (got == busy_lane::emptied) continue;
    const take_request request{sink, max_messages, options, busy_limit};
    if (const std::size_t taken = take_and_unlock(s, state_.get(), busy, request)) return taken;
  }
}

// Every sleeper, in every process: the wakeup keeps no per-process count, and a woken
// consumer with nothing to take and no reason to stop only sleeps again. The fence orders
// the caller's reason before the read of `sleepers` (announce has none, see wakeup): this
// is rare, and a sleeper must not wait out its first slice for it.
void channel::wake_consumers() noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  state_->h->not_empty.announce(INT_MAX);
}

wait_probe channel::probe() noexcept {
  return {.object = state_.get(),
          .ready = [](void* s) noexcept { return static_cast<state*>(s)->any_messages(); },
          .announced = &state_->h->not_empty,
          .wakes_one = true};
}

}  // namespace mproc::detail
