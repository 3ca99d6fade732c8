// The non-template core of mproc::pool: workers, scheduling and failure handling. The
// typed layer (pool.hpp) encodes arguments, decodes results and keeps the async results;
// this core moves opaque task and result bytes.
//
// Design:
// - At construction the parent forks a zygote, single-threaded, which forks every worker
//   (the first ones and each replacement), so a worker is never forked from the
//   multi-threaded parent. The zygote watches the parent through a pidfd and takes its
//   workers down when the parent dies, however it dies; workers die with the zygote
//   (PR_SET_PDEATHSIG), and ignore SIGINT.
// - Tasks go through one shared channel that idle workers take from; results come back
//   through another. A worker claims the task it takes in a shared slot, settled under the
//   channel's consumer lock (src/pool/task_claim.hpp), so when it dies the parent knows exactly
//   whether a task went with it (worker_lost, or timeout_error when the parent killed it
//   for task_timeout) or is still queued for another worker; the zygote replaces it.
// - A pool belongs to the process that made it: in a forked child its copy is inert (every
//   call throws mproc::error, destruction does nothing) and holds no descriptor.
// - A task names its function by an index into a table that only the parent writes (in
//   shared memory, read by the workers): a forged or corrupted message can name a wrong
//   index, which the worker rejects, never an address.
// - Completions, failures and callbacks run in completion order: dispatching results is
//   serialised, and callbacks run only on the pool's result thread. A thread blocked on a
//   result may read and dispatch results itself for a short while (pump_results): a
//   blocking round trip then makes two hand-offs, not three.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <typeinfo>
#include <vector>

#include "mproc/detail/os/function_ref.hpp"
#include "mproc/detail/os/type_name.hpp"
#include "mproc/detail/pool/task_sink.hpp"

namespace mproc::detail {

struct pool_config {
  unsigned processes = 0;
  std::function<void()> initializer;
  unsigned max_tasks_per_child = 0;
  std::chrono::milliseconds task_timeout{0};
};

class pool_core final : public task_sink {
 public:
  explicit pool_core(pool_config config);
  ~pool_core();  // terminate() unless joined
  pool_core(const pool_core&) = delete;
  pool_core& operator=(const pool_core&) = delete;

  unsigned size() const noexcept override;

  // The table index for (invoker, function), registering it on first use.
  std::uint32_t function_id(task_invoker invoker, generic_function function) override;

  // Queues a task: `message` is task_header_bytes of room, then the encoded arguments (so
  // they are copied once, into the channel). closed_error after close() or terminate(),
  // except for a `fed` task after close(): see begin_feed.
  void submit(std::uint32_t function_id, std::span<std::byte> message, std::shared_ptr<task_state> state,
              bool fed = false) override;
  // The same for a task of `function`, registered on first use as function_id() does it,
  // under the one lock a submit takes anyway (apply_async's path).
  void submit(task_function_ref function, std::span<std::byte> message, std::shared_ptr<task_state> state) override;

  // A feed submits the tasks of one call (a map's chunks) a window at a time, as earlier
  // ones finish, so the channels hold a few chunks whatever the input's size. Admitted
  // while the pool runs (else closed_error), a feed may go on submitting (`fed`) after
  // close(), which then puts the workers' retirement behind its last task: close() waits
  // for no feed, and join() waits for every feed to end. Each begin_feed needs exactly one
  // end_feed, after the feed's last submit (or when it gives up).
  void begin_feed() override;
  void end_feed() noexcept override;

  // Cancels task `task` if no worker has started it: it never runs, and its state fails
  // with cancelled_error (on the calling thread) before this returns true. False when it
  // started, finished, was cancelled already, or is not one this pool can cancel on its
  // own (submitted while task_board::size earlier tasks were unsettled).
  bool cancel(std::uint64_t task) override;
  // Takes every task still queued out of the task channel and fails each with
  // cancelled_error before returning; tasks that run finish.
  void cancel_pending() override;
  // Whether a worker runs task `task` now.
  bool running(std::uint64_t task) const noexcept override;

  // Runs `work` on the result thread, after what it is already doing (on the calling
  // thread once the pool has shut down).
  void post(std::function<void()> work) override;

  // For a thread blocked on a result: reads and dispatches results itself until `done` is
  // set or `budget` has passed, sparing the hand-off through the result thread. Returns at
  // once on the result thread, or for a zero budget. Results it dispatches complete on the
  // calling thread; callbacks still run on the result thread (task_state implementations
  // post them). Throws mproc::error in a process other than the pool's (a forked child).
  void pump_results(function_ref<bool()> done, std::chrono::nanoseconds budget) override;

  // Whether the calling thread is a pool's result thread.
  static bool on_result_thread() noexcept;

  void close() override;
  void terminate() override;
  void join() override;  // mproc::error unless closed or terminated

  struct impl;  // defined in src/pool/pool_impl.hpp

 private:
  std::unique_ptr<impl> impl_;
};

// Exceptions crossing from a worker: encoded by type name and message, recreated in the
// parent as their own type when it is a std or mproc type or registered, else remote_error.
void encode_current_exception(std::vector<std::byte>& out);
std::exception_ptr decode_exception(std::span<const std::byte> bytes);
void register_exception_factory(std::string type_name, std::exception_ptr (*make)(const std::string& what));

}  // namespace mproc::detail
