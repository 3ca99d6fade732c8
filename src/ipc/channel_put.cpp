// Putting: waiting for room, writing to this process's lane (or the shared one), and
// waking a consumer that sleeps.
#include <chrono>
#include <cstring>
#include <thread>

#include "ipc/channel_state.hpp"
#include "wait/cpu_relax.hpp"

namespace mproc::detail {
namespace {

// Messages for write_messages: `messages[i]` = bytes [ends[i-1], ends[i]) of `data`.
struct contiguous_messages {
  std::span<const std::byte> data;
  std::span<const std::size_t> ends;
  std::size_t count() const noexcept { return ends.size(); }
  std::size_t begin(std::size_t m) const noexcept { return m == 0 ? 0 : ends[m - 1]; }
  std::size_t length(std::size_t m) const noexcept { return ends[m] - begin(m); }
  template <class Writer>
  void write(std::size_t m, Writer& w) const {
    w.write(data.data() + begin(m), length(m));
  }
};

// One message, the concatenation of `pieces`.
struct pieced_message {
  message_pieces pieces;
  std::size_t count() const noexcept { return 1; }
  std::size_t length(std::size_t) const noexcept {
    std::size_t n = 0;
    for (const auto& piece : pieces) n += piece.size();
    return n;
  }
  template <class Writer>
  void write(std::size_t, Writer& w) const {
    for (const auto& piece : pieces) w.write(piece.data(), piece.size());
  }
};

}  // namespace

// Wakes a consumer for `k` messages just put, if one sleeps. A put of one message skips the
// wake when a put woke a consumer less than put_wake_interval ago: that one is running or
// about to, and a consumer that takes a message and sees more wakes the next sleeper
// itself (get). Without this, a pool's parent submitting a burst made a wake syscall per
// task while its woken workers were still being scheduled.
static void announce_put(header& h, std::size_t k) {
  if (h.not_empty.sleepers.load(std::memory_order_acquire) == 0) return;
  if (k != 1) {
    h.not_empty.announce(INT_MAX);
    return;
  }
  const std::int64_t now = monotonic_ns();
  if (now - h.not_empty_woken_ns.load(std::memory_order_relaxed) < put_wake_interval.count()) return;
  h.not_empty_woken_ns.store(now, std::memory_order_relaxed);
  h.not_empty.announce_one();
}

// put and put_pieces: waits for room, writes to this process's lane (or the shared one).
template <class Messages>
static std::size_t put_messages(channel::state& s, const Messages& messages, deadline until) {
  header& h = *s.h;
  const std::size_t n = messages.count();
  const std::size_t maxsize = static_cast<std::size_t>(h.maxsize);
  channel::state::writer& w = s.this_process_writer();
  const std::uint32_t own_lane = w.lane;
  std::size_t done = 0;
  while (done < n) {
    std::size_t k = std::min<std::size_t>(n - done, publish_room / 2);
    if (maxsize != 0) {
      // A full queue's consumers' counts are read again only after a pause: each read takes
      // their line away from them, and a consumer then stalls on its next commit until it
      // has the line back. By the next read, a consumer that keeps going has freed a run of
      // slots, which this producer fills without reading their counts.
      const auto has_room = [&] {
        if (s.fill_hint(maxsize) < maxsize) return true;
        for (int pause = 0; pause < full_queue_poll_pauses; ++pause) cpu_relax();
        return false;
      };
      if (!wait_for_condition(h.not_full, has_room, until, full_queue_sleep)) break;
      const std::uint64_t fill = s.fill_hint(maxsize);
      k = std::min<std::size_t>(k, fill < maxsize ? maxsize - fill : 0);
      if (k == 0) continue;  // another producer filled it first
    }
    bool written;
    if (own_lane == shared_lane) {
      if (!robust_mutex_lock(h.put_lock, until, "mproc::queue", "put", [&] { s.recover_shared_lane(); })) break;
      robust_unlock_guard unlock(h.put_lock);
      s.start_lane(shared_lane);  // its first block, if no claim gave it one yet
      written = s.write_messages(shared_lane, true, messages, done, k);
    } else {
      std::lock_guard guard(w.mutex);
      written = s.write_messages(own_lane, false, messages, done, k);
    }
    if (!written) {
      // The lane holds 2^29 messages nobody took (8 GiB or more): wait as for a full queue.
      if (until.passed()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    done += k;
    announce_put(h, k);
  }
  return done;
}

std::size_t channel::put(std::span<const std::byte> data, std::span<const std::size_t> ends, deadline until) {
  return put_messages(*state_, contiguous_messages{data, ends}, until);
}

// The common put made lean (see write_small): one small message into this process's own
// lane, while its thread holds the lane's biased mutex for nothing and the queue has room.
// False, having written nothing, when any of that does not hold.
static bool put_small(channel::state& s, std::span<const std::byte> message) {
  channel::state::writer* w = s.claimed_writer();
  if (w == nullptr || w->lane == shared_lane) return false;
  header& h = *s.h;
  const auto maxsize = static_cast<std::size_t>(h.maxsize);
  if (maxsize != 0 && s.fill_hint(maxsize) >= maxsize) return false;
  {
    std::lock_guard guard(w->mutex);
    if (!s.write_small(w->lane, message)) return false;
  }
  announce_put(h, 1);
  return true;
}

// Out of line, so that the lean path above makes no stores for what this one needs.
[[gnu::noinline]] static bool put_general(channel::state& s, std::span<const std::byte> message, deadline until) {
  const std::size_t end = message.size();
  return put_messages(s, contiguous_messages{message, {&end, 1}}, until) == 1;
}

bool channel::put_one(std::span<const std::byte> message, deadline until) {
  return put_small(*state_, message) || put_general(*state_, message, until);
}

std::size_t channel::put_pieces(message_pieces pieces, deadline until) {
  // A small message (a short string or vector: its header and a few bytes) is gathered
  // here, so that it takes the lean path too.
  const std::size_t length = pieced_message{pieces}.length(0);
  if (length <= channel::state::small_message_bytes) {
    std::byte gathered[channel::state::small_message_bytes];
    std::size_t at = 0;
    for (const auto& piece : pieces) {
      if (piece.empty()) continue;  // an empty piece's data may be null
      std::memcpy(gathered + at, piece.data(), piece.size());
      at += piece.size();
    }
    if (put_small(*state_, {gathered, length})) return 1;
  }
  return put_messages(*state_, pieced_message{pieces}, until);
}

}  // namespace mproc::detail
