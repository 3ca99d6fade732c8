#include "mproc/detail/ipc/channel.hpp"

#include <pthread.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "ipc/channel_stream.hpp"
#include "wait/futex.hpp"
#include "mproc/error.hpp"
#include "os/process_incarnation.hpp"
#include "wait/robust_mutex.hpp"
#include "os/page_size.hpp"
#include "shm/shared_memory.hpp"

namespace mproc::detail {
namespace {

using namespace channel_stream;

// Layout of the memfd: a header (the lanes' table among it), then blocks of
// state::block_bytes, which hold each lane's messages as a stream of records (see
// channel_stream.hpp): a message may span any number of blocks, so any size works; blocks
// that consumers have passed go to a free list that every lane's producer reuses.
constexpr std::uint32_t channel_magic = 0x6d70'7163;  // "mpqc"
constexpr std::uint32_t layout_version = 6;
constexpr std::size_t header_bytes = 16384;
// Free blocks beyond this many, and beyond the blocks in use, give their memory back (a
// queue that once held a 100 MiB message does not keep 100 MiB).
constexpr std::uint32_t keep_free_blocks = 64;

// Lane 0 is shared by the producers that found no lane of their own (under put_lock);
// lanes 1.. are each one producer's.
constexpr std::uint32_t lane_count = 64;
constexpr std::uint32_t shared_lane = 0;

// How long a producer sleeps on a full queue before it looks again by itself. Consumers
// wake the sleeping producers only once the queue has drained to half its maxsize: waking
// one per message taken made each message cost a wake, a sleep and two context switches
// when producers outnumber cores (8 producers on 2 cores moved 0.17M msg/s; Boost 1.8M).
// So a producer may sleep this long beside a little room when the consumer stops taking
// before half: a delay, bounded here, never a hang.
constexpr std::chrono::milliseconds full_queue_sleep{2};
// A put wakes a sleeping consumer at most this often (see announce_put).
constexpr std::chrono::nanoseconds put_wake_interval{20'000};

// A message id: its lane in the top bits, its sequence number in the lane below.
constexpr unsigned lane_shift = 56;
constexpr std::uint64_t seq_mask = (std::uint64_t{1} << lane_shift) - 1;
constexpr std::uint32_t all_lanes = UINT32_MAX;

// A lock-free stack of blocks, linked through block_header::next_free: consumers push,
// producers pop.
struct block_stack {
  std::atomic<std::uint64_t> top;  // tag << 32 | block; the tag defeats ABA
  std::atomic<std::uint32_t> count;
};

// A consumer's commit made crash-atomic: written, marked valid, applied, cleared. The next
// locker of the lane's consumers' lock re-applies a valid journal left by one that died.
struct journal {
  std::atomic<std::uint32_t> valid;
  std::uint64_t position;
  std::uint64_t seq;
};

struct lane {
  // The producer's line: written by the lane's owner only (or, for the shared lane, by the
  // holder of put_lock).
  alignas(64) std::atomic<std::uint64_t> owner;  // process incarnation; 0: free
  std::atomic<std::uint64_t> holder;             // which channel object of the owner (its serial)
  std::atomic<std::uint64_t> tail;               // pack_end of the published messages; 0: no block yet

  // The consumers' line: written under `reader`.
  alignas(64) std::atomic<std::uint64_t> head;  // start of the first message not taken
  std::atomic<std::uint64_t> get_seq;           // messages taken
  journal get_journal;

  alignas(64) pthread_mutex_t reader;
};

struct header {
  std::uint32_t magic;
  std::uint32_t version;
  std::uint64_t maxsize;

  // Lane claims, growth of the file, and the shared lane's writes.
  alignas(64) pthread_mutex_t put_lock;
  std::atomic<std::uint32_t> block_count;  // blocks in the file; grown under put_lock
  std::atomic<std::uint32_t> lanes_used;   // lanes [0, lanes_used) may hold messages

  // The next message's ticket. Every message carries one (taken when its put writes it),
  // and consumers take the lowest ticket among the lanes' first messages, so a put made
  // after another one returned, in any thread of any process, is taken after it: the
  // producers' pattern "join the producers, then put a stop message for each consumer".
  alignas(64) std::atomic<std::uint64_t> tickets;

  alignas(64) wakeup not_empty;
  std::atomic<std::int64_t> not_empty_woken_ns;  // when a put last woke a consumer (CLOCK_MONOTONIC)
  alignas(64) wakeup not_full;

  // Passed blocks: `free` ones keep their memory, for reuse without page faults; `released`
  // ones gave it back (their index is reused, their memory allocated again).
  alignas(64) block_stack free;
  block_stack released;

  alignas(64) std::atomic<std::uint64_t> done;  // task_done() calls
  wakeup all_done;

  alignas(64) std::atomic<std::uint64_t> owner_deaths;
  std::atomic<std::uint64_t> lane_takeovers;  // those of owner_deaths that were a lane's producer

  lane lanes[lane_count];
};
static_assert(sizeof(header) <= header_bytes);

// The lane a get's sink runs under, for message_id() and held_by_caller().
struct handing {
  const void* channel = nullptr;
  std::uint32_t lane = 0;
  std::uint64_t seq = 0;
};
thread_local handing current_handing;

}  // namespace

// The channel's memory, as the Store of channel_stream.hpp, and what this process knows of
// its lanes.
struct channel::state {
  static constexpr std::size_t block_bytes = 64 * 1024;

  // The Store of a producer's stream_writer: allocates blocks knowing whether it holds
  // put_lock already.
  struct lane_store {
    state& s;
    bool put_locked;
    static constexpr std::size_t block_bytes = state::block_bytes;
    std::byte* block(std::uint32_t b) { return s.block(b); }
    std::uint32_t block_count() const noexcept { return s.block_count(); }
    std::uint32_t allocate_block() { return s.allocate_block(put_locked); }
  };

  // This process's lane for this channel object, claimed on its first put. Its threads
  // take turns on it, so one process's puts keep the order in which they were made, across
  // its threads too, as with Python's Queue (whose feeder thread sends a process's puts in
  // order). A forked child finds the parent's incarnation here and claims a lane of its
  // own; the mutex it inherited may be held by a thread that did not survive the fork, and
  // is never touched there.
  struct writer {
    std::uint64_t incarnation;
    std::uint32_t lane;
    std::mutex mutex;
    writer* replaced = nullptr;  // the parent's, copied by fork: freed with this one
    ~writer() { delete replaced; }
  };

  std::unique_ptr<shared_memory> mem;
  header* h = nullptr;
  const std::uint64_t serial = next_serial();  // tells this object's lanes from others' in this process
  std::atomic<writer*> writer_{nullptr};

  // What this process last read of each lane's end (under the lane's reader lock): a
  // consumer reads the producer's line again only once it has taken all it saw, so during
  // a burst that line stays in the producer's cache. Each value was true once, and ends
  // only move forward, so a stale one is an older end, still ahead of any head before it.
  struct seen_end {
    std::atomic<std::uint64_t> published{0};  // the full count
    std::atomic<std::uint64_t> end{0};        // pack_end
  };
  seen_end seen[lane_count];
  // Each lane's get_seq as this process's producers last read it: a lower bound, read
  // again only when the queue looks full (or the lane's count nears 2^29), so that a
  // producer does not fetch the consumers' line on each put.
  std::atomic<std::uint64_t> taken_seen[lane_count]{};

  static std::uint64_t next_serial() noexcept {
    static std::atomic<std::uint64_t> serials{0};
    return serials.fetch_add(1, std::memory_order_relaxed) + 1;
  }

  // Gives back the lane this object holds in this process.
  ~state() {
    delete writer_.load(std::memory_order_acquire);
    if (h == nullptr) return;
    const std::uint64_t me = this_process_incarnation();
    const std::uint32_t used = lanes_used();
    for (std::uint32_t i = 1; i < used; ++i) release_lane(h, i, me, serial);
  }

  static void release_lane(header* h, std::uint32_t i, std::uint64_t incarnation, std::uint64_t serial) noexcept {
    lane& l = h->lanes[i];
    if (l.holder.load(std::memory_order_relaxed) != serial) return;
    l.owner.compare_exchange_strong(incarnation, 0, std::memory_order_acq_rel);
  }

  std::byte* block(std::uint32_t i) {
    const std::size_t offset = header_bytes + std::size_t{i} * block_bytes;
    mem->ensure_mapped(offset + block_bytes);
    return mem->base() + offset;
  }
  block_header& meta(std::uint32_t i) { return *reinterpret_cast<block_header*>(block(i)); }
  std::size_t data_offset(std::uint32_t i) const { return header_bytes + std::size_t{i} * block_bytes + page_size; }
  std::uint32_t block_count() const noexcept { return h->block_count.load(std::memory_order_acquire); }

  std::uint32_t pop(block_stack& stack) {
    std::uint64_t top = stack.top.load(std::memory_order_acquire);
    for (;;) {
      const auto index = static_cast<std::uint32_t>(top);
      if (index == no_block) return no_block;
      if (index >= block_count()) corrupted("bad free block");
      const std::uint64_t next = ((top >> 32) + 1) << 32 | meta(index).next_free.load(std::memory_order_relaxed);
      if (stack.top.compare_exchange_weak(top, next, std::memory_order_acq_rel)) {
        stack.count.fetch_sub(1, std::memory_order_relaxed);
        return index;
      }
    }
  }

  void push(block_stack& stack, std::uint32_t index) {
    block_header& b = meta(index);
    std::uint64_t top = stack.top.load(std::memory_order_acquire);
    for (;;) {
      b.next_free.store(static_cast<std::uint32_t>(top), std::memory_order_relaxed);
      if (stack.top.compare_exchange_weak(top, ((top >> 32) + 1) << 32 | index, std::memory_order_acq_rel)) break;
    }
    stack.count.fetch_add(1, std::memory_order_relaxed);
  }

  // A block whose next is no_block: a warm free one without any lock; else, under
  // put_lock (taken here unless `put_locked`), a released one or a new one.
  std::uint32_t allocate_block(bool put_locked) {
    std::uint32_t index = pop(h->free);
    if (index == no_block) {
      if (!put_locked) {
        robust_mutex_lock(h->put_lock, deadline::never(), [&] { recover_shared_lane(); });
        robust_unlock_guard unlock(h->put_lock);
        return allocate_block(true);
      }
      index = pop(h->released);
      if (index != no_block) mem->reallocate(data_offset(index), block_bytes - page_size);
    }
    if (index == no_block) {
      index = h->block_count.load(std::memory_order_relaxed);
      if (index >= max_blocks) throw error("mproc::queue::put: the queue holds 64 GiB, its most; get some first");
      mem->grow(header_bytes + (std::size_t{index} + 1) * block_bytes);
      h->block_count.store(index + 1, std::memory_order_release);
    }
    meta(index).next.store(no_block, std::memory_order_relaxed);
    return index;
  }

  // Free blocks keep their memory up to the number in use (at least keep_free_blocks), so
  // that a stream with N blocks in flight reuses its blocks without fallocate or page
  // faults; the surplus gives its memory back. A drained queue thus keeps at most half its
  // peak, then keep_free_blocks once its next burst is smaller. (Releasing into the same
  // LIFO list handed the cold block out next: every reuse faulted its pages in again, and
  // 1 MiB messages ran at 0.4 GB/s instead of 20.) The counts are read without a lock:
  // a race only moves the line between kept and released by a block.
  void free_block(std::uint32_t index) {
    const std::uint32_t free_now = h->free.count.load(std::memory_order_relaxed);
    const std::uint32_t unused = free_now + h->released.count.load(std::memory_order_relaxed);
    const std::uint32_t blocks = h->block_count.load(std::memory_order_relaxed);
    const std::uint32_t in_use = blocks - std::min(unused, blocks);
    if (free_now >= std::max(keep_free_blocks, in_use)) {
      mem->release(data_offset(index), block_bytes - page_size);
      push(h->released, index);
    } else {
      push(h->free, index);
    }
  }

  std::uint32_t lanes_used() const noexcept {
    return std::min(h->lanes_used.load(std::memory_order_acquire), lane_count);
  }
  // Lane i's messages published and taken. The taken count is read first: read after, it
  // could pass the end read before it.
  std::pair<std::uint64_t, std::uint64_t> counts(std::uint32_t i) const noexcept {
    const lane& l = h->lanes[i];
    const std::uint64_t taken = l.get_seq.load(std::memory_order_acquire);
    return {published(l.tail.load(std::memory_order_acquire), taken), taken};
  }
  bool has_messages(std::uint32_t i) const noexcept {
    const std::uint64_t taken = h->lanes[i].get_seq.load(std::memory_order_acquire);
    if (seen[i].published.load(std::memory_order_relaxed) > taken) return true;
    return published(h->lanes[i].tail.load(std::memory_order_acquire), taken) > taken;
  }
  static constexpr std::uint64_t no_ticket = UINT64_MAX;

  // The ticket of lane i's first message, read under the lane's reader lock if it is free:
  // no_ticket when the lane holds none, or another consumer is reading it (which then takes
  // that message itself). Anything inconsistent in the memory reads as no_ticket too.
  std::uint64_t head_ticket(std::uint32_t i) noexcept {
    lane& l = h->lanes[i];
    int locked;
    try {
      locked = robust_mutex_try_lock_raw(l.reader);
    } catch (...) {
      return no_ticket;
    }
    if (locked < 0) return no_ticket;
    if (locked == 1) {
      recover_reader(l);
      robust_mutex_mark_consistent(l.reader);
    }
    const std::uint64_t ticket = head_ticket_locked(i);
    ::pthread_mutex_unlock(&l.reader);
    return ticket;
  }
  // Lane i's reader lock held, `taken` its get_seq: the lane's end as this process last read
  // it (seen), read again only once everything seen has been taken; and its full count.
  struct lane_view {
    std::uint64_t end_word;
    std::uint64_t published;
  };
  lane_view published_end(std::uint32_t i, std::uint64_t taken) noexcept {
    seen_end& e = seen[i];
    lane_view v{e.end.load(std::memory_order_relaxed), e.published.load(std::memory_order_relaxed)};
    if (v.published <= taken) {
      v.end_word = h->lanes[i].tail.load(std::memory_order_acquire);
      v.published = published(v.end_word, taken);
      e.end.store(v.end_word, std::memory_order_relaxed);
      e.published.store(v.published, std::memory_order_relaxed);
    }
    return v;
  }

  std::uint64_t head_ticket_locked(std::uint32_t i) noexcept {
    const lane& l = h->lanes[i];
    const std::uint64_t taken = l.get_seq.load(std::memory_order_acquire);
    const lane_view v = published_end(i, taken);
    if (v.published <= taken) return no_ticket;
    try {
      stream_reader r(*this, unpack(l.head.load(std::memory_order_acquire)), unpack_end(v.end_word).pos);
      if (r.at_end()) return no_ticket;
      if (r.next_length() < sizeof(std::uint64_t)) return no_ticket;
      std::uint64_t ticket;
      r.read(&ticket, sizeof ticket);
      return ticket;
    } catch (...) {
      return no_ticket;
    }
  }

  bool any_messages() const noexcept {
    const std::uint32_t used = lanes_used();
    for (std::uint32_t i = 0; i < used; ++i) {
      if (has_messages(i)) return true;
    }
    return false;
  }
  std::size_t size() const noexcept {
    std::uint64_t held = 0;
    const std::uint32_t used = lanes_used();
    for (std::uint32_t i = 0; i < used; ++i) {
      const auto [put, taken] = counts(i);
      held += put - taken;
    }
    return static_cast<std::size_t>(held);
  }
  std::uint64_t put_total() const noexcept {
    std::uint64_t total = 0;
    const std::uint32_t used = lanes_used();
    for (std::uint32_t i = 0; i < used; ++i) total += counts(i).first;
    return total;
  }
  // What a bounded queue's producer reads as its fill: each lane's end, read now, less
  // what its consumers had taken when last read. Never above the true fill, so a producer
  // never waits beside room; the consumers' counts are read again only when the queue
  // looks full. (No shared counter of puts: its atomic add stalled every put until the
  // consumer gave back the line just published to, and a process killed between the
  // publish and the add would have left it wrong for good.)
  std::uint64_t fill_hint(std::size_t maxsize, bool fresh = false) noexcept {
    const std::uint32_t used = lanes_used();
    std::uint64_t fill = 0;
    for (std::uint32_t i = 0; i < used; ++i) {
      std::uint64_t taken = taken_seen[i].load(std::memory_order_relaxed);
      const std::uint64_t end = h->lanes[i].tail.load(std::memory_order_acquire);
      if (fresh || ((unpack_end(end).seq - taken) & end_seq_mask) >= publish_room) {
        taken = h->lanes[i].get_seq.load(std::memory_order_acquire);
        taken_seen[i].store(taken, std::memory_order_relaxed);
      }
      fill += published(end, taken) - taken;
    }
    if (fill >= maxsize && !fresh) return fill_hint(maxsize, true);
    return fill;
  }

  static void replay(journal& j, std::atomic<std::uint64_t>& pos, std::atomic<std::uint64_t>& seq) noexcept {
    if (j.valid.load(std::memory_order_acquire) != 0) {
      pos.store(j.position, std::memory_order_release);
      seq.store(j.seq, std::memory_order_release);
      j.valid.store(0, std::memory_order_release);
    }
  }
  static void commit(journal& j, std::atomic<std::uint64_t>& pos, std::atomic<std::uint64_t>& seq,
                     position new_pos, std::uint64_t new_seq) {
    j.position = pack(new_pos);
    j.seq = new_seq;
    j.valid.store(1, std::memory_order_release);
    pos.store(pack(new_pos), std::memory_order_release);
    seq.store(new_seq, std::memory_order_release);
    j.valid.store(0, std::memory_order_release);
  }

  // put_lock found its owner dead: it may have been writing the shared lane. Its bytes past
  // `tail` were never published; the next write overwrites them and reuses blocks it
  // linked there.
  void recover_shared_lane() noexcept { h->owner_deaths.fetch_add(1, std::memory_order_relaxed); }
  // A lane's reader lock found its owner dead: the message it was reading is still at
  // `head` unless its commit had begun.
  void recover_reader(lane& l) noexcept {
    replay(l.get_journal, l.head, l.get_seq);
    h->owner_deaths.fetch_add(1, std::memory_order_relaxed);
  }

  // put_lock held. Gives lane `i` a first block if it has none.
  void start_lane(std::uint32_t i) {
    lane& l = h->lanes[i];
    if (l.tail.load(std::memory_order_relaxed) != 0) return;
    const position start{allocate_block(true), block_data_begin};
    l.head.store(pack(start), std::memory_order_relaxed);
    l.tail.store(pack_end(start, 0), std::memory_order_release);
  }

  // A lane for this process to write: one of its own when one is free (or its owner dead),
  // else the shared one. Under put_lock.
  std::uint32_t claim_lane(std::uint64_t me) {
    robust_mutex_lock(h->put_lock, deadline::never(), [&] { recover_shared_lane(); });
    robust_unlock_guard unlock(h->put_lock);
    const std::uint32_t used = lanes_used();
    std::uint32_t chosen = shared_lane;
    for (std::uint32_t i = 1; i < used && chosen == shared_lane; ++i) {
      lane& l = h->lanes[i];
      std::uint64_t owner = l.owner.load(std::memory_order_acquire);
      if (owner == 0) {
        l.holder.store(serial, std::memory_order_relaxed);
        if (l.owner.compare_exchange_strong(owner, me, std::memory_order_acq_rel)) chosen = i;
      } else if (!process_incarnation_alive(owner)) {
        // Its producer died, perhaps mid-put: what it published stays, in order, before
        // what this process puts; what it wrote past its end is overwritten.
        l.holder.store(serial, std::memory_order_relaxed);
        if (l.owner.compare_exchange_strong(owner, me, std::memory_order_acq_rel)) {
          h->owner_deaths.fetch_add(1, std::memory_order_relaxed);
          h->lane_takeovers.fetch_add(1, std::memory_order_relaxed);
          chosen = i;
        }
      }
    }
    if (chosen == shared_lane && used < lane_count) {
      chosen = used;
      h->lanes[chosen].holder.store(serial, std::memory_order_relaxed);
      h->lanes[chosen].owner.store(me, std::memory_order_relaxed);
      start_lane(chosen);
      h->lanes_used.store(used + 1, std::memory_order_release);
    }
    start_lane(chosen);  // the shared lane gets its block on first use
    return chosen;
  }

  writer& this_process_writer() {
    const std::uint64_t me = this_process_incarnation();
    writer* w = writer_.load(std::memory_order_acquire);
    if (w != nullptr && w->incarnation == me) [[likely]]
      return *w;
    auto fresh = std::make_unique<writer>();
    fresh->incarnation = me;
    fresh->lane = claim_lane(me);
    fresh->replaced = w;  // another thread may still be looking at it: freed with this one
    if (writer_.compare_exchange_strong(w, fresh.get(), std::memory_order_acq_rel)) return *fresh.release();
    // Another thread of this process claimed one first: use it, give this one back.
    fresh->replaced = nullptr;
    release_lane(h, fresh->lane, me, serial);
    return *w;
  }

  // Appends messages [first, first + k) to lane `i` and publishes them; false, writing
  // nothing, when the lane would then hold publish_room messages. The caller owns the lane
  // (its writer's mutex, or put_lock for the shared lane).
  // Writes messages [first, first + k) of `messages` (see contiguous_messages) to lane i
  // and publishes them; false when the lane holds publish_room messages not taken.
  template <class Messages>
  bool write_messages(std::uint32_t i, bool put_locked, const Messages& messages, std::size_t first, std::size_t k) {
    lane_store store{*this, put_locked};
    lane& l = h->lanes[i];
    const lane_end end = unpack_end(l.tail.load(std::memory_order_relaxed));
    if (((end.seq + k - taken_seen[i].load(std::memory_order_relaxed)) & end_seq_mask) >= publish_room) {
      const std::uint64_t taken = l.get_seq.load(std::memory_order_acquire);
      taken_seen[i].store(taken, std::memory_order_relaxed);
      if (((end.seq + k - taken) & end_seq_mask) >= publish_room) return false;
    }
    stream_writer w(store, end.pos);
    // A record's payload is [u64 ticket][message].
    std::uint64_t ticket = h->tickets.fetch_add(k, std::memory_order_acq_rel);
    for (std::size_t m = first; m < first + k; ++m, ++ticket) {
      const std::uint64_t length = sizeof ticket + messages.length(m);
      w.write(&length, sizeof length);
      w.write(&ticket, sizeof ticket);
      messages.write(m, w);
      w.align();
    }
    l.tail.store(pack_end(w.pos, end.seq + k), std::memory_order_release);
    return true;
  }
};

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

channel::channel(std::size_t maxsize) : state_(std::make_unique<state>()) {
  state_->mem = shared_memory::create("mproc-queue", header_bytes, shared_memory::queue_reservation);
  header* h = new (state_->mem->base()) header{};
  h->magic = channel_magic;
  h->version = layout_version;
  h->maxsize = maxsize;
  robust_mutex_init(h->put_lock);
  for (lane& l : h->lanes) robust_mutex_init(l.reader);
  h->block_count.store(0);
  h->lanes_used.store(1);  // the shared lane
  h->free.top.store(no_block);
  h->released.top.store(no_block);
  state_->h = h;
}

channel::channel(const fd_token& token) : state_(std::make_unique<state>()) {
  state_->mem = shared_memory::adopt(unique_fd(claim_fd_token(token)), shared_memory::queue_reservation);
  auto* h = reinterpret_cast<header*>(state_->mem->base());
  if (h->magic != channel_magic || h->version != layout_version) {
    throw error("the handle received does not name an mproc queue of this version");
  }
  state_->h = h;
}

channel::~channel() = default;

std::size_t channel::size() const noexcept { return state_->size(); }
std::size_t channel::maxsize() const noexcept { return static_cast<std::size_t>(state_->h->maxsize); }
std::uint64_t channel::owner_deaths() const noexcept { return state_->h->owner_deaths.load(); }
std::uint64_t channel::lane_takeovers() const noexcept { return state_->h->lane_takeovers.load(); }
fd_token channel::token() const { return make_fd_token(state_->mem->fd()); }
void channel::forget_descriptor() noexcept { state_->mem->forget_descriptor(); }

std::uint64_t channel::message_id() const noexcept {
  return std::uint64_t{current_handing.lane} << lane_shift | current_handing.seq;
}

bool channel::committed(std::uint64_t id) const noexcept {
  const auto i = static_cast<std::uint32_t>(id >> lane_shift);
  if (i >= lane_count) return false;
  return (state_->h->lanes[i].get_seq.load(std::memory_order_acquire) & seq_mask) > (id & seq_mask);
}

bool channel::held_by_caller(std::uint64_t id) const noexcept {
  if (current_handing.channel != state_.get()) return false;
  return current_handing.lane == all_lanes || current_handing.lane == static_cast<std::uint32_t>(id >> lane_shift);
}

void channel::hold_consumers(function_ref<void()> action) {
  state& s = *state_;
  std::uint32_t locked = 0;
  struct unlock_all {
    state& s;
    std::uint32_t& locked;
    ~unlock_all() {
      while (locked > 0) ::pthread_mutex_unlock(&s.h->lanes[--locked].reader);
      current_handing = {};
    }
  } unlock{s, locked};
  for (; locked < lane_count; ++locked) {
    lane& l = s.h->lanes[locked];
    robust_mutex_lock(l.reader, deadline::never(), [&] { s.recover_reader(l); });
  }
  current_handing = {state_.get(), all_lanes, 0};
  action();
}

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
  h.not_empty.announce(1);
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
      if (!wait_for_condition(h.not_full, [&] { return s.fill_hint(maxsize) < maxsize; }, until,
                              full_queue_sleep)) {
        break;
      }
      const std::uint64_t fill = s.fill_hint(maxsize);
      k = std::min<std::size_t>(k, fill < maxsize ? maxsize - fill : 0);
      if (k == 0) continue;  // another producer filled it first
    }
    bool written;
    if (own_lane == shared_lane) {
      if (!robust_mutex_lock(h.put_lock, until, [&] { s.recover_shared_lane(); })) break;
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

bool channel::put_one(std::span<const std::byte> message, deadline until) {
  const std::size_t end = message.size();
  return put(message, {&end, 1}, until) == 1;
}

std::size_t channel::put_pieces(message_pieces pieces, deadline until) {
  return put_messages(*state_, pieced_message{pieces}, until);
}

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
      const auto cannot_hold = [&] {  // a message this consumer has no memory for
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
      if (h.maxsize != 0 && h.not_full.sleepers.load(std::memory_order_relaxed) != 0 &&
          s.size() <= h.maxsize / 2) {
        h.not_full.announce(INT_MAX);
      }
      if (more) h.not_empty.announce(1);
    }
    if (failure) std::rethrow_exception(failure);
    return taken;
  };
  for (;;) {
    if (!wait_for_condition(h.not_empty, [&] { return s.any_messages(); }, until)) return 0;
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

void channel::task_done() {
  header& h = *state_->h;
  std::uint64_t done = h.done.load(std::memory_order_acquire);
  do {
    if (done >= state_->put_total()) {
      throw error("task_done() called more times than there were items put");
    }
  } while (!h.done.compare_exchange_weak(done, done + 1, std::memory_order_acq_rel));
  h.all_done.announce(INT_MAX);
}

bool channel::join(deadline until) {
  header& h = *state_->h;
  return wait_for_condition(
      h.all_done, [&] { return h.done.load(std::memory_order_acquire) >= state_->put_total(); }, until);
}

}  // namespace mproc::detail
