// What mproc::wait and mproc::as_completed sleep on: async states that finish tell it
// their index, on whatever thread finishes them, so a waiter over results of several
// pools wakes once per completion and never polls.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>

#include "mproc/detail/wait/deadline.hpp"

namespace mproc::detail {

class completion_waiter {
 public:
  // A state finished: `index` is its place in the waiter's span.
  void notify(std::size_t index) noexcept {
    {
      std::lock_guard lock(mutex_);
      try {
        finished_.push_back(index);
      } catch (...) {
        lost_ = true;  // the waiter rescans (see take)
      }
    }
    cv_.notify_all();
  }
  // The next index that finished, in completion order; nullopt if `until` passed first.
  // `rescan` is set when a notification could not be recorded (no memory): the caller
  // then looks at every state itself.
  std::optional<std::size_t> take(deadline until, bool& rescan) {
    std::unique_lock lock(mutex_);
    const auto ready = [&] { return !finished_.empty() || lost_; };
    if (until.is_never()) {
      cv_.wait(lock, ready);
    } else if (!cv_.wait_until(lock, until.when(), ready)) {
      return std::nullopt;
    }
    rescan = lost_;
    lost_ = false;
    if (finished_.empty()) return std::nullopt;
    const std::size_t index = finished_.front();
    finished_.pop_front();
    return index;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::size_t> finished_;
  bool lost_ = false;
};

}  // namespace mproc::detail
