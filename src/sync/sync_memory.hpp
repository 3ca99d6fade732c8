// The shared memory a synchronisation object lives in.
//
// Every mproc sync object (lock, semaphore, event, condition, barrier, shared value) lives
// in a memfd shared by the processes that hold a handle to it: never a name in /dev/shm.
// One memfd may hold several objects (a condition and its own lock, a shared value and
// its lock), each at an offset, each starting with an object_header naming its kind, so
// that a handle received from another process is checked before it is used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "mproc/detail/sync/sync_core.hpp"
#include "shm/shared_memory.hpp"

namespace mproc::detail {

enum class sync_kind : std::uint32_t {
  mutex = 1,
  recursive_mutex,
  semaphore,
  event,
  condition,
  barrier,
  shared_block,
};

const char* kind_name(sync_kind kind) noexcept;

struct object_header {
  std::uint32_t magic;
  std::uint32_t version;
  sync_kind kind;
  std::uint32_t bytes;  // the object's state, this header included
};

// Objects start on cache lines: their atomics must be aligned, and two objects in one
// memfd should not share a line.
inline constexpr std::size_t object_alignment = 64;
// Room for a lock's state (lock_core::state), so that others can embed one.
inline constexpr std::size_t lock_bytes = 256;

class sync_memory {
 public:
  // `type` is the public type the memory serves ("mproc::condition", a static string),
  // which its errors name: "<type>::load: ..." for a handle received that is not what it
  // should be.

  // A new memfd of `bytes` (rounded up to pages), zero-filled and allocated now.
  static std::shared_ptr<sync_memory> create(const char* name, std::size_t bytes, const char* type);
  // The memfd another process (or this one) described.
  static std::shared_ptr<sync_memory> open(const fd_token& token, const char* type);

  const char* type() const noexcept { return memory_->type(); }

  // Bytes [offset, offset + size) of the memfd, mapped in this process. Throws
  // mproc::error when they lie beyond the file (a forged or stale token).
  std::byte* at(std::size_t offset, std::size_t size);

  // Makes a new object of `kind` and `bytes` at `offset`: writes its header, returns its
  // bytes (the rest zero, as the memfd was made).
  std::byte* make_object(std::size_t offset, sync_kind kind, std::size_t bytes);
  // The object at `offset`, which must be of `kind` and `bytes`; throws mproc::error
  // otherwise, naming what was expected and what was found.
  std::byte* open_object(std::size_t offset, sync_kind kind, std::size_t bytes);
  // The kind of the object at `offset`; throws mproc::error if there is none.
  sync_kind kind_at(std::size_t offset);

  // Extends the memfd to at least `bytes` and maps it here.
  void grow(std::size_t bytes) { memory_->grow(bytes); }

  sync_token token(std::size_t offset) const;
  // Whether `token` names this memfd (so that a second claim of it can be skipped).
  bool is(const fd_token& token) const noexcept;

 private:
  explicit sync_memory(std::unique_ptr<shared_memory> memory);

  std::unique_ptr<shared_memory> memory_;
  std::uint64_t device_ = 0;  // the memfd's identity, for is()
  std::uint64_t inode_ = 0;
};

}  // namespace mproc::detail
