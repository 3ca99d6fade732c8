// A store-load fence split in two: a free half for a fast path that runs often, and a
// costly half, membarrier(2), for the rare thread that must see the fast path's stores
// (and be seen by its loads). As folly's asymmetricLightBarrier / asymmetricHeavyBarrier.
#pragma once

#include <atomic>

namespace mproc::detail {

// Whether heavy_fence() works in this process: registers it with the kernel on the first
// call in each process (a forked child must register again). False when the kernel or a
// seccomp filter refuses membarrier: a fast path must then not rely on light_fence().
bool heavy_fence_available() noexcept;

// The fast path's half: orders nothing at run time, only the compiler's view. Between a
// store and a load it acts as a full fence against any thread that calls heavy_fence().
inline void light_fence() noexcept { std::atomic_signal_fence(std::memory_order_seq_cst); }

// A full fence on every running thread of this process (an IPI to each CPU that runs one,
// about a microsecond): whatever those threads stored before it is visible after it, and
// whatever they load after it sees what this thread stored before. Only after
// heavy_fence_available() returned true.
void heavy_fence() noexcept;

}  // namespace mproc::detail
