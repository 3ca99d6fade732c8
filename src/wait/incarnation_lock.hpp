// A lock between processes that names its holder's process incarnation and is released by
// a plain store.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "mproc/detail/wait/deadline.hpp"
#include "os/process_incarnation.hpp"
#include "wait/futex.hpp"

namespace mproc::detail {

enum class lock_result { locked, recovered, busy, timed_out };

inline constexpr std::chrono::milliseconds dead_holder_check{10};

// Lives in shared memory; all zero is free. Beside a robust pthread mutex it costs a taker
// one compare-exchange and a giver one store: a queue's consumer takes and gives its lane's
// lock on every get, and the pthread mutex's robust-list bookkeeping and locked exchange
// were a quarter of a small get. The price: the kernel does not tell waiters that a holder
// died. A waiter finds out itself, checking the holder's incarnation every
// dead_holder_check of waiting (and once when its deadline passes), and takes the lock
// over; lock() then says `recovered`, and the new holder repairs what the dead one left
// half done, as after EOWNERDEAD.
//
// The holder is a process, not a thread: the threads of one process exclude each other all
// the same, and a thread never unlocks what another holds.
struct incarnation_lock {
  std::atomic<std::uint64_t> holder;  // this_process_incarnation() of the holder; 0: free
  wakeup released;                    // announced on unlock when someone sleeps

  // locked or busy; never waits, never looks whether the holder lives.
  lock_result try_lock() noexcept {
    std::uint64_t expected = 0;
    if (holder.load(std::memory_order_relaxed) == 0 &&
        holder.compare_exchange_strong(expected, this_process_incarnation(), std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
      return lock_result::locked;
    }
    return lock_result::busy;
  }

  // locked, recovered (from a dead holder: repair first) or timed_out.
  lock_result lock(deadline until) noexcept;

  void unlock() noexcept {
    holder.store(0, std::memory_order_release);
    released.announce(1);
  }

 private:
  bool take_from_dead_holder(std::uint64_t me) noexcept;
};

}  // namespace mproc::detail
