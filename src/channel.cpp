#include "mproc/detail/channel.hpp"

#include <pthread.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "channel_stream.hpp"
#include "futex.hpp"
#include "mproc/error.hpp"
#include "robust_mutex.hpp"
#include "shared_memory.hpp"

namespace mproc::detail {
namespace {

using namespace channel_stream;

// Layout of the memfd: a header page, then blocks of state::block_bytes, which hold the
// messages as a stream of records (see channel_stream.hpp): a message may span any number
// of blocks, so any size works; blocks that consumers have passed go to a free list for
// producers to reuse.
constexpr std::uint32_t channel_magic = 0x6d70'7163;  // "mpqc"
constexpr std::uint32_t layout_version = 3;
constexpr std::size_t header_bytes = 4096;
// Free blocks beyond this many, and beyond the blocks in use, give their memory back (a
// queue that once held a 100 MiB message does not keep 100 MiB).
constexpr std::uint32_t keep_free_blocks = 64;

// A lock-free stack of blocks, linked through block_header::next_free: consumers push
// (under get_lock), producers pop (under put_lock).
struct block_stack {
  std::atomic<std::uint64_t> top;  // tag << 32 | block; the tag defeats ABA
  std::atomic<std::uint32_t> count;
};

// A multi-word update made crash-atomic: written, marked valid, applied, cleared. The next
// owner of the lock re-applies a valid journal left by an owner that died.
struct journal {
  std::atomic<std::uint32_t> valid;
  std::uint64_t position;
  std::uint64_t seq;
};

struct header {
  std::uint32_t magic;
  std::uint32_t version;
  std::uint64_t maxsize;

  alignas(64) pthread_mutex_t put_lock;  // producers
  journal put_journal;
  std::atomic<std::uint32_t> block_count;  // blocks in the file; grown under put_lock

  alignas(64) pthread_mutex_t get_lock;  // consumers
  journal get_journal;

  alignas(64) std::atomic<std::uint64_t> tail;  // end of the published messages
  std::atomic<std::uint64_t> put_seq;           // messages published

  alignas(64) std::atomic<std::uint64_t> head;  // start of the first message not taken
  std::atomic<std::uint64_t> get_seq;           // messages taken

  alignas(64) wakeup not_empty;
  alignas(64) wakeup not_full;

  // Passed blocks: `free` ones keep their memory, for reuse without page faults; `released`
  // ones gave it back (their index is reused, their memory allocated again).
  alignas(64) block_stack free;
  block_stack released;

  alignas(64) std::atomic<std::uint64_t> done;  // task_done() calls
  wakeup all_done;

  alignas(64) std::atomic<std::uint64_t> owner_deaths;
};
static_assert(sizeof(header) <= header_bytes);

}  // namespace

// The channel's memory, as the Store of channel_stream.hpp.
struct channel::state {
  static constexpr std::size_t block_bytes = 64 * 1024;

  std::unique_ptr<shared_memory> mem;
  header* h;

  std::byte* block(std::uint32_t i) {
    const std::size_t offset = header_bytes + std::size_t{i} * block_bytes;
    mem->ensure_mapped(offset + block_bytes);
    return mem->base() + offset;
  }
  block_header& meta(std::uint32_t i) { return *reinterpret_cast<block_header*>(block(i)); }
  std::size_t data_offset(std::uint32_t i) const { return header_bytes + std::size_t{i} * block_bytes + 4096; }
  std::uint32_t block_count() const noexcept { return h->block_count.load(std::memory_order_acquire); }

  std::uint32_t pop(block_stack& stack) {
    std::uint64_t top = stack.top.load(std::memory_order_acquire);
    for (;;) {
      const auto index = static_cast<std::uint32_t>(top);
      if (index == no_block) return no_block;
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

  // put_lock held.
  std::uint32_t allocate_block() {
    std::uint32_t index = pop(h->free);
    if (index == no_block) {
      index = pop(h->released);
      if (index != no_block) mem->reallocate(data_offset(index), block_bytes - 4096);
    }
    if (index == no_block) {
      index = h->block_count.load(std::memory_order_relaxed);
      if (index == no_block) throw error("mproc queue is out of blocks");
      mem->grow(header_bytes + (std::size_t{index} + 1) * block_bytes);
      h->block_count.store(index + 1, std::memory_order_release);
    }
    meta(index).next.store(no_block, std::memory_order_relaxed);
    return index;
  }

  // get_lock held. Free blocks keep their memory up to the number in use (at least
  // keep_free_blocks), so that a stream with N blocks in flight reuses its blocks without
  // fallocate or page faults; the surplus gives its memory back. A drained queue thus keeps
  // at most half its peak, then keep_free_blocks once its next burst is smaller. (Releasing
  // into the same LIFO list handed the cold block out next: every reuse faulted its pages
  // in again, and 1 MiB messages ran at 0.4 GB/s instead of 20.)
  void free_block(std::uint32_t index) {
    const std::uint32_t free_now = h->free.count.load(std::memory_order_relaxed);
    const std::uint32_t unused = free_now + h->released.count.load(std::memory_order_relaxed);
    const std::uint32_t blocks = h->block_count.load(std::memory_order_relaxed);
    const std::uint32_t in_use = blocks - std::min(unused, blocks);
    if (free_now >= std::max(keep_free_blocks, in_use)) {
      mem->release(data_offset(index), block_bytes - 4096);
      push(h->released, index);
    } else {
      push(h->free, index);
    }
  }

  bool empty() const noexcept {
    return h->head.load(std::memory_order_acquire) == h->tail.load(std::memory_order_acquire);
  }
  std::size_t size() const noexcept {
    const std::uint64_t taken = h->get_seq.load(std::memory_order_acquire);
    const std::uint64_t put = h->put_seq.load(std::memory_order_acquire);
    return put > taken ? static_cast<std::size_t>(put - taken) : 0;
  }

  void recover_put() noexcept {
    if (h->put_journal.valid.load(std::memory_order_acquire) != 0) {
      h->tail.store(h->put_journal.position, std::memory_order_release);
      h->put_seq.store(h->put_journal.seq, std::memory_order_release);
      h->put_journal.valid.store(0, std::memory_order_release);
    }
    // A producer that died mid-write never published: its bytes beyond `tail` are
    // overwritten by the next put, and blocks it linked there are reused.
    h->owner_deaths.fetch_add(1, std::memory_order_relaxed);
  }
  void recover_get() noexcept {
    if (h->get_journal.valid.load(std::memory_order_acquire) != 0) {
      h->head.store(h->get_journal.position, std::memory_order_release);
      h->get_seq.store(h->get_journal.seq, std::memory_order_release);
      h->get_journal.valid.store(0, std::memory_order_release);
    }
    // A consumer that died mid-read never committed: the message is still at `head`.
    h->owner_deaths.fetch_add(1, std::memory_order_relaxed);
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
};

channel::channel(std::size_t maxsize) : state_(std::make_unique<state>()) {
  state_->mem = shared_memory::create("mproc-queue", header_bytes + state::block_bytes,
                                      shared_memory::queue_reservation);
  header* h = new (state_->mem->base()) header{};
  h->magic = channel_magic;
  h->version = layout_version;
  h->maxsize = maxsize;
  robust_mutex_init(h->put_lock);
  robust_mutex_init(h->get_lock);
  const position start{0, block_data_begin};
  h->tail.store(pack(start));
  h->head.store(pack(start));
  h->block_count.store(1);
  h->free.top.store(no_block);
  h->released.top.store(no_block);
  state_->h = h;
  state_->meta(0).next.store(no_block);
}

channel::channel(const fd_token& token) : state_(std::make_unique<state>()) {
  state_->mem = shared_memory::adopt(unique_fd(claim_fd_token(token)), shared_memory::queue_reservation);
  state_->h = reinterpret_cast<header*>(state_->mem->base());
  if (state_->h->magic != channel_magic || state_->h->version != layout_version) {
    throw error("the handle received does not name an mproc queue of this version");
  }
}

channel::~channel() = default;

std::size_t channel::size() const noexcept { return state_->size(); }
std::size_t channel::maxsize() const noexcept { return static_cast<std::size_t>(state_->h->maxsize); }
std::uint64_t channel::owner_deaths() const noexcept { return state_->h->owner_deaths.load(); }
std::uint64_t channel::taken() const noexcept { return state_->h->get_seq.load(std::memory_order_acquire); }
fd_token channel::token() const { return make_fd_token(state_->mem->fd()); }
void channel::forget_descriptor() noexcept { state_->mem->forget_descriptor(); }

void channel::hold_consumers(void (*action)(void* context), void* context) {
  state& s = *state_;
  robust_mutex_lock(s.h->get_lock, nullptr, [&] { s.recover_get(); });
  robust_unlock_guard unlock(s.h->get_lock);
  action(context);
}

std::size_t channel::put(std::span<const std::byte> data, std::span<const std::size_t> ends,
                         const deadline_t* deadline) {
  state& s = *state_;
  header& h = *s.h;
  const std::size_t n = ends.size();
  const std::size_t maxsize = static_cast<std::size_t>(h.maxsize);
  std::size_t done = 0;
  std::size_t begin = 0;
  while (done < n) {
    if (maxsize != 0 && !wait_for_condition(h.not_full, [&] { return s.size() < maxsize; }, deadline)) break;
    if (!robust_mutex_lock(h.put_lock, deadline, [&] { s.recover_put(); })) break;
    std::size_t k;
    {
      robust_unlock_guard unlock(h.put_lock);
      const std::uint64_t seq = h.put_seq.load(std::memory_order_relaxed);
      k = n - done;
      if (maxsize != 0) {
        const std::size_t held = s.size();  // reads the consumers' cache line: only when bounded
        k = std::min(k, held < maxsize ? maxsize - held : 0);
      }
      if (k == 0) continue;  // another producer filled it first
      stream_writer w(s, unpack(h.tail.load(std::memory_order_relaxed)));
      for (std::size_t i = done; i < done + k; ++i) {
        w.write_record(data.subspan(begin, ends[i] - begin));
        begin = ends[i];
      }
      state::commit(h.put_journal, h.tail, h.put_seq, w.pos, seq + k);
    }
    done += k;
    h.not_empty.announce(k == 1 ? 1 : INT_MAX);
  }
  return done;
}

std::size_t channel::get(message_sink sink, void* context, std::size_t max_messages, const deadline_t* deadline,
                         unreadable_sink on_unreadable) {
  state& s = *state_;
  header& h = *s.h;
  thread_local std::vector<std::byte> gathered;  // only for a message that spans blocks; reused
  for (;;) {
    if (!wait_for_condition(h.not_empty, [&] { return !s.empty(); }, deadline)) return 0;
    if (!robust_mutex_lock(h.get_lock, deadline, [&] { s.recover_get(); })) return 0;
    std::exception_ptr failure;
    std::size_t taken = 0;
    {
      robust_unlock_guard unlock(h.get_lock);
      const position start = unpack(h.head.load(std::memory_order_relaxed));
      const position end = unpack(h.tail.load(std::memory_order_acquire));
      position stop = start;
      try {
        stream_reader r(s, start, end);
        while (taken < max_messages && !r.at_end()) {
          const std::uint64_t length = r.next_length();
          std::span<const std::byte> message;
          try {
            message = r.payload(length, gathered);
          } catch (const std::bad_alloc&) {
            if (taken != 0 || on_unreadable == nullptr) throw;  // left queued
            std::byte prefix[unreadable_prefix_bytes];
            const std::size_t k = std::min<std::size_t>(length, sizeof prefix);
            r.read(prefix, k);
            r.skip_payload(length - k);
            ++taken;
            try {
              on_unreadable(context, {prefix, k}, static_cast<std::size_t>(length));
            } catch (...) {
              failure = std::current_exception();
            }
            break;
          }
          ++taken;
          try {
            sink(context, message);
          } catch (...) {
            failure = std::current_exception();
            break;
          }
        }
        stop = r.pos;
      } catch (const error&) {
        // Corrupted memory: drop what is unread so the channel stays usable.
        state::commit(h.get_journal, h.head, h.get_seq, end, h.put_seq.load());
        throw;
      }
      if (taken == 0) continue;  // another consumer took it first
      state::commit(h.get_journal, h.head, h.get_seq, stop, h.get_seq.load(std::memory_order_relaxed) + taken);
      for (std::uint32_t b = start.block; b != stop.block;) {
        const std::uint32_t next = s.meta(b).next.load(std::memory_order_acquire);
        s.free_block(b);
        b = next;
      }
    }
    if (h.maxsize != 0) h.not_full.announce(taken == 1 ? 1 : INT_MAX);
    if (failure) std::rethrow_exception(failure);
    return taken;
  }
}

void channel::task_done() {
  header& h = *state_->h;
  std::uint64_t done = h.done.load(std::memory_order_acquire);
  do {
    if (done >= h.put_seq.load(std::memory_order_acquire)) {
      throw error("task_done() called more times than there were items put");
    }
  } while (!h.done.compare_exchange_weak(done, done + 1, std::memory_order_acq_rel));
  h.all_done.announce(INT_MAX);
}

bool channel::join(const deadline_t* deadline) {
  header& h = *state_->h;
  return wait_for_condition(
      h.all_done, [&] { return h.done.load(std::memory_order_acquire) >= h.put_seq.load(std::memory_order_acquire); },
      deadline);
}

}  // namespace mproc::detail
