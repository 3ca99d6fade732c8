// Memory for a pool's per-task states (async_state), kept for reuse instead of given back.
//
// A burst of N apply_async calls makes N states of ~250 bytes. From malloc, the first
// burst faults each new page in (~12 µs a fault on the VMs mproc is measured on: ~0.75 µs
// of a task's ~2 µs at 1M tasks), and freed states sit at the top of the heap, which glibc
// gives back to the kernel (trimming), so every later burst faulted them in again: the
// rate fell as bursts grew (1.5M tasks/s at 10k, 0.3-0.45M at 1M). The arena carves
// states out of slabs that grow with it, up to 2 MiB ones in transparent huge pages (a
// fault per 2 MiB), and keeps freed ones on free lists by size: a pool's memory for states
// stays at its peak number of tasks in flight, and is given back when the pool and its
// last result are gone: the pool holds its arena as an `owner`, and gives it up when it
// ends; the arena then lives on until its last block comes back. (Each state's allocator
// held a shared_ptr to the arena before: its copies and their destruction were six locked
// read-modify-writes per task, a tenth of the parent's time in a burst.)
//
// An arena belongs to the process that made it: in a forked child its lock may have been
// held by a thread that does not exist there, so the child allocates with operator new and
// frees no block of the arena's sizes, its own or the parent's copies: a forked copy of a
// pool is inert, and what its results hold is left to the child's exit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace mproc::detail {

class biased_mutex;  // src/wait/biased_mutex.hpp

// A number that changes in the child of every fork(2).
std::uint32_t fork_generation_now() noexcept;

class state_arena {
 public:
  // Gives the arena up (abandon) in place of deleting it.
  struct abandoner {
    void operator()(state_arena* arena) const noexcept { arena->abandon(); }
  };
  using owner = std::unique_ptr<state_arena, abandoner>;
  static owner make_owned() { return owner(new state_arena); }

  state_arena();
  state_arena(const state_arena&) = delete;
  state_arena& operator=(const state_arena&) = delete;
  ~state_arena();

  void* allocate(std::size_t bytes);
  // Deletes an abandoned arena when `p` was its last block out.
  void deallocate(void* p, std::size_t bytes) noexcept;
  // For an arena from make_owned: deleted now if no block is out, else by the deallocate
  // of its last one. In a forked child, nothing: a forked copy is left to the child's exit.
  void abandon() noexcept;

  // Blocks bigger than this come from operator new and go back to operator delete.
  static constexpr std::size_t largest_block = 1024;

 private:
  struct block {
    block* next;
  };
  struct slab {
    std::byte* base;
    std::size_t bytes;
  };
  static constexpr std::size_t granule = 64;
  static constexpr std::size_t classes = largest_block / granule;
  bool mine() const noexcept { return fork_generation_now() == generation_; }
  void* carve(std::size_t bytes);  // under mutex_

  const std::uint32_t generation_ = fork_generation_now();
  // Biased to the thread that made the arena, which allocates a state for each task it
  // submits and, in most programs, frees it: a lock and an unlock that were two atomic
  // read-modify-writes each (allocate, deallocate) are then plain stores.
  std::unique_ptr<biased_mutex> mutex_;
  block* free_[classes] = {};
  std::vector<slab> slabs_;
  std::size_t out_ = 0;        // blocks allocated and not given back (this process's own)
  bool abandoned_ = false;     // the owner gave the arena up
  std::byte* next_ = nullptr;  // the unused rest of the newest slab
  std::byte* end_ = nullptr;
  std::size_t slab_total_ = 0;  // bytes in all slabs
};

// An allocator for std::allocate_shared that draws from a state_arena: the arena lives as
// long as a block it gave is out (state_arena::abandon).
template <class T>
class arena_allocator {
 public:
  using value_type = T;
  explicit arena_allocator(state_arena* arena) noexcept : arena_(arena) {}
  template <class U>
  // Implicit, as the Allocator requirements ask of the rebinding conversion.
  arena_allocator(const arena_allocator<U>& other) noexcept  // NOLINT(google-explicit-constructor)
      : arena_(other.arena_) {}

  T* allocate(std::size_t n) {
    static_assert(alignof(T) <= 64, "state_arena blocks are aligned to 64 bytes");
    return static_cast<T*>(arena_->allocate(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t n) noexcept { arena_->deallocate(p, n * sizeof(T)); }

  template <class U>
  bool operator==(const arena_allocator<U>& other) const noexcept {
    return arena_ == other.arena_;
  }

 private:
  template <class U>
  friend class arena_allocator;
  state_arena* arena_;
};

}  // namespace mproc::detail
