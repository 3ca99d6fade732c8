// The parent's side of one task: the state an async_result waits on, filled once on the
// result thread, and the callbacks that run there.
#pragma once

#include <condition_variable>
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
#include "mproc/detail/pool/pool_core.hpp"
#include "mproc/detail/wait/deadline.hpp"
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

// What an async_result waits on: filled once, on the result thread.
template <class R>
class async_state : public task_state, public std::enable_shared_from_this<async_state<R>> {
 public:
  using callback = typename callback_for<R>::type;
  using error_callback = std::function<void(std::exception_ptr)>;

  explicit async_state(std::weak_ptr<pool_core> core) : core_(std::move(core)) {}

  void complete(std::span<const std::byte> bytes) noexcept override {
    try {
      if constexpr (std::is_void_v<R>) {
        set_value();
      } else {
        set_value(from_bytes<R>(bytes));
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
  // and a condition-variable wake cost more than the whole round trip. In a forked child,
  // which the result can never reach, this throws mproc::error (the pool is its parent's).
  void pump(std::chrono::nanoseconds budget) {
    if (!published_.load(std::memory_order_acquire)) {
      if (auto core = core_.lock()) core->pump_results(published_, budget);
    }
  }
  // Each of wait, wait_until and ready looks at published_ first: a result already in,
  // the common case when a burst's results are read back, costs no lock.
  void wait() {
    if (published_.load(std::memory_order_acquire)) return;
    pump(std::chrono::microseconds(50));
    std::unique_lock lock(mutex_);
    ready_cv_.wait(lock, [&] { return ready_; });
  }
  bool wait_until(deadline until) {
    if (published_.load(std::memory_order_acquire)) return true;
    pump(std::min<std::chrono::nanoseconds>(until.left(), std::chrono::microseconds(50)));
    std::unique_lock lock(mutex_);
    if (until.is_never()) {
      ready_cv_.wait(lock, [&] { return ready_; });
      return true;
    }
    return ready_cv_.wait_until(lock, until.when(), [&] { return ready_; });
  }
  bool ready() const { return published_.load(std::memory_order_acquire); }
  // Valid once ready.
  std::exception_ptr error() const { return error_; }
  // Moves the value out, for a caller that is the state's only user.
  R take_value() {
    if constexpr (!std::is_void_v<R>) return std::move(*box_.value);
  }
  decltype(auto) value() const {
    if constexpr (!std::is_void_v<R>) return static_cast<const R&>(*box_.value);
  }

  void add_callbacks(callback on_value, error_callback on_error) {
    {
      std::lock_guard lock(mutex_);
      if (!ready_ && !finished_) {
        callbacks_.emplace_back(std::move(on_value), std::move(on_error));
        return;
      }
    }
    // Already finished: run it on the result thread if the pool still runs, else now.
    auto self = this->weak_from_this().lock();
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

 private:
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

  // Runs the callbacks (those added meanwhile too), then wakes the waiters. Callbacks run
  // on the result thread: a thread that dispatched this result while pumping hands them
  // over, with the rest of finishing.
  void finish() noexcept {
    for (;;) {
      std::vector<std::pair<callback, error_callback>> now;
      {
        std::lock_guard lock(mutex_);
        if (callbacks_.empty()) {
          finished_ = true;
          ready_ = true;
          published_.store(true, std::memory_order_release);
        } else {
          now.swap(callbacks_);
        }
      }
      if (now.empty()) {
        ready_cv_.notify_all();  // after unlocking: a woken waiter must not block on mutex_
        return;
      }
      if (!pool_core::on_result_thread() && hand_to_result_thread(now)) return;
      for (const auto& [on_value, on_error] : now) run_one(on_value, on_error);
    }
  }

  // Posts `callbacks` and the rest of finishing to the result thread; false (and `callbacks`
  // untouched) if the pool is gone.
  bool hand_to_result_thread(std::vector<std::pair<callback, error_callback>>& callbacks) noexcept {
    auto self = this->weak_from_this().lock();
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

  std::weak_ptr<pool_core> core_;
  mutable std::mutex mutex_;
  std::condition_variable ready_cv_;
  bool ready_ = false;
  std::atomic<bool> published_{false};  // ready_, readable without the mutex
  bool finished_ = false;
  std::exception_ptr error_;
  value_box<R> box_;
  std::vector<std::pair<callback, error_callback>> callbacks_;
};

}  // namespace mproc::detail
