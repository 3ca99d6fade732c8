#include "mproc/detail/state_arena.hpp"

#include "thread_identity.hpp"

namespace mproc::detail {

std::uint32_t fork_generation_now() noexcept {
  static const bool counting = (refresh_thread_identity(), true);  // registers the fork handler
  (void)counting;
  return fork_generation.load(std::memory_order_relaxed);
}

}  // namespace mproc::detail
