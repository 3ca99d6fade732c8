// The chunks of one imap as they come back, handed to the iterating thread in input or
// completion order. Chunks are added as the feed submits them (imap_feed.hpp), so the
// input's length need not be known; consumed chunks are dropped at once.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "mproc/detail/pool/task_host.hpp"
#include "mproc/detail/wait/deadline.hpp"
#include "mproc/serialize.hpp"

namespace mproc::detail {

template <class R>
class imap_state {
 public:
  struct chunk {
    std::vector<R> values;
    std::exception_ptr error;
  };

  explicit imap_state(bool ordered) : ordered_(ordered) {}

  // The feed, before submitting chunk number `added()`: its slot.
  void add_chunk() {
    std::lock_guard lock(mutex_);
    slots_.emplace_back();
  }
  std::size_t added() const {
    std::lock_guard lock(mutex_);
    return first_ + slots_.size();
  }
  void set_task(std::size_t index, std::uint64_t task) {
    std::lock_guard lock(mutex_);
    if (index >= first_ && index - first_ < slots_.size()) slots_[index - first_].task = task;
  }

  void chunk_done(std::size_t index, std::span<const std::byte> bytes) noexcept {
    try {
      deliver(index, from_bytes<std::vector<R>>(bytes), nullptr);
    } catch (...) {
      deliver(index, {}, std::current_exception());
    }
  }
  void chunk_failed(std::size_t index, std::exception_ptr error) noexcept { deliver(index, {}, std::move(error)); }
  // A thread pool's chunk: its results as values.
  void chunk_values(std::size_t index, std::vector<R> values) noexcept { deliver(index, std::move(values), nullptr); }

  // Blocks until the next chunk (in input or completion order) of those added is done, and
  // takes it; nullopt when `until` passed first. Call only with a chunk outstanding.
  std::optional<chunk> next(deadline until) {
    std::unique_lock lock(mutex_);
    const auto ready = [&] { return ordered_ ? slots_.front().done : first_done() != nullptr; };
    if (until.is_never()) {
      cv_.wait(lock, ready);
    } else if (!cv_.wait_until(lock, until.when(), ready)) {
      return std::nullopt;
    }
    slot& s = ordered_ ? slots_.front() : *first_done();
    chunk out{std::move(s.values), std::move(s.error)};
    s.consumed = true;
    while (!slots_.empty() && slots_.front().consumed) {
      slots_.pop_front();
      ++first_;
    }
    return out;
  }

  // The tasks of chunks submitted and not taken: what stopping early cancels.
  std::vector<std::uint64_t> unconsumed_tasks() const {
    std::lock_guard lock(mutex_);
    std::vector<std::uint64_t> tasks;
    for (const slot& s : slots_) {
      if (!s.done && s.task != 0) tasks.push_back(s.task);
    }
    return tasks;
  }

 private:
  struct slot {
    bool done = false;
    bool consumed = false;
    std::uint64_t done_order = 0;  // the completions before it
    std::uint64_t task = 0;
    std::vector<R> values;
    std::exception_ptr error;
  };
  // The done, untaken chunk that finished first (a scan of the few in flight); under mutex_.
  slot* first_done() noexcept {
    slot* first = nullptr;
    for (slot& s : slots_) {
      if (s.done && !s.consumed && (first == nullptr || s.done_order < first->done_order)) first = &s;
    }
    return first;
  }
  void deliver(std::size_t index, std::vector<R> values, std::exception_ptr error) noexcept {
    {
      std::lock_guard lock(mutex_);
      if (index < first_ || index - first_ >= slots_.size()) return;
      slot& s = slots_[index - first_];
      if (s.done) return;
      s.values = std::move(values);
      s.error = std::move(error);
      s.done = true;
      s.done_order = completions_++;
    }
    cv_.notify_all();
  }

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<slot> slots_;  // chunk first_ + i
  std::size_t first_ = 0;
  std::uint64_t completions_ = 0;
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
