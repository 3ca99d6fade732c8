// The non-template core of mproc::thread_pool: threads of this process that run queued
// jobs, and one callback thread. A job runs the task and settles its state itself, so a
// result costs no serialisation and no hand-off; the callbacks still run on the callback
// thread, in completion order, as with the process pool.
//
// Cancellation is exact without shared memory: a queued job is either taken by a thread
// or removed by cancel(), under one mutex. Threads cannot be killed: terminate() fails
// the queued jobs with closed_error and lets running ones finish; there is no
// task_timeout and no crash isolation (a task that crashes takes the program with it).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

#include "mproc/detail/pool/task_host.hpp"

namespace mproc::detail {

class thread_pool_core final : public task_host {
 public:
  thread_pool_core(unsigned threads, std::function<void()> initializer);
  ~thread_pool_core() override;  // terminate() and join() unless joined
  thread_pool_core(const thread_pool_core&) = delete;
  thread_pool_core& operator=(const thread_pool_core&) = delete;

  unsigned size() const noexcept;

  // Queues `job`, which runs the task and settles `state` (whose id this sets); `state`
  // fails instead if the job is cancelled or the pool terminated first. closed_error after
  // close() or terminate(), except for a `fed` job after close() (see begin_feed).
  void submit(std::shared_ptr<task_state> state, std::function<void()> job, bool fed = false);

  void begin_feed() override;
  void end_feed() noexcept override;
  bool cancel(std::uint64_t task) override;
  bool running(std::uint64_t task) const noexcept override;
  void post(std::function<void()> work) override;
  // Nothing to move along: the threads settle the states themselves.
  void pump_results(function_ref<bool()>, std::chrono::nanoseconds) override {}

  void cancel_pending();
  void close();
  void terminate();
  void join();  // mproc::error unless closed or terminated

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace mproc::detail
