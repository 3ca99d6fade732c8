// The chunks of an imap, handed to the iterating thread in input or completion order.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "mproc/detail/pool/pool_core.hpp"
#include "mproc/serialize.hpp"

namespace mproc::detail {

// The chunks of an imap, handed to the iterating thread in input or completion order.
template <class R>
class imap_state {
 public:
  imap_state(std::size_t chunks, bool ordered) : slots_(chunks), ordered_(ordered) {}

  void chunk_done(std::size_t index, std::span<const std::byte> bytes) noexcept {
    try {
      deliver(index, from_bytes<std::vector<R>>(bytes), nullptr);
    } catch (...) {
      deliver(index, {}, std::current_exception());
    }
  }
  void chunk_failed(std::size_t index, std::exception_ptr error) noexcept { deliver(index, {}, std::move(error)); }

  // Blocks for the next chunk; nullopt when all were taken. Rethrows a failed chunk's error.
  std::optional<std::vector<R>> next() {
    std::unique_lock lock(mutex_);
    if (taken_ == slots_.size()) return std::nullopt;
    std::size_t index;
    if (ordered_) {
      index = taken_;
      cv_.wait(lock, [&] { return slots_[index].done; });
    } else {
      cv_.wait(lock, [&] { return !finished_order_.empty(); });
      index = finished_order_.front();
      finished_order_.pop_front();
    }
    ++taken_;
    slot& s = slots_[index];
    if (s.error) std::rethrow_exception(s.error);
    return std::move(s.values);
  }

 private:
  struct slot {
    bool done = false;
    std::vector<R> values;
    std::exception_ptr error;
  };
  void deliver(std::size_t index, std::vector<R> values, std::exception_ptr error) noexcept {
    std::lock_guard lock(mutex_);
    slot& s = slots_[index];
    s.values = std::move(values);
    s.error = std::move(error);
    s.done = true;
    finished_order_.push_back(index);
    cv_.notify_all();
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<slot> slots_;
  std::deque<std::size_t> finished_order_;
  std::size_t taken_ = 0;
  bool ordered_;
};

template <class R>
class imap_chunk_state final : public task_state {
 public:
  imap_chunk_state(std::shared_ptr<imap_state<R>> state, std::size_t index) : state_(std::move(state)), index_(index) {}
  void complete(std::span<const std::byte> bytes) noexcept override { state_->chunk_done(index_, bytes); }
  void fail(std::exception_ptr error) noexcept override { state_->chunk_failed(index_, std::move(error)); }

 private:
  std::shared_ptr<imap_state<R>> state_;
  std::size_t index_;
};

}  // namespace mproc::detail
