// The threads waiting on a condition or a barrier, in shared memory.
//
// One slot per waiting thread, each with its own futex word, so that a waker chooses
// exactly whom it wakes (the n that have waited longest, not whoever happens to run
// first), and each with a robust mutex that its waiter holds while it waits, so that a
// waker can tell a dead waiter from a live one without asking the kernel about pids
// (which are reused): a trylock on a live waiter's mutex says EBUSY, on a dead one's
// EOWNERDEAD. A dead waiter is skipped and its slot reclaimed.
//
// Every call but sleep() is made under the owner's lock (the condition's lock, the
// barrier's mutex). Each change to the list is a single store, made in an order that
// leaves the list usable if the caller dies between any two of them; so the owner's lock
// needs no repair of the list when it finds its holder dead.
//
// Layout: the wait_list_header inside the owner's state, the slots from `slots_offset` to
// the end of the memfd, which grows (doubling) when every slot is taken.
#pragma once

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include "sync/sync_memory.hpp"
#include "wait/futex.hpp"

namespace mproc::detail {

enum slot_state : std::uint32_t {
  slot_free = 0,
  slot_waiting = 1,
  slot_woken = 2,   // notified (condition) or released (barrier)
  slot_broken = 3,  // barrier broken, aborted or reset while waiting
};

struct wait_list_header {
  std::uint64_t next_ticket;                // arrival order of waiters
  std::uint32_t capacity;                   // slots the memfd holds
  std::uint32_t used;                       // slots ever initialised: [0, used)
  std::atomic<std::uint64_t> dead_waiters;  // found dead by wake() or enter()
};

class wait_list {
 public:
  static constexpr std::size_t slot_bytes = 128;  // two cache lines: one would not hold a slot
  static constexpr std::uint32_t max_slots = 1u << 16;

  // `header` lives in the owner's state. init() sets it up for a memfd of `file_bytes`.
  wait_list(sync_memory& memory, wait_list_header& header, std::size_t slots_offset) noexcept
      : memory_(&memory), header_(&header), slots_offset_(slots_offset) {}
  static void init(wait_list_header& header, std::size_t slots_offset, std::size_t file_bytes) noexcept;

  // Owner's lock held: claims a slot for the calling thread, which must later leave() it.
  // Throws mproc::error past max_slots waiters, std::system_error if memory runs out; both
  // begin with `who`, the public call that waits ("mproc::condition::wait").
  std::uint32_t enter(const char* who);

  // Owner's lock NOT held: waits until the slot is no longer slot_waiting, or `until`
  // passes; returns the slot's state then (slot_waiting: timed out). When `period` is
  // non-zero, calls `check()` that often while waiting (the barrier's test for a dead
  // holder of its mutex, which nobody else would notice while every waiter sleeps).
  template <class Check>
  std::uint32_t sleep(std::uint32_t index, deadline until, std::chrono::milliseconds period, Check check);

  // Owner's lock held: frees the slot; returns its last state.
  std::uint32_t leave(std::uint32_t index);

  // Owner's lock held: sets up to `n` waiting slots, longest-waiting first, to `how` and
  // wakes their threads; returns how many. With `skip_dead`, waiters found dead are not
  // counted (their slots are freed); without, every waiting slot counts (a barrier
  // releases the dead and the living alike: they all arrived).
  unsigned wake(unsigned n, slot_state how, bool skip_dead);

  std::uint64_t dead_waiters() const noexcept { return header_->dead_waiters.load(std::memory_order_relaxed); }

  struct slot;

 private:
  slot& at(std::uint32_t index);
  // A trylock of a slot's mutex by a waker: true when a live thread holds it. Otherwise
  // the slot is freed: its waiter died (counted in dead_waiters), or it was stale.
  bool waiter_alive(slot& s) noexcept;

  sync_memory* memory_;
  wait_list_header* header_;
  std::size_t slots_offset_;
};

struct wait_list::slot {
  pthread_mutex_t alive;             // held by the waiting thread while the slot is taken
  std::atomic<std::uint32_t> state;  // slot_state
  std::uint32_t reserved;
  std::uint64_t ticket;  // arrival order
  wakeup wake;           // futex word and sleepers of this slot's waiter
};
static_assert(sizeof(wait_list::slot) <= wait_list::slot_bytes);

template <class Check>
std::uint32_t wait_list::sleep(std::uint32_t index, deadline until, std::chrono::milliseconds period, Check check) {
  slot& s = at(index);
  const auto woken = [&s] { return s.state.load(std::memory_order_acquire) != slot_waiting; };
  for (;;) {
    deadline wait_until = until;
    if (period.count() > 0) wait_until = std::min(until, deadline(deadline::clock::now() + period));
    if (wait_for_condition(s.wake, woken, wait_until)) return s.state.load(std::memory_order_acquire);
    if (wait_until == until) return s.state.load(std::memory_order_acquire);  // the caller's deadline
    check();
  }
}

}  // namespace mproc::detail
