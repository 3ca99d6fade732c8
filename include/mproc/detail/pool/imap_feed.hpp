// An imap's input, read lazily: chunks go to the pool a window at a time (about two per
// worker), and the next is read and submitted as the iterating thread takes one, so an
// unbounded input works and memory stays flat. The input is read only on the thread that
// iterates (or calls pool::close(), which queues the rest), under the feed's mutex.
// Dropping the feed before its end cancels the chunks no worker has started.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "mproc/detail/os/held_range.hpp"
#include "mproc/detail/pool/imap_state.hpp"
#include "mproc/detail/pool/task_host.hpp"
#include "mproc/detail/wait/deadline.hpp"
#include "mproc/error.hpp"

namespace mproc::detail {

// What an imap result iterates, whatever its input's type.
template <class R>
class imap_reader {
 public:
  virtual ~imap_reader() = default;
  // The next chunk taken (submitting more input first); nullopt once every chunk was
  // taken. timeout_error when `until` passes first. The input's own exceptions propagate.
  virtual std::optional<typename imap_state<R>::chunk> next(deadline until) = 0;
};

// What pool::close() asks of a live imap: queue the rest of its input now, so that the
// workers' retirement goes behind it and join() does not wait for a reader.
class input_drain {
 public:
  virtual ~input_drain() = default;
  virtual void submit_rest() noexcept = 0;
};

// The imaps of one pool still alive, whose input close() queues (input_drain).
class live_feeds {
 public:
  void add(std::weak_ptr<input_drain> feed) {
    std::lock_guard lock(mutex_);
    std::erase_if(feeds_, [](const auto& f) { return f.expired(); });
    feeds_.push_back(std::move(feed));
  }
  // Queues the rest of every live feed's input, and forgets them.
  void drain_all() {
    std::vector<std::shared_ptr<input_drain>> live;
    {
      std::lock_guard lock(mutex_);
      for (const auto& f : feeds_) {
        if (auto feed = f.lock()) live.push_back(std::move(feed));
      }
      feeds_.clear();
    }
    for (const auto& feed : live) feed->submit_rest();
  }

 private:
  std::mutex mutex_;
  std::vector<std::weak_ptr<input_drain>> feeds_;
};

// `Range`: the input's type as imap received it (see held_range).
template <class R, class Range>
class imap_feed final : public imap_reader<R>, public input_drain {
  using T = std::remove_cvref_t<std::ranges::range_value_t<Range>>;
  using chunk = typename imap_state<R>::chunk;

 public:
  // Submits chunk `index` (its items) to the pool, to be delivered to `state`; returns the
  // task's id. Throws when it cannot (closed_error once the pool is gone, ...).
  using sender = std::function<std::uint64_t(std::size_t index, std::span<const T> items,
                                             const std::shared_ptr<imap_state<R>>& state)>;

  imap_feed(std::weak_ptr<task_host> core, sender send, Range&& input, std::size_t chunksize, std::size_t window,
            bool ordered)
      : core_(std::move(core)),
        send_(std::move(send)),
        input_(std::forward<Range>(input)),
        chunksize_(chunksize),
        window_(window),
        state_(std::make_shared<imap_state<R>>(ordered)) {}
  imap_feed(const imap_feed&) = delete;
  imap_feed& operator=(const imap_feed&) = delete;

  // Cancels the newest chunk first: a worker takes chunks oldest first, so cancelling in
  // that order would let it slip from each cancelled chunk into the next not yet cancelled.
  ~imap_feed() override {
    if (auto core = core_.lock()) {
      const auto tasks = state_->unconsumed_tasks();
      for (auto task = tasks.rbegin(); task != tasks.rend(); ++task) {
        try {
          core->cancel(*task);
        } catch (...) {  // a forked copy: the pool is its parent's
        }
      }
    }
    end_feed();
  }

  // Admits the feed (closed_error once the pool is closed) and submits the first window.
  void start() {
    auto core = core_.lock();
    if (!core) throw closed_error("mproc::pool::imap: the pool was terminated and takes no new tasks; make a new pool");
    core->begin_feed();
    std::lock_guard lock(mutex_);
    feeding_ = true;
    top_up();
  }

  std::optional<chunk> next(deadline until) override {
    {
      std::lock_guard lock(mutex_);
      top_up();
      if (outstanding_ == 0) return std::nullopt;
    }
    auto taken = state_->next(until);  // without the mutex: close() may need it meanwhile
    if (!taken) {
      throw timeout_error("mproc::imap_result::next: timed out before the next result; wait longer");
    }
    std::lock_guard lock(mutex_);
    --outstanding_;
    top_up();
    return taken;
  }

  void submit_rest() noexcept override {
    std::lock_guard lock(mutex_);
    try {
      while (!exhausted_) submit_next();
    } catch (...) {
      fail_input(std::current_exception());
    }
  }

 private:
  // Submits chunks until the window is full or the input ends; under mutex_.
  void top_up() {
    while (outstanding_ < window_ && !exhausted_) submit_next();
  }

  // Reads and submits the next chunk, or marks the input exhausted; under mutex_. A submit
  // that fails (the pool terminated, no memory) becomes that chunk's error, and the end.
  void submit_next() {
    auto& input = input_.get();
    if (!at_) at_.emplace(std::ranges::begin(input));
    items_.clear();
    while (items_.size() < chunksize_ && *at_ != std::ranges::end(input)) {
      items_.push_back(**at_);
      ++*at_;
    }
    if (items_.empty()) {
      exhausted_ = true;
      end_feed_locked();
      return;
    }
    const std::size_t index = state_->added();
    state_->add_chunk();
    ++outstanding_;
    try {
      state_->set_task(index, send_(index, std::span<const T>(items_), state_));
    } catch (...) {
      state_->chunk_failed(index, std::current_exception());
      exhausted_ = true;
      end_feed_locked();
    }
  }

  // The input threw while close() read it: that is the last chunk's error.
  void fail_input(std::exception_ptr error) noexcept {
    try {
      const std::size_t index = state_->added();
      state_->add_chunk();
      ++outstanding_;
      state_->chunk_failed(index, std::move(error));
    } catch (...) {
    }
    exhausted_ = true;
    end_feed_locked();
  }

  void end_feed_locked() noexcept {
    if (!feeding_) return;
    feeding_ = false;
    if (auto core = core_.lock()) core->end_feed();
  }
  void end_feed() noexcept {
    std::lock_guard lock(mutex_);
    end_feed_locked();
  }

  std::weak_ptr<task_host> core_;
  sender send_;
  held_range<Range> input_;
  std::size_t chunksize_;
  std::size_t window_;
  std::shared_ptr<imap_state<R>> state_;

  std::mutex mutex_;  // guards what follows, and the input
  std::optional<std::ranges::iterator_t<std::remove_reference_t<Range>>> at_;
  std::vector<T> items_;
  std::size_t outstanding_ = 0;  // chunks submitted and not taken
  bool exhausted_ = false;
  bool feeding_ = false;  // between begin_feed and end_feed
};

}  // namespace mproc::detail
