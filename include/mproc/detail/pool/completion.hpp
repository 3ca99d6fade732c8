// The machinery of mproc::wait and mproc::as_completed (concurrent.futures' wait and
// as_completed) over async states: each registers one completion_waiter, which the states
// notify as they finish, on whatever thread finishes them.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "mproc/detail/pool/async_state.hpp"
#include "mproc/detail/pool/completion_waiter.hpp"
#include "mproc/detail/wait/deadline.hpp"
#include "mproc/error.hpp"

namespace mproc::detail {

// The states of a span of results, and which of them finished, in completion order.
template <class R>
class completion_watch {
 public:
  explicit completion_watch(std::vector<std::shared_ptr<async_state<R>>> states)
      : states_(std::move(states)), seen_(states_.size(), 0) {
    for (std::size_t i = 0; i < states_.size(); ++i) {
      if (!states_[i]->add_waiter(waiter_, i)) note(i);
    }
  }
  ~completion_watch() {
    for (std::size_t i = 0; i < states_.size(); ++i) {
      if (seen_[i] == 0) states_[i]->remove_waiter(waiter_.get());
    }
  }
  completion_watch(const completion_watch&) = delete;
  completion_watch& operator=(const completion_watch&) = delete;

  std::size_t size() const noexcept { return states_.size(); }
  std::size_t finished() const noexcept { return order_.size(); }
  bool any_failed() const noexcept { return failed_; }
  // The i-th state to finish (i < finished()).
  std::size_t finished_at(std::size_t i) const noexcept { return order_[i]; }
  bool is_finished(std::size_t index) const noexcept { return seen_[index] != 0; }

  // Waits for one more state to finish (taking all that finished meanwhile); false when
  // `until` passed first.
  bool await_next(deadline until) {
    const std::size_t before = order_.size();
    while (order_.size() == before) {
      bool rescan = false;
      taken_.clear();
      const bool got = waiter_->take(until, taken_, rescan);
      if (rescan) {
        for (std::size_t i = 0; i < states_.size(); ++i) {
          if (seen_[i] == 0 && states_[i]->ready()) note(i);
        }
      }
      for (const std::size_t index : taken_) note(index);
      if (!got) return order_.size() != before;
    }
    return true;
  }

 private:
  void note(std::size_t i) {
    if (seen_[i] != 0) return;
    seen_[i] = 1;
    order_.push_back(i);
    if (states_[i]->error()) failed_ = true;
  }

  std::shared_ptr<completion_waiter> waiter_ = std::make_shared<completion_waiter>();
  std::vector<std::shared_ptr<async_state<R>>> states_;
  std::vector<char> seen_;
  std::vector<std::size_t> order_;
  std::vector<std::size_t> taken_;  // scratch for await_next
  bool failed_ = false;
};

// as_completed's range: the indices of the results as each finishes (those finished
// already first, in span order). Past its deadline, advancing throws timeout_error.
template <class R>
class as_completed_range {
 public:
  as_completed_range(std::vector<std::shared_ptr<async_state<R>>> states, deadline until)
      : watch_(std::make_unique<completion_watch<R>>(std::move(states))), until_(until) {}

  class iterator {
   public:
    using value_type = std::size_t;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(as_completed_range* range) : range_(range) { range_->ensure(0); }
    std::size_t operator*() const { return range_->watch_->finished_at(position_); }
    iterator& operator++() {
      range_->ensure(++position_);
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return it.position_ == it.range_->size(); }

   private:
    as_completed_range* range_ = nullptr;
    std::size_t position_ = 0;
  };

  iterator begin() { return iterator(this); }
  std::size_t size() const noexcept { return watch_->size(); }
  std::default_sentinel_t end() const noexcept { return {}; }

 private:
  // Makes position `i` available (or the end): waits for the next completion if needed.
  void ensure(std::size_t i) {
    completion_watch<R>& w = *watch_;
    while (i < w.size() && i >= w.finished()) {
      if (!w.await_next(until_)) {
        throw timeout_error("mproc::as_completed: timed out with " + std::to_string(w.size() - w.finished()) + " of " +
                            std::to_string(w.size()) + " results unfinished");
      }
    }
  }

  std::unique_ptr<completion_watch<R>> watch_;
  deadline until_;
};

}  // namespace mproc::detail
