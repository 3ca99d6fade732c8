// The parent's submitted tasks not yet settled, by task id. Ids are handed out one after
// another and mostly settle in that order, so their states sit in a ring indexed by
// id - first (a slab): no allocation or hashing per task, and a task costs the same with
// ten or a million in flight. A task that stays behind while the ring runs far ahead (a
// long task among many short ones) moves to a side table, so the ring holds no more than a
// few slots per live task.
//
// Not thread-safe: the pool guards it with its mutex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <unordered_map>
#include <utility>

#include "mproc/detail/pool/pool_core.hpp"

namespace mproc::detail {

class pending_tasks {
 public:
  // Adds task `id`, the id after the last one added (the first may be any).
  void add(std::uint64_t id, std::shared_ptr<task_state> state) {
    if (ring_.empty() && stragglers_.empty()) first_ = id;
    ring_.push_back(std::move(state));
    ++live_;
    evict_stragglers();
  }

  // Whether task `id` is pending.
  bool contains(std::uint64_t id) const {
    if (id >= first_ && id - first_ < ring_.size()) return ring_[static_cast<std::size_t>(id - first_)] != nullptr;
    return stragglers_.contains(id);
  }

  // Task `id`'s state, or null when it is not pending.
  const task_state* find(std::uint64_t id) const {
    if (id >= first_ && id - first_ < ring_.size()) return ring_[static_cast<std::size_t>(id - first_)].get();
    const auto it = stragglers_.find(id);
    return it == stragglers_.end() ? nullptr : it->second.get();
  }
  // Removes task `id` and returns its state: null when it is not pending (settled already).
  std::shared_ptr<task_state> take(std::uint64_t id) {
    std::shared_ptr<task_state> state;
    if (id >= first_ && id - first_ < ring_.size()) {
      state = std::move(ring_[static_cast<std::size_t>(id - first_)]);
      while (!ring_.empty() && !ring_.front()) {
        ring_.pop_front();
        ++first_;
      }
    } else if (auto it = stragglers_.find(id); it != stragglers_.end()) {
      state = std::move(it->second);
      stragglers_.erase(it);
    }
    if (state) --live_;
    return state;
  }

  // Removes every task, handing each state to `sink`.
  template <class Sink>
  void take_all(Sink sink) {
    for (auto& [id, state] : stragglers_) sink(std::move(state));
    for (auto& state : ring_) {
      if (state) sink(std::move(state));
    }
    stragglers_.clear();
    ring_.clear();
    live_ = 0;
  }

  std::size_t size() const noexcept { return live_; }
  // Slots the ring holds, settled ones included (what the side table bounds).
  std::size_t ring_slots() const noexcept { return ring_.size(); }

 private:
  void evict_stragglers() {
    while (ring_.size() > 4 * live_ + 4096 && ring_.front()) {
      stragglers_.emplace(first_, std::move(ring_.front()));
      ring_.pop_front();
      ++first_;
      while (!ring_.empty() && !ring_.front()) {
        ring_.pop_front();
        ++first_;
      }
    }
  }

  std::deque<std::shared_ptr<task_state>> ring_;  // ring_[i]: task first_ + i, null once settled
  std::uint64_t first_ = 1;
  std::unordered_map<std::uint64_t, std::shared_ptr<task_state>> stragglers_;
  std::size_t live_ = 0;
};

}  // namespace mproc::detail
