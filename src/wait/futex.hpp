// Process-shared futex waits and wakes, and the spin-then-sleep wait built on them.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>

#include "mproc/detail/wait/deadline.hpp"
#include "mproc/detail/wait/futex_word.hpp"
#include "wait/cpu_relax.hpp"

namespace mproc::detail {

void yield_cpu() noexcept;

// How long a sleeper trusts that a wakeup will come. A wakeup can be lost to a death: the
// waker killed after making the condition true but before announcing it, or the one
// sleeper that announce(1) woke killed before it could act (say, a consumer SIGKILLed
// between its wakeup and its take: the message stays, and the other consumers would sleep
// on beside it until the next put). So a sleeper re-checks its condition at least this
// often: a lost wakeup costs a delay of at most this long, never a hang, for the price of
// a few idle wakeups a second per sleeping thread.
inline constexpr std::chrono::milliseconds recheck_period{100};
// A waiter's first sleep after it counts itself among the sleepers (see wakeup).
inline constexpr std::chrono::microseconds first_slice{100};

inline std::int64_t monotonic_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A condition one side waits for and the other announces. `sleepers` counts the waiters
// about to sleep or asleep on `event`; an announcer touches `event` and makes the wake
// syscall only when there is one, so a hand-off between two running processes writes no
// shared line but the data's own.
//
// The announcer has no store-load fence between making the condition true and reading
// `sleepers`: on every put, such a fence stalled the producer until the consumer gave
// back the line just published to (93% of a put's time). Without it, an announcer may
// read `sleepers` before its own write is visible, and miss a waiter that counted itself
// in that instant, which then sees the condition still false. The window is the time a
// store takes to leave the store buffer (well under a microsecond, and a context switch
// drains it), so a waiter's first sleep after it counts itself is short (first_slice):
// by its end, any write the announcer made before reading `sleepers` is visible, and the
// waiter sees it. Later sleeps keep the count, so no announcer can miss them.
//
// A sleeper SIGKILLed in its sleep stays counted for good. `awake_by_ns` bounds what that
// costs: each sleeper, before each sleep of at most recheck_period, raises it to the end
// of that sleep, so once it has passed, every sleeper still counted is dead or awake (and
// about to re-check the condition by itself). Announcers then skip the syscall: without
// this, one consumer killed while it waited made every later put on its queue pay a wake
// syscall (and a write to `event`), for the life of the queue.
//
// announce_one hands a condition on to one sleeper, and skips the wake while the sleeper
// it woke last has not run since (`woken_ns`, cleared by every sleeper that returns from
// its sleep). Without it, a consumer that took a message and saw more made a wake syscall
// on every take while the sleeper it had woken waited for a CPU: on a 2-core machine with
// a pool's two workers, its parent and its result thread, a quarter of a worker's time.
struct wakeup {
  std::atomic<std::uint32_t> event{0};
  std::atomic<std::uint32_t> sleepers{0};
  std::atomic<std::int64_t> awake_by_ns{0};  // CLOCK_MONOTONIC; 0: found passed
  std::atomic<std::int64_t> woken_ns{0};     // when announce_one last woke a sleeper; 0: it ran since

  // Wakes up to `count` sleepers if one may be asleep; returns whether it made the call.
  bool announce(int count = 1) noexcept {
    std::atomic_signal_fence(std::memory_order_seq_cst);  // the compiler's order only: see above
    // Acquire: a sleeper raises awake_by_ns before it counts itself, so an announcer that
    // sees it counted sees its awake_by_ns too.
    if (sleepers.load(std::memory_order_acquire) == 0) return false;
    std::int64_t awake_by = awake_by_ns.load(std::memory_order_relaxed);
    if (awake_by == 0) return false;  // found passed: no clock read for each put
    if (awake_by <= monotonic_ns()) {
      // Marked for the announcers that follow. A sleeper raising it meanwhile wins: the
      // exchange expects the value found passed.
      awake_by_ns.compare_exchange_strong(awake_by, 0, std::memory_order_relaxed);
      return false;
    }
    event.fetch_add(1, std::memory_order_seq_cst);
    futex_wake(event, count);
    return true;
  }

  // Wakes one sleeper, unless announce_one woke one less than first_slice ago that has not
  // returned from its sleep since: that one is about to run, and will find the condition
  // (and hand it on if there is more). The bound keeps a woken sleeper killed before it
  // ran from silencing the others for longer. Returns whether it made the call.
  bool announce_one() noexcept {
    if (sleepers.load(std::memory_order_acquire) == 0) return false;
    const std::int64_t now = monotonic_ns();
    const std::int64_t woken = woken_ns.load(std::memory_order_relaxed);
    if (woken != 0 && now - woken < std::chrono::nanoseconds(first_slice).count()) return false;
    woken_ns.store(now, std::memory_order_release);  // before the wake, which the sleeper sees first
    return announce(1);
  }
  // A sleeper back from its sleep, however it ended: announce_one may wake another.
  void sleeper_returned() noexcept {
    if (woken_ns.load(std::memory_order_relaxed) != 0) woken_ns.store(0, std::memory_order_relaxed);
  }

  // A sleeper, before it counts itself: it will be awake by `until_ns` whatever happens.
  void will_wake_by(std::int64_t until_ns) noexcept {
    std::int64_t seen = awake_by_ns.load(std::memory_order_relaxed);
    while (seen < until_ns && !awake_by_ns.compare_exchange_weak(seen, until_ns, std::memory_order_relaxed)) {
    }
  }
};

// How long a thread spins before it sleeps, adapted to what its recent waits took: doubled
// (up to max_spin) when a wait ended within the spin or soon after, halved (down to
// min_spin) when it had to sleep longer. Two running processes handing off keep spinning
// (0.2 µs round trips, where a futex sleep and wake costs ~10 µs each way); on an
// oversubscribed machine, where the peer is not running and spinning only delays it, the
// thread soon sleeps at once.
inline constexpr std::chrono::nanoseconds max_spin{20'000};
inline constexpr std::chrono::nanoseconds min_spin{1'000};
inline thread_local std::chrono::nanoseconds spin_budget = max_spin;

// Waits until `ready()` holds: spins for spin_budget, then sleeps on `w`, re-checking
// `ready()` every `longest_sleep` (at most recheck_period) even if nobody announces.
// Returns false if the deadline passed first (after a last check of ready()).
template <class Ready>
bool wait_for_condition(wakeup& w, Ready ready, deadline until,
                        std::chrono::nanoseconds longest_sleep = recheck_period) {
  if (ready()) return true;
  const auto start = std::chrono::steady_clock::now();
  if (until.passed(start)) return false;
  // Busy-wait a little, then yield while waiting: when the peer shares our CPU, yielding
  // lets it run instead of burning the spin budget against it.
  const auto spin_until = start + spin_budget;
  for (unsigned i = 1;; ++i) {
    if (i < 256) {
      cpu_relax();
    } else {
      yield_cpu();
    }
    if (ready()) {
      spin_budget = std::min(max_spin, spin_budget * 2);
      return true;
    }
    if (i % 32 == 0 && std::chrono::steady_clock::now() >= spin_until) break;
  }
  struct adapt_on_return {  // however the sleep below ends
    std::chrono::steady_clock::time_point start;
    ~adapt_on_return() {
      const auto waited = std::chrono::steady_clock::now() - start;
      spin_budget = waited <= max_spin ? std::min(max_spin, spin_budget * 2) : std::max(min_spin, spin_budget / 2);
    }
  } adapt{start};
  // Each pass counts this thread in once, then sleeps first_slice and, unless the
  // condition came, up to recheck_period more.
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    const deadline::clock::time_point pass_end =
        now + first_slice + std::min<std::chrono::nanoseconds>(longest_sleep, recheck_period);
    // The margin covers timer slack: the kernel may end the sleep a little after `pass_end`.
    w.will_wake_by(std::chrono::duration_cast<std::chrono::nanoseconds>(pass_end.time_since_epoch()).count() +
                   2'000'000);
    w.sleepers.fetch_add(1, std::memory_order_seq_cst);
    struct uncount {
      wakeup& w;
      ~uncount() { w.sleepers.fetch_sub(1, std::memory_order_seq_cst); }
    } counted{w};
    for (const deadline::clock::time_point slice_end : {now + first_slice, pass_end}) {
      const std::uint32_t seen = w.event.load(std::memory_order_seq_cst);
      if (ready()) return true;
      const bool final_slice = until <= deadline(slice_end);
      const bool in_time = futex_wait(w.event, seen, final_slice ? until : deadline(slice_end));
      w.sleeper_returned();
      if (ready()) return true;
      if (!in_time && final_slice) return false;
    }
  }
}

}  // namespace mproc::detail
