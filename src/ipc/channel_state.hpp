// The state one process keeps of a channel (struct channel::state) over its shared
// layout (channel_layout.hpp): what channel.cpp, channel_put.cpp and channel_get.cpp share.
#pragma once

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <memory>
#include <mutex>
#include <utility>

#include "ipc/channel_layout.hpp"
#include "ipc/channel_stream.hpp"
#include "mproc/detail/ipc/channel.hpp"
#include "mproc/error.hpp"
#include "os/page_size.hpp"
#include "os/process_incarnation.hpp"
#include "shm/shared_memory.hpp"
#include "wait/biased_mutex.hpp"
#include "wait/futex.hpp"
#include "wait/robust_mutex.hpp"

namespace mproc::detail {

// The channel's files speak in its layout's words.
using namespace channel_layout;

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
    biased_mutex mutex;          // free while only the thread that claimed the lane puts
    writer* replaced = nullptr;  // the parent's, copied by fork: freed with this one
    ~writer() { delete replaced; }
  };

  std::unique_ptr<shared_memory> mem;
  header* h = nullptr;
  const std::uint64_t serial = next_serial();  // tells this object's lanes from others' in this process
  std::atomic<writer*> writer_{nullptr};

  // Each lane's get_seq as this process's producers last read it: a lower bound, read
  // again only when the queue looks full (or the lane's count nears 2^29), so that a
  // producer does not fetch the consumers' line on each put.
  std::atomic<std::uint64_t> taken_seen[lane_count]{};

  // Messages this process's consumers took while producers slept on a full queue (see
  // fill_check_due).
  std::atomic<std::uint64_t> taken_while_full{0};

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
      if (index >= block_count()) corrupted_write("bad free block");
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
        robust_mutex_lock(h->put_lock, deadline::never(), "mproc::queue", "put", [&] { recover_shared_lane(); });
        robust_unlock_guard unlock(h->put_lock);
        return allocate_block(true);
      }
      index = pop(h->released);
      if (index != no_block) {
        mem->reallocate(data_offset(index), block_bytes - page_size);
        h->released_block_reused_ns.store(monotonic_ns(), std::memory_order_relaxed);
      }
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
  // 1 MiB messages ran at 0.4 GB/s instead of 20.) But while memory given back is soon
  // taken again (a released block reused within released_reuse_span), nothing more is
  // given back: a stream whose fill swings, such as 1 MiB messages through a queue of
  // maxsize 16, otherwise punched and refaulted a tenth of its blocks on every swing, and
  // its consumer spent a fifth of its time in fallocate's TLB flushes. The counts are read
  // without a lock: a race only moves the line between kept and released by a block.
  void free_block(std::uint32_t index) {
    const std::uint32_t free_now = h->free.count.load(std::memory_order_relaxed);
    const std::uint32_t unused = free_now + h->released.count.load(std::memory_order_relaxed);
    const std::uint32_t blocks = h->block_count.load(std::memory_order_relaxed);
    const std::uint32_t in_use = blocks - std::min(unused, blocks);
    if (free_now >= std::max(keep_free_blocks, in_use) && !released_memory_wanted_lately()) {
      mem->release(data_offset(index), block_bytes - page_size);
      push(h->released, index);
    } else {
      push(h->free, index);
    }
  }
  bool released_memory_wanted_lately() const noexcept {
    return monotonic_ns() - h->released_block_reused_ns.load(std::memory_order_relaxed) < released_reuse_span.count();
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
  // The word at lane l's head now: 0 if no record can be read there, unmappable_word if
  // this process cannot map the block it lies in (see first_word).
  std::uint64_t word_at_head(const lane& l) noexcept {
    const position at = unpack(l.head.load(std::memory_order_acquire));
    const std::uint32_t count = block_count();
    if (!valid_position<state>(at, count)) return 0;
    try {
      const position place = head_place(*this, at);
      return place.block < count ? load_word(block(place.block) + place.offset) : 0;
    } catch (...) {
      // The file is shorter than its block count says, or the address space is exhausted.
      return unmappable_word;
    }
  }
  // The word at lane i's head: its first record's head word once published, else 0 (see
  // channel_stream.hpp, Publication). It lies on the line a consumer reads next anyway.
  // Read between two reads of the lane's taken count that agree, so no take committed in
  // between: the word is the lane's first at one instant, and the block it lies in was not
  // freed and reused under the read (a take stores its count before it frees a block, and
  // a producer's later write there would order that store before the second read). Loads
  // only, no lock: a consumer compares every lane's first ticket on each get. A lane with
  // no block yet reads as 0; one whose head this process cannot map, as unmappable_word.
  std::uint64_t first_word(std::uint32_t i) noexcept {
    const lane& l = h->lanes[i];
    for (;;) {
      const std::uint64_t taken = l.get_seq.load(std::memory_order_acquire);
      const std::uint64_t word = word_at_head(l);
      if (l.get_seq.load(std::memory_order_relaxed) == taken) return word;
    }
  }
  bool has_messages(std::uint32_t i) noexcept { return first_word(i) != 0; }

  bool any_messages() noexcept {
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
  // Whether a take of `taken` messages, made while producers sleep on a full queue, should
  // count the fill to see if it has drained to half (when they are woken): once every
  // maxsize/16 messages taken. Counting reads every lane's end, a line its producer writes:
  // done on every take, it was a fifth of the consumer's time with four producers asleep. The
  // producers are woken at most maxsize/16 messages after the half then, with plenty left.
  bool fill_check_due(std::size_t taken) noexcept {
    const std::uint64_t stride = std::max<std::uint64_t>(1, h->maxsize / 16);
    // Not a locked add: this process's consumer threads may lose each other's counts, which
    // only moves the check by a few messages, where a locked add waited for the commit's
    // stores to leave the store buffer, lines the producers poll.
    const std::uint64_t before = taken_while_full.load(std::memory_order_relaxed);
    taken_while_full.store(before + taken, std::memory_order_relaxed);
    return before / stride != (before + taken) / stride;
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
      if (fresh || !below_publish_room(unpack_end(end).seq, taken)) {
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
  static void commit(journal& j, std::atomic<std::uint64_t>& pos, std::atomic<std::uint64_t>& seq, position new_pos,
                     std::uint64_t new_seq) {
    j.position = pack(new_pos);
    j.seq = new_seq;
    j.valid.store(1, std::memory_order_release);
    pos.store(pack(new_pos), std::memory_order_release);
    seq.store(new_seq, std::memory_order_release);
    j.valid.store(0, std::memory_order_release);
  }

  // put_lock found its owner dead: it may have been writing the shared lane.
  void recover_shared_lane() noexcept {
    h->owner_deaths.fetch_add(1, std::memory_order_relaxed);
    settle_end(shared_lane);
  }

  // Under put_lock, for a lane whose writer died: moves its end word past the records the
  // writer published (each record publishes itself) before it died storing the end; the
  // bytes past them were never published, and the next write overwrites them, reusing the
  // blocks it linked there. Holds the lane's reader lock meanwhile, so that no consumer
  // frees blocks under the walk: a consumer may have passed the end word already, and then
  // the walk starts from its head.
  void settle_end(std::uint32_t i) noexcept {
    lane& l = h->lanes[i];
    const std::uint64_t end_word = l.tail.load(std::memory_order_acquire);
    if (end_word == 0) return;  // no block yet: nothing was ever written
    const bool held = reader_held_by_caller(i);
    if (!held && l.reader.lock(deadline::never()) == lock_result::recovered) recover_reader(l);
    try {
      const std::uint64_t taken = l.get_seq.load(std::memory_order_acquire);
      std::uint64_t count = published(end_word, taken);
      // Consumers at or past the end word: the walk starts where they are.
      stream_reader r(*this,
                      count == taken ? unpack(l.head.load(std::memory_order_acquire)) : unpack_end(end_word).pos);
      while (const auto head = r.next_head()) {
        r.skip_payload(head->length);
        ++count;
      }
      l.tail.store(pack_end(r.pos, count), std::memory_order_release);
    } catch (const error&) {
      // Corrupted: the end stays, and consumers drop what they cannot read.
    }
    if (!held) l.reader.unlock();
  }
  // Whether the calling thread holds lane i's reader lock: inside a get's sink on that
  // lane, or in hold_consumers' action (every lane).
  bool reader_held_by_caller(std::uint32_t i) const noexcept {
    return current_handing.channel == this && (current_handing.lane == all_lanes || current_handing.lane == i);
  }

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
    store_word(block(start.block) + start.offset, 0, std::memory_order_relaxed);  // no record yet
    l.head.store(pack(start), std::memory_order_release);
    l.tail.store(pack_end(start, 0), std::memory_order_release);
  }

  // A lane for this process to write: one of its own when one is free (or its owner dead),
  // else the shared one. Under put_lock.
  std::uint32_t claim_lane(std::uint64_t me) {
    robust_mutex_lock(h->put_lock, deadline::never(), "mproc::queue", "put", [&] { recover_shared_lane(); });
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
          settle_end(i);
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

  // This process's writer, if it has claimed a lane already; else nullptr.
  writer* claimed_writer() const noexcept {
    writer* w = writer_.load(std::memory_order_acquire);
    return w != nullptr && w->incarnation == this_process_incarnation() ? w : nullptr;
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

  // Appends messages [first, first + k) of `messages` (see contiguous_messages) to lane `i`
  // and publishes them; false, writing nothing, when the lane would then hold publish_room
  // messages not taken. The caller owns the lane (its writer's mutex, or put_lock for the
  // shared lane).
  template <class Messages>
  bool write_messages(std::uint32_t i, bool put_locked, const Messages& messages, std::size_t first, std::size_t k) {
    lane_store store{*this, put_locked};
    lane& l = h->lanes[i];
    const lane_end end = unpack_end(l.tail.load(std::memory_order_relaxed));
    if (!below_publish_room(end.seq + k, taken_seen[i].load(std::memory_order_relaxed))) {
      const std::uint64_t taken = l.get_seq.load(std::memory_order_acquire);
      taken_seen[i].store(taken, std::memory_order_relaxed);
      if (!below_publish_room(end.seq + k, taken)) return false;
    }
    stream_writer w(store, end.pos);
    std::uint64_t ticket = next_ticket();
    for (std::size_t m = first; m < first + k; ++m, ++ticket) {
      ticket = nonzero_tag(ticket);
      w.write_head(messages.length(m), ticket);
      messages.write(m, w);
      w.align();
    }
    w.publish();
    store_end(l, w.pos, end.seq + k, ticket - 1);
    return true;
  }

  // write_messages for the common put, with as few stores as it can make: one message of
  // at most small_message_bytes, whose record and the next head's word lie in the lane's
  // current block, with the lane far from publish_room. False, writing nothing, otherwise.
  // (A consumer that keeps up reads the line the producer writes, which must then fetch
  // it back; the stores wait in the store buffer meanwhile, and the producer stalls once
  // that is full: the fewer stores a put makes, spills and calls' return addresses among
  // them, the more puts the wait for one line covers.) The records are those of
  // write_messages, published in the same order.
  bool write_small(std::uint32_t i, std::span<const std::byte> message) {
    lane& l = h->lanes[i];
    const lane_end end = unpack_end(l.tail.load(std::memory_order_relaxed));
    const std::size_t next_head = end.pos.offset + 8 + round8(message.size());
    if (message.size() > small_message_bytes || next_head >= block_bytes) return false;
    if (!below_publish_room(end.seq + 1, taken_seen[i].load(std::memory_order_relaxed))) return false;
    if (!valid_position<state>(end.pos, block_count())) return false;  // write_messages reports it
    std::byte* const at = block(end.pos.block) + end.pos.offset;
    const std::uint64_t ticket = nonzero_tag(next_ticket());
    if (!message.empty()) std::memcpy(at + 8, message.data(), message.size());
    store_word(at + (next_head - end.pos.offset), 0, std::memory_order_relaxed);
    store_word(at, head_word(message.size(), ticket), std::memory_order_release);
    store_end(l, {end.pos.block, static_cast<std::uint32_t>(next_head)}, end.seq + 1, ticket);
    return true;
  }
  static constexpr std::size_t small_message_bytes = 256;

  // Whether a lane whose count would be `put` after a write, `taken` of them taken (as far
  // as this process knows), holds fewer than publish_room messages.
  static bool below_publish_room(std::uint64_t put, std::uint64_t taken) noexcept {
    return ((put - taken) & end_seq_mask) < publish_room;
  }
  // Each record is tagged with its message's ticket, whose low tag_bits are never 0 (a
  // head word of 0 means "not published").
  static std::uint64_t nonzero_tag(std::uint64_t ticket) noexcept {
    return (ticket & tag_mask) == 0 ? ticket + 1 : ticket;
  }
  // The end word, for the fill count and for whoever takes the lane over: consumers do not
  // read it to find records.
  static void store_end(lane& l, position end, std::uint64_t seq, std::uint64_t last_ticket) noexcept {
    l.last_ticket.store(last_ticket, std::memory_order_relaxed);
    l.tail.store(pack_end(end, seq), std::memory_order_release);
  }

  // The ticket of a put about to write: above every lane's last one. A put made after
  // another returned reads that one's lane's last_ticket (or a later value), so its ticket
  // is higher, as consumers need (see lanes_in_order); concurrent puts may tie, and are
  // taken in either order. No shared counter: its atomic add waited, on every put, for the
  // consumer to give back the lines the previous put had written (the stall of a
  // store-load fence, see wakeup), which was 37% of a small put's time; reading the
  // lanes' producer lines costs nothing while no other producer writes them.
  std::uint64_t next_ticket() const noexcept {
    std::uint64_t highest = 0;
    const std::uint32_t used = lanes_used();
    for (std::uint32_t i = 0; i < used; ++i) {
      highest = std::max(highest, h->lanes[i].last_ticket.load(std::memory_order_relaxed));
    }
    return highest + 1;
  }
};

}  // namespace mproc::detail
