#include "wait/incarnation_lock.hpp"

#include <algorithm>

namespace mproc::detail {

// False if the holder runs, or another waiter took the lock over first.
bool incarnation_lock::take_from_dead_holder(std::uint64_t me) noexcept {
  std::uint64_t dead = holder.load(std::memory_order_acquire);
  if (dead == 0 || dead == me || process_incarnation_alive(dead)) return false;
  return holder.compare_exchange_strong(dead, me, std::memory_order_acquire, std::memory_order_relaxed);
}

lock_result incarnation_lock::lock(deadline until) noexcept {
  const std::uint64_t me = this_process_incarnation();
  for (;;) {
    const deadline slice = std::min(until, deadline::in(dead_holder_check));
    if (wait_for_condition(
            released, [&] { return try_lock() == lock_result::locked; }, slice)) {
      return lock_result::locked;
    }
    if (take_from_dead_holder(me)) return lock_result::recovered;
    if (until.passed()) return lock_result::timed_out;
  }
}

}  // namespace mproc::detail
