// Process-shared futex waits and wakes, and the spin-then-sleep wait built on them.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace mproc::detail {

using deadline_t = std::chrono::steady_clock::time_point;

// Sleeps while *word == expected, until woken or the absolute CLOCK_MONOTONIC `deadline`
// (null: none). Returns false only when the deadline passed; spurious returns are allowed.
bool futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, const deadline_t* deadline) noexcept;
void futex_wake(std::atomic<std::uint32_t>& word, int count) noexcept;
void yield_cpu() noexcept;

// A condition one side waits for and the other announces. `sleepers` counts the waiters
// about to sleep or asleep on `event`; an announcer touches `event` and makes the wake
// syscall only when there is one, so a hand-off between two running processes writes no
// shared line but the data's own. (The fence pairs with the waiter's seq_cst increment of
// `sleepers`: either the announcer sees the sleeper, or the sleeper sees the condition.)
struct wakeup {
  std::atomic<std::uint32_t> event{0};
  std::atomic<std::uint32_t> sleepers{0};

  void announce(int count = 1) noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (sleepers.load(std::memory_order_relaxed) != 0) {
      event.fetch_add(1, std::memory_order_seq_cst);
      futex_wake(event, count);
    }
  }
};

// Waits until `ready()` holds: spins briefly (a hand-off between two running processes
// takes well under a microsecond, a futex sleep and wake ~10 µs), then sleeps on `w`.
// Returns false if the deadline passed first (after a last check of ready()).
template <class Ready>
bool wait_for_condition(wakeup& w, Ready ready, const deadline_t* deadline) {
  if (ready()) return true;
  if (deadline != nullptr && *deadline <= std::chrono::steady_clock::now()) return false;
  // Busy-wait a little, then yield while waiting: when the peer shares our CPU, yielding
  // lets it run instead of burning the spin budget against it.
  constexpr auto spin_for = std::chrono::microseconds(20);
  const auto spin_until = std::chrono::steady_clock::now() + spin_for;
  for (unsigned i = 1;; ++i) {
    if (i < 256) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    } else {
      yield_cpu();
    }
    if (ready()) return true;
    if (i % 32 == 0 && std::chrono::steady_clock::now() >= spin_until) break;
  }
  for (;;) {
    const std::uint32_t seen = w.event.load(std::memory_order_seq_cst);
    if (ready()) return true;
    w.sleepers.fetch_add(1, std::memory_order_seq_cst);
    bool in_time = true;
    if (!ready()) in_time = futex_wait(w.event, seen, deadline);
    w.sleepers.fetch_sub(1, std::memory_order_seq_cst);
    if (ready()) return true;
    if (!in_time) return false;
  }
}

}  // namespace mproc::detail
