// The parent's state of one pool, and the work of its two threads. What each part does is
// in its own file:
//   pool_core.cpp     the API: construction, submit, feeds, close, terminate, join
//   result_thread.cpp the result thread: reads results, completes tasks, runs posted work
//   monitor.cpp       the monitor thread: the zygote's reports, deaths, timeouts
//   zygote.cpp        the zygote process, which forks and reaps the workers
//   worker.cpp        a worker process: take a task, run it, post its result
//
// A pool belongs to the process that made it (`owner`). A forked child's copy is inert:
// its threads, zygote and workers are the parent's. Using it there would interleave its
// task ids with the parent's in the shared channels (the parent would take the child's
// results for its own) and wait for results no thread reads, so every call throws; its
// descriptors are closed at the fork, so a `process` child holds none of them.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "mproc/detail/ipc/channel.hpp"
#include "mproc/detail/pool/pool_core.hpp"
#include "os/fd.hpp"
#include "os/fork_local.hpp"
#include "pool/pending_tasks.hpp"
#include "pool/submitted_tasks.hpp"
#include "pool/task_board.hpp"
#include "pool/task_claim.hpp"
#include "pool/wire.hpp"
#include "process/child_handle.hpp"
#include "process/runtime.hpp"
#include "shm/shared_memory.hpp"
#include "wait/biased_mutex.hpp"

namespace mproc::detail {

struct pool_core::impl final : fork_local {
  pool_config config;
  unsigned processes = 0;
  pid_t owner = current_pid();
  process_info owner_info;  // what parent_process() says in a worker

  std::unique_ptr<shared_memory> control_memory;
  control_block* control = nullptr;
  std::unique_ptr<channel> tasks;
  std::unique_ptr<channel> results;
  std::optional<task_claims> claims;  // `processes` slots, after the control block
  std::optional<task_board> board;    // after the claims

  pid_t zygote_pid = 0;
  child_handle zygote;
  unique_fd zygote_socket;
  unique_fd monitor_wake;  // eventfd

  struct worker_info {
    pid_t pid = 0;
    unique_fd pidfd;  // passed by the zygote; empty without pidfd support (see kill_worker)
  };

  // Submitting threads hold `submit_mutex`, never `mutex`: a submit must not wait for the
  // result thread, which holds `mutex` to file results (submitted_tasks.hpp says why). Who
  // takes both takes `submit_mutex` first. Biased to the thread that made the pool, the
  // one that submits in most programs: its lock and unlock are then plain stores, where
  // each atomic read-modify-write cost a submit some 20 cycles.
  biased_mutex submit_mutex;  // guards the fields down to `mutex`
  // The next task's id; ids count from 1, so this less 1 is how many were submitted.
  // Written under `submit_mutex` with plain stores (no read-modify-write per submit), read
  // anywhere.
  std::atomic<std::uint64_t> next_task{1};
  unsigned feeds = 0;           // begun and not ended (pool_core::begin_feed)
  bool sentinels_owed = false;  // close() came while feeds ran: the last one puts them
  std::map<std::pair<std::uintptr_t, std::uintptr_t>, std::uint32_t> function_ids;
  // The last function looked up, and its id: (invoker, function) is never (0, 0).
  std::pair<std::pair<std::uintptr_t, std::uintptr_t>, std::uint32_t> last_function{};
  submitted_tasks submitted;  // produced under `submit_mutex`, consumed under `mutex`
  // Written under both mutexes, so read under either.
  enum class phase { running, closed, terminated } state = phase::running;
  std::atomic<std::uint64_t> settled{0};  // tasks through complete/fail, or never queued
  // The shortest of the tasks' own time limits (task_state::time_limit) so far, 0: none
  // yet: the monitor checks the running tasks at least this often.
  std::atomic<std::int64_t> shortest_task_limit_ns{0};

  std::mutex mutex;       // guards everything below
  pending_tasks pending;  // through pending_locked(), which takes in `submitted` first
  unsigned retired = 0;
  std::vector<worker_info> workers;
  std::deque<std::function<void()>> posted;
  std::condition_variable in_flight_changed;  // in_flight() fell to 0, or retired changed
  std::condition_variable result_thread_cv;   // posted work, helpers gone, or stop
  bool monitor_stop = false;
  // The result thread's reasons to leave its read of the results channel, read there
  // without the mutex (get's stop_waiting); whoever sets one calls results->wake_consumers().
  std::atomic<bool> result_stop{false};
  std::atomic<bool> work_posted{false};         // `posted` is not empty
  std::atomic<bool> result_thread_gone{false};  // posted work then runs on the posting thread
  bool shut_down = false;

  // Whoever reads the results channel and dispatches what it reads holds `reader`: the
  // result thread, or a caller blocked in get() (pump_results), which saves the hop
  // through the result thread. Dispatching under it keeps completions in channel order.
  std::mutex reader;
  std::atomic<unsigned> helpers{0};  // callers in pump_results; the result thread steps aside

  std::thread result_thread;
  std::thread monitor_thread;

  ~impl() { runtime::instance().unregister_fork_local(this); }

  // mproc::error unless the calling process made the pool.
  void check_owner(const char* call) const;
  // Tasks submitted and not yet settled.
  std::uint64_t in_flight() const noexcept {
    return next_task.load(std::memory_order_acquire) - 1 - settled.load(std::memory_order_acquire);
  }
  // Under `mutex`: every pending task, those just submitted too.
  pending_tasks& pending_locked();
  // Under `mutex`: takes task `id` out of the pending ones (null when it is not pending),
  // and frees its word on the task board unless it was cancelled.
  std::shared_ptr<task_state> settle_locked(std::uint64_t id);
  // The table index of `function`, registering it on first use; under `submit_mutex`.
  std::uint32_t function_id_locked(task_function_ref function);
  // pool_core::submit, with the function's id or the function to look it up for.
  void submit(std::variant<std::uint32_t, task_function_ref> function, std::span<std::byte> message,
              std::shared_ptr<task_state> task, bool fed);
  void forget_in_fork_child() noexcept override;

  // --- result_thread.cpp ---
  void put_result(const result_header& header, std::span<const std::byte> payload = {});
  static void deliver(task_state& state, const result_header& header, std::span<const std::byte> payload);
  void mark_done(std::size_t count);  // `count` tasks left flight: completed or failed
  void run_posted();
  static bool& on_result_thread();
  bool read_results(deadline until);
  bool result_thread_called_away() const noexcept;
  void result_loop();
  void pump_results(function_ref<bool()> done, std::chrono::nanoseconds budget);
  void post_work(std::function<void()> work);
  void fail_all(std::vector<std::shared_ptr<task_state>> failed, const std::string& why);
  void fail_all(std::vector<std::shared_ptr<task_state>> failed, std::exception_ptr error);

  // --- monitor.cpp ---
  void request(command_kind kind, std::uint32_t slot = 0);
  void monitor_loop();
  void on_report(const report& r, int passed_fd);
  void on_worker_exit(const report& r);
  bool settle_dead_worker(std::uint32_t slot, std::int32_t exitcode);
  void on_spawn_failed(std::uint32_t slot, int err);
  std::vector<std::shared_ptr<task_state>> take_queued_tasks();
  void fail_queued_tasks(std::exception_ptr error);
  void put_sentinel();
  int enforce_timeouts();
  void zygote_lost();
  void wake_monitor();
  void shut_down_threads();
  static void kill_worker(const worker_info& w);
};

}  // namespace mproc::detail
