// Who "this process" is to an object shared between processes for longer than one call (a
// queue's producer lane): its process id and its start time, so that a pid the kernel
// reuses for a new process never passes for the dead owner's.
#pragma once

#include <atomic>
#include <cstdint>

#include "os/thread_identity.hpp"

namespace mproc::detail {

struct process_incarnation_cache {
  std::uint32_t generation = 0;
  std::uint64_t id = 0;
};
inline process_incarnation_cache this_process_incarnation_cache;

// Computes, caches and returns this process's incarnation (reads /proc/self/stat).
std::uint64_t refresh_process_incarnation() noexcept;

// (process id << 32) | low 32 bits of its start time in clock ticks; never 0. Cached and
// recomputed in a forked child (fork_generation), so the fast path is one load.
// Thread safety: any thread; two threads refreshing at once compute the same value.
inline std::uint64_t this_process_incarnation() noexcept {
  if (__atomic_load_n(&this_process_incarnation_cache.generation, __ATOMIC_ACQUIRE) ==
      fork_generation.load(std::memory_order_relaxed)) [[likely]]
    return __atomic_load_n(&this_process_incarnation_cache.id, __ATOMIC_RELAXED);
  return refresh_process_incarnation();
}

// Whether the process that `id` names still runs: false once it exited, even while it is
// a zombie, and when its pid now belongs to another process. A slow call (it reads /proc):
// for recovery paths only.
bool process_incarnation_alive(std::uint64_t id) noexcept;

}  // namespace mproc::detail
