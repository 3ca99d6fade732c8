#include "os/asymmetric_fence.hpp"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>

#include "os/thread_identity.hpp"

namespace mproc::detail {

namespace {

long membarrier(int command) noexcept { return ::syscall(SYS_membarrier, command, 0, 0); }

// The fork_generation in which this process registered, or failed to (negative).
std::atomic<std::int64_t> registered_in{0};

}  // namespace

bool heavy_fence_available() noexcept {
  (void)this_thread_id();  // registers the fork handler that bumps fork_generation
  const auto generation = static_cast<std::int64_t>(fork_generation.load(std::memory_order_relaxed));
  const std::int64_t seen = registered_in.load(std::memory_order_acquire);
  if (seen == generation) return true;
  if (seen == -generation) return false;
  // Registering twice is harmless, so two threads may race here.
  const bool ok = membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
  registered_in.store(ok ? generation : -generation, std::memory_order_release);
  return ok;
}

void heavy_fence() noexcept {
  // Registered (heavy_fence_available), this cannot fail; if it ever did, going on would
  // break the callers' exclusion silently.
  if (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0) std::abort();
}

}  // namespace mproc::detail
