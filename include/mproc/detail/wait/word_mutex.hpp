// A mutex of one 32-bit word, for state a process keeps per task: std::mutex takes 40
// bytes, and a burst of a million tasks made a million of them, nearly always unused.
#pragma once

#include <atomic>
#include <cstdint>

#include "mproc/detail/wait/futex_word.hpp"

namespace mproc::detail {

// The word is 0 when free, 1 when held, 2 when held and a thread may sleep on it (the
// third mutex of Drepper's "Futexes Are Tricky"): unlocking makes the wake syscall only
// then. Not robust and not for sharing between processes; BasicLockable.
class word_mutex {
 public:
  void lock() noexcept {
    std::uint32_t seen = 0;
    if (word_.compare_exchange_strong(seen, 1, std::memory_order_acquire, std::memory_order_relaxed)) return;
    if (seen != 2) seen = word_.exchange(2, std::memory_order_acquire);
    while (seen != 0) {
      futex_wait(word_, 2, deadline::never());
      seen = word_.exchange(2, std::memory_order_acquire);
    }
  }
  void unlock() noexcept {
    if (word_.exchange(0, std::memory_order_release) == 2) futex_wake(word_, 1);
  }

 private:
  std::atomic<std::uint32_t> word_{0};
};

}  // namespace mproc::detail
