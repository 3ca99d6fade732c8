// A mutex for the threads of one process that costs the thread that made it nothing while
// that thread is its only user.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>

#include "os/asymmetric_fence.hpp"
#include "os/thread_identity.hpp"
#include "wait/futex.hpp"

namespace mproc::detail {

// The owner (the thread that constructed it) locks with a plain store and a load, and no
// atomic read-modify-write: on x86 such an instruction waits for every store before it to
// leave the store buffer, and a queue's producer has just stored to lines its consumer in
// another process is reading, so each of its puts waited for those lines to come back.
// The first other thread to lock revokes the bias, once and for good, with heavy_fence();
// from then on every thread, the owner too, takes the std::mutex. Where membarrier(2) is
// refused, the bias is never given.
class biased_mutex {
 public:
  biased_mutex() noexcept : owner_(heavy_fence_available() ? this_thread_id() : 0) {}
  biased_mutex(const biased_mutex&) = delete;
  biased_mutex& operator=(const biased_mutex&) = delete;

  void lock() {
    if (owner_ == this_thread_id()) {
      owner_inside_.store(true, std::memory_order_relaxed);
      light_fence();  // against revoke's heavy_fence: it sees us inside, or we see it revoked
      if (!revoked_.load(std::memory_order_relaxed)) return;
      owner_inside_.store(false, std::memory_order_release);
    }
    mutex_.lock();
    if (!revoked_.load(std::memory_order_relaxed)) revoke();
  }

  void unlock() {
    // Only the owner writes owner_inside_, so only it may find it set.
    if (owner_ == this_thread_id() && owner_inside_.load(std::memory_order_relaxed)) {
      owner_inside_.store(false, std::memory_order_release);
      return;
    }
    mutex_.unlock();
  }

  bool biased() const noexcept { return owner_ != 0 && !revoked_.load(std::memory_order_relaxed); }

 private:
  // Under mutex_, by the first thread other than the owner: waits for the owner to leave
  // if it is inside; after the fence, the owner's next lock sees revoked_.
  void revoke() noexcept {
    revoked_.store(true, std::memory_order_relaxed);
    if (owner_ == 0) return;
    heavy_fence();
    while (owner_inside_.load(std::memory_order_acquire)) yield_cpu();
  }

  const std::uint64_t owner_;  // this_thread_id() of the owner; 0: never biased
  std::atomic<bool> owner_inside_{false};
  std::atomic<bool> revoked_{false};
  std::mutex mutex_;
};

}  // namespace mproc::detail
