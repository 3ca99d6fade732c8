// What mproc::wait and mproc::as_completed sleep on: async states that finish tell it
// their index, on whatever thread finishes them, so a waiter over results of several
// pools wakes once per completion and never polls.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <vector>

#include "mproc/detail/wait/deadline.hpp"

namespace mproc::detail {

class completion_waiter {
 public:
  // A state finished: `index` is its place in the waiter's span.
  void notify(std::size_t index) noexcept {
    bool wake;
    {
      std::lock_guard lock(mutex_);
      try {
        finished_.push_back(index);
      } catch (...) {
        lost_ = true;  // the waiter rescans (see take)
      }
      wake = waiting_;
    }
    if (wake) cv_.notify_all();  // a burst of completions wakes a sleeping waiter once
  }
  // Moves the indices that finished, in completion order, to the end of `into`: at least
  // one, unless `until` passed first (then false). `rescan` is set when a notification
  // could not be recorded (no memory): the caller then looks at every state itself.
  bool take(deadline until, std::vector<std::size_t>& into, bool& rescan) {
    std::unique_lock lock(mutex_);
    const auto ready = [&] { return !finished_.empty() || lost_; };
    waiting_ = true;
    bool got = true;
    if (until.is_never()) {
      cv_.wait(lock, ready);
    } else {
      got = cv_.wait_until(lock, until.when(), ready);
    }
    waiting_ = false;
    if (!got) return false;
    rescan = lost_;
    lost_ = false;
    into.insert(into.end(), finished_.begin(), finished_.end());
    finished_.clear();
    return true;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::size_t> finished_;
  bool waiting_ = false;  // a thread sleeps (or is about to) in take
  bool lost_ = false;
};

}  // namespace mproc::detail
