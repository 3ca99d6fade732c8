// The parent's side of one task: the state an async_result waits on, filled once on the
// result thread, and the callbacks that run there.
#pragma once

#include <atomic>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mproc/detail/os/type_name.hpp"
#include "mproc/detail/pool/completion_waiter.hpp"
#include "mproc/detail/pool/task_host.hpp"
#include "mproc/detail/wait/deadline.hpp"
#include "mproc/detail/wait/futex_word.hpp"
#include "mproc/detail/wait/wait_probe.hpp"
#include "mproc/detail/wait/word_mutex.hpp"
#include "mproc/error.hpp"
#include "mproc/serialize.hpp"

namespace mproc::detail {

inline void report_callback_error(std::exception_ptr error) noexcept {
  std::string line = "mproc: a pool callback threw ";
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    line += demangled_name(typeid(e)) + ": " + e.what();
  } catch (...) {
    line += "an exception not derived from std::exception";
  }
  line += "\n";
  std::fputs(line.c_str(), stderr);
}

template <class R>
struct callback_for {
  using type = std::function<void(const R&)>;
};
template <>
struct callback_for<void> {
  using type = std::function<void()>;
};

template <class R>
struct value_box {
  std::optional<R> value;
};
template <>
struct value_box<void> {};

// What an async_result waits on: filled once, on the result thread. Its state is one
// futex word: a task costs no condition variable to make, destroy or broadcast, and a
// result that is in is read with one load. The mutex is taken only by then(), by the
// waits on many results and by a finish that has callbacks to run or waiters to tell; what
// they add lives apart (extras), made on first use. So a state with its control block
// fits in 128 bytes: a burst of N tasks makes N of them, and the memory of a first burst
// is new to the process, each page of it zeroed by the kernel as it is first touched.
template <class R>
class async_state : public task_state {
 public:
  using callback = typename callback_for<R>::type;
  using error_callback = std::function<void(std::exception_ptr)>;

  explicit async_state(std::weak_ptr<task_host> core) : core_(std::move(core)) {}

  void complete(std::span<const std::byte> bytes) noexcept override {
    try {
      if constexpr (std::is_void_v<R>) {
        set_value();
      } else {
        set_value(decode_message<R>(bytes, "mproc::async_result::get"));
      }
    } catch (...) {
      set_error(std::current_exception());
    }
  }
  void fail(std::exception_ptr error) noexcept override { set_error(std::move(error)); }

  template <class... V>
  void set_value(V&&... v) noexcept {
    try {
      if constexpr (!std::is_void_v<R>) box_.value.emplace(std::forward<V>(v)...);
    } catch (...) {
      error_ = std::current_exception();
    }
    finish();
  }
  void set_error(std::exception_ptr error) noexcept {
    error_ = std::move(error);
    finish();
  }

  // A blocking apply() usually gets its answer within microseconds: read the results for a
  // short while on this thread before sleeping, since a hand-off through the result thread
  // and a wake cost more than the whole round trip. In a forked child, which the result
  // can never reach, this throws mproc::error (the pool is its parent's).
  void pump(std::chrono::nanoseconds budget) {
    if (!ready()) {
      if (auto core = core_.lock()) core->pump_results([this] { return ready(); }, budget);
    }
  }
  // Each of wait, wait_until and ready looks at the word first: a result already in, the
  // common case when a burst's results are read back, costs one load.
  void wait() {
    if (ready()) return;
    pump(std::chrono::microseconds(50));
    sleep_until_published(deadline::never());
  }
  bool wait_until(deadline until) {
    if (ready()) return true;
    pump(std::min<std::chrono::nanoseconds>(until.left(), std::chrono::microseconds(50)));
    return sleep_until_published(until);
  }
  bool ready() const noexcept { return (word_.load(std::memory_order_acquire) & published) != 0; }

  // For mproc::wait_ready: ready once published; slept on as wait() sleeps, on the word.
  wait_probe probe() noexcept {
    return {
        .object = this,
        .ready = [](void* s) noexcept { return static_cast<async_state*>(s)->ready(); },
        .word = &word_,
        .arm = [](void* s,
                  std::uint32_t& expected) noexcept { return static_cast<async_state*>(s)->mark_sleeper(expected); }};
  }

  // async_result::cancel: only a task no worker has started (pool_core::cancel). Returns
  // once the state is published, its callbacks run (on the result thread), as Python's
  // Future.cancel() returns with the future done.
  bool cancel() {
    if (ready()) return false;
    auto core = core_.lock();
    if (!core || !core->cancel(task_id())) return false;
    sleep_until_published(deadline::never());
    return true;
  }
  bool running() const {
    if (ready()) return false;
    auto core = core_.lock();
    return core && core->running(task_id());
  }
  // Whether it failed with cancelled_error (a cancel, or cancel_pending for a map's chunk).
  bool cancelled() const noexcept {
    if (!ready() || !error_) return false;
    try {
      std::rethrow_exception(error_);
    } catch (const cancelled_error&) {
      return true;
    } catch (...) {
      return false;
    }
  }
  // Valid once ready.
  std::exception_ptr error() const { return error_; }
  // Moves the value out, for a caller that is the state's only user.
  R take_value() {
    if constexpr (!std::is_void_v<R>) return std::move(*box_.value);
  }
  decltype(auto) value() const {
    if constexpr (!std::is_void_v<R>) return static_cast<const R&>(*box_.value);
  }

  // `self` owns this state: the state keeps it while callbacks wait, so that they can be
  // handed to the result thread however the state is dropped meanwhile.
  void add_callbacks(const std::shared_ptr<async_state>& self, callback on_value, error_callback on_error) {
    {
      std::lock_guard lock(extras_mutex_);
      // Marked under the mutex and only while unpublished, so that finish either sees the
      // mark (and takes the mutex, after the callback is in) or has published already.
      std::uint32_t w = word_.load(std::memory_order_acquire);
      while ((w & published) == 0) {
        extras& e = extras_locked();
        e.callbacks.reserve(e.callbacks.size() + 1);  // what may throw, before the mark
        if (word_.compare_exchange_weak(w, w | has_callbacks, std::memory_order_acq_rel)) {
          e.callbacks.emplace_back(std::move(on_value), std::move(on_error));
          if (!e.keep_alive) e.keep_alive = self;
          return;
        }
      }
    }
    // Already finished: run it on the result thread if the pool still runs, else now.
    auto run = [self, on_value = std::move(on_value), on_error = std::move(on_error)] {
      self->run_one(on_value, on_error);
    };
    if (auto core = core_.lock()) {
      try {
        core->post(run);
        return;
      } catch (...) {
      }
    }
    run();
  }

  // Tells `waiter` `index` once the state is published, on the thread that publishes it;
  // false (and no notice) when it is published already.
  bool add_waiter(std::shared_ptr<completion_waiter> waiter, std::size_t index) {
    std::lock_guard lock(extras_mutex_);
    std::uint32_t w = word_.load(std::memory_order_acquire);
    while ((w & published) == 0) {
      std::vector<std::pair<std::shared_ptr<completion_waiter>, std::size_t>>& waiters = extras_locked().waiters;
      waiters.reserve(waiters.size() + 1);  // what may throw, before the mark
      if (word_.compare_exchange_weak(w, w | has_waiters, std::memory_order_acq_rel)) {
        waiters.emplace_back(std::move(waiter), index);
        return true;
      }
    }
    return false;
  }
  // Forgets `waiter` (one that stops waiting before the state is published).
  void remove_waiter(const completion_waiter* waiter) noexcept {
    std::lock_guard lock(extras_mutex_);
    if (extras_) std::erase_if(extras_->waiters, [&](const auto& entry) { return entry.first.get() == waiter; });
  }

 private:
  static constexpr std::uint32_t published = 1;      // value or error set, callbacks run
  static constexpr std::uint32_t has_callbacks = 2;  // extras_->callbacks holds some (set under the mutex)
  static constexpr std::uint32_t sleepers = 4;       // a thread sleeps on the word
  static constexpr std::uint32_t has_waiters = 8;    // extras_->waiters holds some (set under the mutex)

  void notify_waiters() noexcept {
    std::vector<std::pair<std::shared_ptr<completion_waiter>, std::size_t>> now;
    {
      std::lock_guard lock(extras_mutex_);
      if (extras_) now.swap(extras_->waiters);
    }
    for (const auto& [waiter, index] : now) waiter->notify(index);
  }

  // Marks a sleeper on the word, so that finish() wakes it: false when published already,
  // else the word's value to sleep on.
  bool mark_sleeper(std::uint32_t& expected) noexcept {
    std::uint32_t w = word_.load(std::memory_order_acquire);
    for (;;) {
      if ((w & published) != 0) return false;
      if ((w & sleepers) != 0 || word_.compare_exchange_weak(w, w | sleepers, std::memory_order_acq_rel)) {
        expected = w | sleepers;
        return true;
      }
    }
  }

  bool sleep_until_published(deadline until) {
    for (;;) {
      std::uint32_t w = 0;
      if (!mark_sleeper(w)) return true;
      if (!futex_wait(word_, w, until)) return ready();
    }
  }

  void run_one(const callback& on_value, const error_callback& on_error) const noexcept {
    try {
      if (error_) {
        if (on_error) on_error(error_);
      } else if (on_value) {
        if constexpr (std::is_void_v<R>) {
          on_value();
        } else {
          on_value(*box_.value);
        }
      }
    } catch (...) {
      report_callback_error(std::current_exception());
    }
  }

  // Runs the callbacks (those added meanwhile too), then publishes and wakes the sleepers.
  // Callbacks run on the result thread: a thread that dispatched this result while pumping
  // hands them over, with the rest of finishing.
  void finish() noexcept {
    // The reference add_callbacks left, held while callbacks run here; released when this
    // returns, after the last use of the state.
    std::shared_ptr<async_state> keep;
    for (;;) {
      std::uint32_t w = word_.load(std::memory_order_acquire);
      if ((w & has_callbacks) == 0) {
        if (!word_.compare_exchange_weak(w, w | published, std::memory_order_acq_rel)) continue;
        if ((w & sleepers) != 0) futex_wake(word_, INT_MAX);
        if ((w & has_waiters) != 0) notify_waiters();
        return;
      }
      std::vector<std::pair<callback, error_callback>> now;
      {
        std::lock_guard lock(extras_mutex_);
        if (extras_) {
          now.swap(extras_->callbacks);
          if (!keep) keep = std::move(extras_->keep_alive);
          extras_->keep_alive.reset();
        }
        word_.fetch_and(~has_callbacks, std::memory_order_acq_rel);
      }
      if (!on_callback_thread() && hand_to_result_thread(now, keep)) return;
      for (const auto& [on_value, on_error] : now) run_one(on_value, on_error);
    }
  }

  // Posts `callbacks` and the rest of finishing to the result thread, with a reference to
  // `self` (this state) that keeps it until then; false (and `callbacks` untouched) if the
  // pool is gone or `self` is empty.
  bool hand_to_result_thread(std::vector<std::pair<callback, error_callback>>& callbacks,
                             std::shared_ptr<async_state>& self) noexcept {
    auto core = core_.lock();
    if (!self || !core) return false;
    try {
      auto owned = std::make_shared<std::vector<std::pair<callback, error_callback>>>(std::move(callbacks));
      try {
        core->post([self, owned] {
          for (const auto& [on_value, on_error] : *owned) self->run_one(on_value, on_error);
          self->finish();
        });
      } catch (...) {
        callbacks = std::move(*owned);
        return false;
      }
      return true;
    } catch (...) {
      return false;
    }
  }

  // What then() and the waits on many results add; under extras_mutex_.
  struct extras {
    std::vector<std::pair<callback, error_callback>> callbacks;
    std::vector<std::pair<std::shared_ptr<completion_waiter>, std::size_t>> waiters;
    // While callbacks wait: the state itself (add_callbacks), so that finish can post them
    // to the result thread with an owner. Not enable_shared_from_this: its weak count cost
    // every task three atomic read-modify-writes to make and free the state, for the few
    // that have callbacks.
    std::shared_ptr<async_state> keep_alive;
  };
  extras& extras_locked() {
    if (!extras_) extras_ = std::make_unique<extras>();
    return *extras_;
  }

  std::weak_ptr<task_host> core_;
  std::atomic<std::uint32_t> word_{0};
  word_mutex extras_mutex_;
  std::exception_ptr error_;
  value_box<R> box_;
  std::unique_ptr<extras> extras_;
};

// With the shared_ptr's control block (24 bytes with the arena's allocator) within the
// arena's 128-byte class.
static_assert(sizeof(async_state<int>) <= 96);

}  // namespace mproc::detail
