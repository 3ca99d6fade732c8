// Memory for a pool's per-task states (async_state), kept for reuse instead of given back.
//
// A burst of N apply_async calls makes N states of ~250 bytes. Freed into malloc, they sit
// at the top of the heap, which glibc then gives back to the kernel (trimming), so the
// next burst faults every page in again: on the VMs mproc is measured on (~12 µs a fault)
// that was ~0.7 µs of a 1M-task burst's ~2 µs per task, and the rate fell as bursts grew
// (1.5M tasks/s at 10k, 0.45M at 1M; 1.5M at 1M with trimming turned off). The arena
// keeps freed blocks on free lists by size, so a pool's memory for states stays at its
// peak number of tasks in flight and is given back when the pool and its last result go.
//
// An arena belongs to the process that made it: in a forked child its lock may have been
// held by a thread that does not exist there, so the child allocates and frees with
// operator new and delete directly (every block came from operator new).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <utility>

namespace mproc::detail {

// A number that changes in the child of every fork(2).
std::uint32_t fork_generation_now() noexcept;

class state_arena {
 public:
  state_arena() = default;
  state_arena(const state_arena&) = delete;
  state_arena& operator=(const state_arena&) = delete;
  ~state_arena() {
    for (block*& head : free_) {
      while (head != nullptr) ::operator delete(std::exchange(head, head->next));
    }
  }

  void* allocate(std::size_t bytes) {
    const std::size_t c = size_class(bytes);
    if (c == no_class || !mine()) return ::operator new(bytes);
    {
      std::lock_guard lock(mutex_);
      if (block* b = free_[c]) {
        free_[c] = b->next;
        return b;
      }
    }
    return ::operator new(class_bytes(c));
  }
  void deallocate(void* p, std::size_t bytes) noexcept {
    const std::size_t c = size_class(bytes);
    if (c == no_class || !mine()) {
      ::operator delete(p);
      return;
    }
    auto* b = ::new (p) block{nullptr};
    std::lock_guard lock(mutex_);
    b->next = free_[c];
    free_[c] = b;
  }

 private:
  struct block {
    block* next;
  };
  static constexpr std::size_t granule = 64;
  static constexpr std::size_t classes = 16;  // up to 1 KiB; bigger states use operator new
  static constexpr std::size_t no_class = classes;
  static constexpr std::size_t size_class(std::size_t bytes) noexcept {
    const std::size_t c = (bytes + granule - 1) / granule - 1;
    return bytes == 0 || c >= classes ? no_class : c;
  }
  static constexpr std::size_t class_bytes(std::size_t c) noexcept { return (c + 1) * granule; }
  bool mine() const noexcept { return fork_generation_now() == generation_; }

  const std::uint32_t generation_ = fork_generation_now();

  std::mutex mutex_;
  block* free_[classes] = {};
};

// An allocator for std::allocate_shared that draws from a state_arena, which it keeps alive.
template <class T>
class arena_allocator {
 public:
  using value_type = T;
  explicit arena_allocator(std::shared_ptr<state_arena> arena) noexcept : arena_(std::move(arena)) {}
  template <class U>
  arena_allocator(const arena_allocator<U>& other) noexcept : arena_(other.arena_) {}

  T* allocate(std::size_t n) {
    static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__);
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
  std::shared_ptr<state_arena> arena_;
};

}  // namespace mproc::detail
