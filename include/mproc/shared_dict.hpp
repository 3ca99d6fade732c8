// mproc::shared_dict<K, V> — Python's multiprocessing Manager().dict(): a dict that every
// process holding the handle reads and writes, in shared memory, with no server process.
//
// Contract:
// - K and V: any serialisable type (<mproc/serialize.hpp>). Keys compare by their
//   serialised bytes, hashed: two keys are the same key exactly when they serialise to the
//   same bytes. So equal keys must serialise equally (a std::unordered_set or a struct
//   whose save writes a pointer's value would not), and for floating-point keys 0.0 and
//   -0.0 are two keys while a NaN finds itself. Values are stored serialised and decoded
//   on every read: get() returns a copy, never a reference into the dict.
// - Handle, like mproc::queue: copies name the same dict, a forked child inherits it, and
//   it is serialisable, so it can go to a process made at any time (a process argument, a
//   pool task, a queue message); the sender must still hold it when the receiver decodes
//   it. The receiver checks K and V (mproc::error if the dict is of other types). It
//   names memory of this machine: it cannot go to a remote pool (mproc::mpi, redis).
// - Every call takes the dict's lock (a robust process-shared mutex) for its duration:
//   each is atomic. update(k, fn) runs fn(std::optional<V> old) -> V under the lock, so
//   read-modify-write sequences (counters, appends) lose nothing; fn must not call this
//   dict (mproc::error). If fn, or serialising its result, throws, the dict is unchanged
//   and the exception propagates. items() is one snapshot, taken under one hold.
// - Crash safety: a process killed at any instant in any call leaves the dict as it was
//   before that call or as the call left it, never in between; the next caller repairs what
//   the dead one left half done and goes on (owner_deaths() counts it). Nobody deadlocks.
// - Memory: one memfd (never a name in /dev/shm) that grows as needed, without a fixed
//   capacity, and without moving (an address range is reserved for it up front). Space
//   of erased and overwritten entries is reused; free space of 256 KiB and more gives its
//   pages back to the system (the file keeps its size, not its memory).
// - What throws: at() of an absent key, std::out_of_range naming the types; a value or key
//   whose serialisation throws, serialization_error (the dict unchanged); std::system_error
//   when memory or descriptors run out (the dict unchanged); mproc::error for a received
//   handle of other types, a call from inside update's fn, or shared memory damaged by
//   something other than a kill.
// - Thread safety: a handle may be used from any number of threads at once.
// - Performance: a get or set of small values is a lock, a hash probe and a copy in shared
//   memory: millions per second, against tens of thousands for Python's Manager (an IPC
//   round trip to a server process). Concurrent writers serialise on the one lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mproc/detail/os/fd_token.hpp"
#include "mproc/detail/sync/dict_core.hpp"
#include "mproc/error.hpp"
#include "mproc/serialize.hpp"

namespace mproc {

template <class K, class V>
class shared_dict;

namespace detail {
// The core behind a handle: for tests of its memory and recovery.
template <class K, class V>
const dict_core& core_of(const shared_dict<K, V>& dict) noexcept {
  return *dict.core_;
}
}  // namespace detail

template <class K, class V>
class shared_dict {
  static_assert(serializable<K>, "mproc::shared_dict<K, V>: K must be serializable (see <mproc/serialize.hpp>)");
  static_assert(serializable<V>, "mproc::shared_dict<K, V>: V must be serializable (see <mproc/serialize.hpp>)");
  using bytes = std::span<const std::byte>;

 public:
  // Names memory of this machine: cannot go to another (mproc::mpi, mproc::redis).
  using mproc_local_handle = void;
  // A new, empty dict.
  shared_dict() : core_(std::make_shared<detail::dict_core>(fingerprint())) {}

  // The value under `key`, or nullopt.
  std::optional<V> get(const K& key) const {
    std::optional<V> value;
    with_encoded(key, [&](bytes k) {
      core_->find(k, [&](bytes v) { value.emplace(decode<V>(v, "mproc::shared_dict::get")); });
    });
    return value;
  }
  // The value under `key`; std::out_of_range when there is none.
  V at(const K& key) const {
    std::optional<V> value = get(key);
    if (!value) {
      throw std::out_of_range("mproc::shared_dict<" + std::string(detail::type_name<K>()) + ", " +
                              std::string(detail::type_name<V>()) + ">::at: the key is not in the dict");
    }
    return std::move(*value);
  }
  bool contains(const K& key) const {
    bool found = false;
    with_encoded(key, [&](bytes k) { found = core_->find(k, {}); });
    return found;
  }
  std::size_t size() const { return core_->size(); }
  bool empty() const { return size() == 0; }

  // Stores `value` under `key` (Python's d[key] = value).
  void set(const K& key, const V& value) {
    with_encoded(key, [&](bytes k) { with_encoded(value, [&](bytes v) { core_->assign(k, v); }); });
  }
  // Removes `key`; false when it was not there.
  bool erase(const K& key) {
    bool erased = false;
    with_encoded(key, [&](bytes k) { erased = core_->erase(k); });
    return erased;
  }
  void clear() { core_->clear(); }

  // Atomically replaces the value under `key` with fn(the value, or nullopt when absent),
  // and returns the new value: d.update("hits", [](auto n) { return n.value_or(0) + 1; }).
  // fn runs under the dict's lock: keep it short, and do not call this dict from it.
  template <class Fn>
  V update(const K& key, Fn fn) {
    static_assert(std::is_invocable_r_v<V, Fn&, std::optional<V>>,
                  "mproc::shared_dict::update: fn must take a std::optional<V> and return a V");
    std::optional<V> result;
    with_encoded(key, [&](bytes k) {
      core_->update(k, [&](const bytes* old, std::vector<std::byte>& out) {
        std::optional<V> current;
        if (old != nullptr) current.emplace(decode<V>(*old, "mproc::shared_dict::update"));
        V next = fn(std::move(current));
        detail::encode_message(next, out);
        result.emplace(std::move(next));
      });
    });
    return std::move(*result);
  }

  // Every entry, in no particular order, as one consistent snapshot.
  std::vector<std::pair<K, V>> items() const {
    std::vector<std::pair<K, V>> all;
    core_->for_each([&](bytes k, bytes v) {
      all.emplace_back(decode<K>(k, "mproc::shared_dict::items"), decode<V>(v, "mproc::shared_dict::items"));
    });
    return all;
  }

  // How many times a process died holding the dict's lock (each time repaired).
  std::uint64_t owner_deaths() const noexcept { return core_->owner_deaths(); }

  // cereal: a handle travels as a token its receiver turns into its own mapping.
  template <class Archive>
  void save(Archive& archive) const {
    archive(core_->token());
  }
  template <class Archive>
  void load(Archive& archive) {
    detail::fd_token token;
    archive(token);
    core_ = std::make_shared<detail::dict_core>(token, fingerprint());
  }

 private:
  friend const detail::dict_core& detail::core_of<K, V>(const shared_dict&) noexcept;

  static std::uint64_t fingerprint() noexcept {
    constexpr auto k = detail::type_name<K>();
    constexpr auto v = detail::type_name<V>();
    return detail::dict_types_fingerprint(k.data(), k.size(), v.data(), v.size());
  }

  // Calls fn with the bytes `value` is stored as. A number is its own bytes; anything else
  // is encoded into a buffer of this thread's, moved out for the call so that a nested
  // call (a callback using another dict) cannot overwrite it.
  template <class T, class Fn>
  static void with_encoded(const T& value, Fn&& fn) {
    if constexpr (detail::is_memcpy_serializable_v<T>) {
      fn(bytes(detail::raw_bytes(value)));
    } else {
      thread_local std::vector<std::byte> spare;
      std::vector<std::byte> buffer = std::move(spare);
      buffer.clear();
      detail::encode_message(value, buffer);
      fn(bytes(buffer));
      spare = std::move(buffer);
    }
  }

  // `who`: the public call, for the errors ("mproc::shared_dict::get").
  template <class T>
  static T decode(bytes b, const char* who) {
    return detail::decode_message<T>(b, who);
  }

  std::shared_ptr<detail::dict_core> core_;
};

}  // namespace mproc
