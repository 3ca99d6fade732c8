// The compiled core under mproc::shared_dict<K, V> (<mproc/shared_dict.hpp>): a hash table
// of byte strings in one growing memfd, under a robust lock. The template encodes keys and
// values; this class compares keys by their bytes and stores values as bytes.
//
// Contract:
// - Every member takes the dict's lock, does its work and releases it; the callbacks
//   (`sink`, `make`) run under the lock, so they see and make one consistent state, and
//   must not call this dict again (mproc::error if they do: it would wait for itself).
// - A holder killed at any instant leaves the dict as it was before its change or after
//   it; the next locker repairs what it left (src/sync/dict_core.cpp explains how).
// - What throws: mproc::error for damaged shared memory, a received handle of another
//   type, or a re-entrant call; std::system_error when memory or descriptors run out; a
//   callback's exception propagates, and the dict is then unchanged.
// - Thread safety: every member may be called from any thread of any process at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "mproc/detail/os/fd_token.hpp"
#include "mproc/detail/os/function_ref.hpp"

namespace mproc::detail {

class shared_memory;  // src/shm/shared_memory.hpp
namespace dict {
struct header;  // src/sync/dict_layout.hpp
}

class dict_core {
 public:
  using bytes = std::span<const std::byte>;

  // A new, empty dict. `types`: a fingerprint of the handle's K and V.
  explicit dict_core(std::uint64_t types);
  // The dict a token names; mproc::error if it names none, or one of other types.
  dict_core(const fd_token& token, std::uint64_t types);
  ~dict_core();
  dict_core(const dict_core&) = delete;
  dict_core& operator=(const dict_core&) = delete;

  // Calls sink(value) when `key` is there; returns whether it was.
  bool find(bytes key, function_ref<void(bytes)> sink) const;
  // Stores `value` under `key`.
  void assign(bytes key, bytes value);
  // Calls make(old value or null, out), which appends the new value's bytes to `out` (empty
  // on entry); then stores them under `key`. Nothing changes if make throws.
  void update(bytes key, function_ref<void(const bytes*, std::vector<std::byte>&)> make);
  bool erase(bytes key);
  void clear();
  std::size_t size() const;
  // Calls sink(key, value) for every entry, all under one hold of the lock.
  void for_each(function_ref<void(bytes, bytes)> sink) const;

  // How many times a holder died holding the lock (each one repaired).
  std::uint64_t owner_deaths() const noexcept;
  // The memfd's size, and the memory it holds (st_blocks): for tests of reclamation.
  std::size_t file_bytes() const;
  std::size_t memory_bytes() const;

  fd_token token() const;

 private:
  class locked;  // one hold of the lock, with the operations on the table

  std::unique_ptr<shared_memory> memory_;
  dict::header* header_;
  std::uint64_t id_;  // this mapping's identity, for re-entry checks
};

// A fingerprint of a key and value type, from their names (type_name<T>()).
std::uint64_t dict_types_fingerprint(const char* key_type, std::size_t key_length, const char* value_type,
                                     std::size_t value_length) noexcept;

}  // namespace mproc::detail
