// mproc::shared_value and mproc::shared_array — Python's multiprocessing.Value and Array:
// plain data in shared memory, beside a recursive_mutex that guards it. (mproc::shared_dict,
// Python's Manager().dict(), comes with this header: <mproc/shared_dict.hpp>.)
//
// Contract:
// - T is trivially copyable (no pointers to process-private memory, no owned resources;
//   std::string or std::vector fail to compile with a message saying so), not an array
//   (use std::array), aligned to at most 4096. It lives in a memfd: nothing in /dev/shm.
// - Handles, as every mproc sync type: copies name the same memory, a forked child
//   inherits it, and a handle is serialisable, so it can be sent to a process made at any
//   time (a queue message, a pool task); the sender must still hold it when the receiver
//   decodes it. The receiver checks the element size and alignment (mproc::error if they
//   differ). Making one costs one descriptor and the pages of the data.
// - value(), operator[], data(), begin(), end() give direct access, with no locking: hold
//   get_lock() (a recursive_mutex, shared by every handle to the same memory) around
//   read-modify-write sequences such as `++v.value()`, or use std::atomic_ref on the
//   element. get() and set() take the lock themselves (Python's `v.value` does too).
// - The lock is robust: a process that dies holding it leaves it to the next acquirer at
//   once, and owner_deaths() counts it; the data it was writing may be half written.
// - Thread safety: as for the data of a plain T shared between threads: the handle's
//   members may be called from any thread; the data needs the lock (or atomics).
// - What throws: std::system_error when memory or descriptors run out; at(i) beyond the
//   end, std::out_of_range; a received handle of another type, mproc::error.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <ranges>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "mproc/detail/sync/sync_core.hpp"
#include "mproc/error.hpp"
#include "mproc/shared_dict.hpp"
#include "mproc/shared_memory.hpp"
#include "mproc/sync.hpp"

namespace mproc {

namespace detail {

template <class T>
constexpr bool check_shared_element() {
  static_assert(std::is_trivially_copyable_v<T>,
                "mproc::shared_value<T> and shared_array<T> need a trivially copyable T: its bytes live in memory "
                "that other processes read and write, so T cannot own heap memory or other resources of one "
                "process (std::string, std::vector, ...). Use a fixed-size type such as std::array<char, N>, or "
                "send values through an mproc::queue.");
  static_assert(!std::is_array_v<T>, "mproc::shared_value<T[N]>: use std::array<T, N> or mproc::shared_array<T>");
  static_assert(alignof(T) <= 4096, "mproc::shared_value<T>: T may be aligned to at most 4096 bytes");
  return true;
}

}  // namespace detail

// Python's Value: one T in shared memory.
template <class T>
class shared_value {
  static_assert(detail::check_shared_element<T>());

 public:
  // Names memory of this machine: cannot go to another (mproc::mpi).
  using mproc_local_handle = void;
  explicit shared_value(T init = T{})
      : block_(std::make_shared<detail::shared_block>(sizeof(T), alignof(T), 1, "mproc::shared_value")),
        lock_(block_->lock()) {
    data_ = ::new (block_->data()) T(init);
  }

  // The value, unlocked: hold get_lock() to read-modify-write it.
  T& value() noexcept { return *data_; }
  const T& value() const noexcept { return *data_; }
  // A copy of the value, read under the lock.
  T get() const {
    std::lock_guard guard(lock_);
    return *data_;
  }
  // Writes the value under the lock.
  void set(const T& v) {
    std::lock_guard guard(lock_);
    *data_ = v;
  }
  // The lock every handle to this value shares (Python's get_lock()).
  recursive_mutex& get_lock() const noexcept { return lock_; }
  // How many times a process died holding the lock.
  std::uint64_t owner_deaths() const noexcept { return lock_.owner_deaths(); }

  template <class Archive>
  void save(Archive& archive) const {
    archive(block_->token());
  }
  template <class Archive>
  void load(Archive& archive) {
    detail::sync_token token;
    archive(token);
    auto block = std::make_shared<detail::shared_block>(token, sizeof(T), alignof(T), "mproc::shared_value");
    if (block->count() != 1) {
      throw error("mproc::shared_value::load: the handle received names an mproc::shared_array of " +
                  std::to_string(block->count()) + " elements; receive it into an mproc::shared_array");
    }
    adopt(std::move(block));
  }

 private:
  void adopt(std::shared_ptr<detail::shared_block> block) {
    lock_ = recursive_mutex(block->lock());
    data_ = static_cast<T*>(block->data());
    block_ = std::move(block);
  }

  std::shared_ptr<detail::shared_block> block_;
  mutable recursive_mutex lock_;
  T* data_ = nullptr;  // in block_'s mapping
};

// Python's Array: n T's in shared memory.
template <class T>
class shared_array {
  static_assert(detail::check_shared_element<T>());

 public:
  // Names memory of this machine: cannot go to another (mproc::mpi).
  using mproc_local_handle = void;
  // An empty array (0 elements): it exists for decoding a handle into.
  shared_array() : shared_array(0) {}
  // n elements, each a copy of `init`. Throws std::length_error when n * sizeof(T) does not
  // fit in memory.
  explicit shared_array(std::size_t n, T init = T{})
      : block_(std::make_shared<detail::shared_block>(sizeof(T), alignof(T), n, "mproc::shared_array")),
        lock_(block_->lock()),
        size_(n) {
    data_ = static_cast<T*>(block_->data());
    for (std::size_t i = 0; i < n; ++i) ::new (data_ + i) T(init);
  }
  // The values of a range, as Python's Array('i', range(10)).
  template <std::ranges::input_range R>
    requires(!std::is_same_v<std::remove_cvref_t<R>, shared_array> &&
             std::convertible_to<std::ranges::range_reference_t<R>, T>)
  explicit shared_array(R&& values) : shared_array(collected{}, collect(std::forward<R>(values))) {}

  // Element i, unlocked and unchecked: hold get_lock() to read-modify-write it.
  T& operator[](std::size_t i) noexcept { return data_[i]; }
  const T& operator[](std::size_t i) const noexcept { return data_[i]; }
  // Element i, unlocked; std::out_of_range when i >= size().
  T& at(std::size_t i) {
    check(i);
    return data_[i];
  }
  const T& at(std::size_t i) const {
    check(i);
    return data_[i];
  }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  T* begin() noexcept { return data_; }
  T* end() noexcept { return data_ + size_; }
  const T* begin() const noexcept { return data_; }
  const T* end() const noexcept { return data_ + size_; }

  // The lock every handle to this array shares (Python's get_lock()).
  recursive_mutex& get_lock() const noexcept { return lock_; }
  // How many times a process died holding the lock.
  std::uint64_t owner_deaths() const noexcept { return lock_.owner_deaths(); }

  template <class Archive>
  void save(Archive& archive) const {
    archive(block_->token());
  }
  template <class Archive>
  void load(Archive& archive) {
    detail::sync_token token;
    archive(token);
    auto block = std::make_shared<detail::shared_block>(token, sizeof(T), alignof(T), "mproc::shared_array");
    lock_ = recursive_mutex(block->lock());
    data_ = static_cast<T*>(block->data());
    size_ = block->count();
    block_ = std::move(block);
  }

 private:
  template <class R>
  static std::vector<T> collect(R&& values) {
    std::vector<T> all;
    if constexpr (std::ranges::sized_range<R>) all.reserve(std::ranges::size(values));
    for (auto&& v : values) all.push_back(static_cast<T>(v));
    return all;
  }
  struct collected {};
  shared_array(collected, const std::vector<T>& values) : shared_array(values.size()) {
    std::copy(values.begin(), values.end(), data_);
  }

  void check(std::size_t i) const {
    if (i >= size_) {
      throw std::out_of_range("mproc::shared_array::at: index " + std::to_string(i) + " is out of range (size " +
                              std::to_string(size_) + ")");
    }
  }

  std::shared_ptr<detail::shared_block> block_;
  mutable recursive_mutex lock_;
  T* data_ = nullptr;  // in block_'s mapping
  std::size_t size_ = 0;
};

}  // namespace mproc
