// The channel's shared memory layout: the header, its lanes, the free-block stacks and
// the consumers' journals, with the constants that size them. Changing any of it, or how
// mproc::queue encodes its messages (queue.hpp), changes layout_version.
#pragma once

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>

#include "ipc/channel_stream.hpp"
#include "wait/futex.hpp"
#include "wait/incarnation_lock.hpp"

namespace mproc::detail {
namespace channel_layout {

using namespace channel_stream;

// Layout of the memfd: a header (the lanes' table among it), then blocks of
// state::block_bytes, which hold each lane's messages as a stream of records (see
// channel_stream.hpp): a message may span any number of blocks, so any size works; blocks
// that consumers have passed go to a free list that every lane's producer reuses.
constexpr std::uint32_t channel_magic = 0x6d70'7163;  // "mpqc"
constexpr std::uint32_t layout_version = 12;
constexpr std::size_t header_bytes = 16384;
// Free blocks beyond this many, and beyond the blocks in use, give their memory back (a
// queue that once held a 100 MiB message does not keep 100 MiB), unless memory given back
// was wanted again within the last released_reuse_span: see state::free_block.
constexpr std::uint32_t keep_free_blocks = 64;
constexpr std::chrono::nanoseconds released_reuse_span{1'000'000'000};

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
// How many cpu_relax() a producer spinning on a full queue makes between two reads of its
// consumers' counts (see put_messages): 0.6 µs on the development VM (a pause took 38 ns).
constexpr int full_queue_poll_pauses = 16;
// A put wakes a sleeping consumer at most this often (see announce_put).
constexpr std::chrono::nanoseconds put_wake_interval{20'000};

// A message id: its lane in the top bits, its sequence number in the lane below.
constexpr unsigned lane_shift = 56;
constexpr std::uint64_t seq_mask = (std::uint64_t{1} << lane_shift) - 1;
constexpr std::uint32_t all_lanes = UINT32_MAX;

// A message's ticket orders it among the puts of every lane: consumers take the lowest
// first, so that a put made after another returned, in any thread of any process, is taken
// after it (the producers' pattern "join the producers, then put a stop message for each
// consumer"). A put takes one above every lane's last (channel::state::next_ticket), and
// its record keeps the low tag_bits (channel_stream.hpp), compared by their difference: two
// messages in a queue at once are far fewer than 2^39 puts apart, unless one is held back
// that long by a consumer stopped in its sink, and only order, never a message, is at
// stake then.
constexpr std::uint64_t no_ticket = UINT64_MAX;  // no message, after every ticket
constexpr bool ticket_before(std::uint64_t a, std::uint64_t b) noexcept {
  if (b == no_ticket) return a != no_ticket;
  if (a == no_ticket) return false;
  return ((a - b) & tag_mask) >= (std::uint64_t{1} << (tag_bits - 1));
}

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
  std::atomic<std::uint64_t> last_ticket;        // the ticket of the lane's last message put

  // The consumers' line: written under `reader`.
  alignas(64) std::atomic<std::uint64_t> head;  // start of the first message not taken
  std::atomic<std::uint64_t> get_seq;           // messages taken
  journal get_journal;

  alignas(64) incarnation_lock reader;
};

struct header {
  std::uint32_t magic;
  std::uint32_t version;
  std::uint64_t maxsize;

  // Lane claims, growth of the file, and the shared lane's writes.
  alignas(64) pthread_mutex_t put_lock;
  std::atomic<std::uint32_t> block_count;  // blocks in the file; grown under put_lock
  std::atomic<std::uint32_t> lanes_used;   // lanes [0, lanes_used) may hold messages

  alignas(64) wakeup not_empty;
  std::atomic<std::int64_t> not_empty_woken_ns;  // when a put last woke a consumer (CLOCK_MONOTONIC)
  alignas(64) wakeup not_full;

  // Passed blocks: `free` ones keep their memory, for reuse without page faults; `released`
  // ones gave it back (their index is reused, their memory allocated again).
  alignas(64) block_stack free;
  block_stack released;
  // When a producer last took a released block (CLOCK_MONOTONIC): memory given back that
  // was soon wanted again (state::free_block). Written under put_lock, read without it.
  std::atomic<std::int64_t> released_block_reused_ns;

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
inline thread_local handing current_handing;

}  // namespace channel_layout

}  // namespace mproc::detail
