// The heap of an mproc::shared_dict: blocks carved from one memfd, free blocks kept in bins
// by size, and the rebuild that recomputes all of the allocator's state from what the
// committed words reach (see dict_layout.hpp for the layout, dict_core.cpp for the crash
// windows). Runs under the dict's lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "shm/shared_memory.hpp"
#include "sync/dict_layout.hpp"

namespace mproc::detail::dict {

class heap {
 public:
  heap(shared_memory& memory, header& h) noexcept : memory_(memory), h_(h) {}

  // A block of at least `bytes` (its block word written, of `kind`), from a bin, else from
  // the wilderness, else after a rebuild that merged enough freed space, else after the
  // memfd grew. std::system_error when memory runs out (the dict is then unchanged).
  u64 allocate(u64 bytes, block_kind kind);
  // Gives the block at `offset`, no longer reachable, to its bin.
  void release(u64 offset);
  // Recomputes the bins, the counts and the free space from the table and the records it
  // reaches: every byte of [heap_start, top) that no reachable block covers becomes a
  // free block, merged with its neighbours. Throws mproc::error if what the committed words
  // reach is not a valid dict (damaged memory).
  void rebuild();

  // Views of the blocks the committed words name, checked against the heap's bounds and
  // kinds (mproc::error if they are not what they should be).
  table& table_at(u64 offset) const;
  record& record_at(u64 offset) const;
  u64* slots(table& t) const noexcept { return reinterpret_cast<u64*>(&t + 1); }
  std::byte* bytes_at(u64 offset) const noexcept { return memory_.base() + offset; }

  [[noreturn]] static void damaged(const char* what);

 private:
  u64 take_from_bins(u64 need);
  u64 take_from_wilderness(u64 need);
  void grow(u64 end);
  // Takes pages back for [offset, end) of a free block that may hold punched holes.
  void back(u64 offset, u64 end);
  void push(u64 offset, u64 size, bool punch);

  shared_memory& memory_;
  header& h_;
};

// The hash of a key's bytes; `seed` is the dict's.
u64 hash_bytes(std::span<const std::byte> bytes, u64 seed) noexcept;

}  // namespace mproc::detail::dict
