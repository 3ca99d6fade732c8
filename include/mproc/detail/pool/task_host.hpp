// What a task's state asks of the pool that runs it, whichever kind: worker processes
// (pool_core) or threads of this process (thread_pool_core). async_result, wait,
// as_completed and imap work the same over both.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <span>

#include "mproc/detail/os/function_ref.hpp"

namespace mproc::detail {

// The parent's side of one submitted task (or one chunk of a map). Exactly one of the two
// is called, once, by whichever thread dispatches results (the pool's result thread, or a
// thread in pump_results): never two at once, always in completion order.
class task_state {
 public:
  virtual ~task_state() = default;
  virtual void complete(std::span<const std::byte> result) noexcept = 0;
  virtual void fail(std::exception_ptr error) noexcept = 0;

  // The id submit() gave the task (0: never submitted as one task, as a map's own state),
  // for cancel() and running(). Set before submit() returns.
  std::uint64_t task_id() const noexcept { return task_id_; }
  void set_task_id(std::uint64_t id) noexcept { task_id_ = id; }

  // A limit on the task's run time in place of the pool's task_timeout (0: the pool's),
  // for a task whose submitter sets its own, as a remote client does. Set before submit().
  std::chrono::nanoseconds time_limit() const noexcept { return time_limit_; }
  void set_time_limit(std::chrono::nanoseconds limit) noexcept { time_limit_ = limit; }

 private:
  std::uint64_t task_id_ = 0;
  std::chrono::nanoseconds time_limit_{0};
};

class task_host {
 public:
  virtual ~task_host() = default;

  // A feed (a map's or an imap's chunks, submitted a window at a time) keeps the pool's
  // workers from retiring at close() until its last task: see pool_core::begin_feed.
  virtual void begin_feed() = 0;
  virtual void end_feed() noexcept = 0;
  // Cancels task `task` if it has not started: it never runs, and its state fails with
  // cancelled_error before this returns true.
  virtual bool cancel(std::uint64_t task) = 0;
  // Whether task `task` runs now.
  virtual bool running(std::uint64_t task) const noexcept = 0;
  // Runs `work` on the pool's callback thread (its result thread).
  virtual void post(std::function<void()> work) = 0;
  // For a thread blocked on a result: may move results along itself for up to `budget`.
  virtual void pump_results(function_ref<bool()> done, std::chrono::nanoseconds budget) = 0;
};

// Whether the calling thread is a pool's callback thread (where callbacks run); set by
// that thread for its lifetime.
inline bool& on_callback_thread() noexcept {
  thread_local bool is = false;
  return is;
}

}  // namespace mproc::detail
