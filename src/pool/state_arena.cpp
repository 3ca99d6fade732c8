#include "mproc/detail/pool/state_arena.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <new>

#include "mproc/detail/os/big_vector.hpp"
#include "os/thread_identity.hpp"
#include "wait/biased_mutex.hpp"

namespace mproc::detail {
namespace {

// Slabs start small, so that a pool that runs a few tasks costs a few pages, and double
// up to huge pages as the arena grows.
constexpr std::size_t first_slab_bytes = std::size_t{64} << 10;
constexpr std::size_t huge_slab_bytes = std::size_t{2} << 20;

std::size_t size_class(std::size_t bytes, std::size_t granule) noexcept { return (bytes + granule - 1) / granule - 1; }

}  // namespace

std::uint32_t fork_generation_now() noexcept {
  static const bool counting = (refresh_thread_identity(), true);  // registers the fork handler
  (void)counting;
  return fork_generation.load(std::memory_order_relaxed);
}

state_arena::state_arena() : mutex_(std::make_unique<biased_mutex>()) {}

state_arena::~state_arena() {
  for (const slab& s : slabs_) ::munmap(s.base, s.bytes);
}

void* state_arena::allocate(std::size_t bytes) {
  if (!mine()) return ::operator new(bytes);
  const bool small = bytes != 0 && bytes <= largest_block;
  void* p = small ? nullptr : ::operator new(bytes);
  std::lock_guard lock(*mutex_);
  if (small) {
    const std::size_t c = size_class(bytes, granule);
    if (block* b = free_[c]) {
      free_[c] = b->next;
      p = b;
    } else {
      p = carve((c + 1) * granule);  // may throw: nothing counted yet
    }
  }
  ++out_;
  return p;
}

void state_arena::deallocate(void* p, std::size_t bytes) noexcept {
  const bool small = bytes != 0 && bytes <= largest_block;
  if (!small) ::operator delete(p);
  if (!mine()) return;  // a forked child: the block may be the parent's (see the header)
  bool last = false;
  {
    std::lock_guard lock(*mutex_);
    if (small) {
      auto* b = ::new (p) block{nullptr};
      const std::size_t c = size_class(bytes, granule);
      b->next = free_[c];
      free_[c] = b;
    }
    last = --out_ == 0 && abandoned_;
  }
  if (last) delete this;
}

void state_arena::abandon() noexcept {
  if (!mine()) return;
  bool last = false;
  {
    std::lock_guard lock(*mutex_);
    abandoned_ = true;
    last = out_ == 0;
  }
  if (last) delete this;
}

void* state_arena::carve(std::size_t bytes) {
  if (static_cast<std::size_t>(end_ - next_) < bytes) {
    const std::size_t size = std::clamp(slab_total_, first_slab_bytes, huge_slab_bytes);
    // A huge slab is mapped twice its size and trimmed to a 2 MiB boundary, so that the
    // kernel can back it with one huge page.
    const std::size_t mapped = size == huge_slab_bytes ? 2 * size : size;
    void* m = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    auto* base = static_cast<std::byte*>(m);
    if (mapped != size) {
      const auto at = reinterpret_cast<std::uintptr_t>(base);
      auto* aligned = reinterpret_cast<std::byte*>((at + size - 1) & ~(std::uintptr_t{size} - 1));
      if (aligned != base) ::munmap(base, static_cast<std::size_t>(aligned - base));
      const std::size_t tail = mapped - static_cast<std::size_t>(aligned - base) - size;
      if (tail != 0) ::munmap(aligned + size, tail);
      base = aligned;
      advise_huge_pages(base, size);
    }
    try {
      slabs_.push_back({base, size});
    } catch (...) {
      ::munmap(base, size);
      throw;
    }
    slab_total_ += size;
    next_ = base;
    end_ = base + size;
  }
  void* p = next_;
  next_ += bytes;
  return p;
}

}  // namespace mproc::detail
