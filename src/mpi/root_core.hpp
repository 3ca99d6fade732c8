// The root's pool in an MPI job: a task_sink over its own local pool and the other ranks'.
//
// Design:
// - Each task goes, as it is submitted, to the target (the local pool, or a rank) with the
//   lowest share of its window in use; with every window full it waits in a backlog on
//   the root, which each finished task draws from. So a slow rank holds only its window,
//   and a map's chunks spread as they finish.
// - Local tasks go to the local pool straight from the submitting thread. A communication
//   thread makes every MPI call after MPI_Init: it sends tasks and control words, and
//   receives results, which it hands to the local pool's result thread (pool_core::post),
//   so every state completes on one thread, in completion order, as in mproc::pool.
// - Task ids are the root's own; a local task's relay keeps its local pool's id for
//   cancel() and running(). A task sent to a rank counts as started.
// - join() waits for every task, then stops each rank (stop → stopped), so that no message
//   is in flight when MPI_Finalize runs; terminate() kills the local workers, tells the
//   ranks to kill theirs, and fails what was pending with closed_error.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "mpi/mpi_link.hpp"
#include "mproc/detail/pool/pool_core.hpp"
#include "mproc/detail/pool/registry.hpp"
#include "pool/remote_runner.hpp"

namespace mproc::detail {

class root_core final : public task_sink, public std::enable_shared_from_this<root_core> {
 public:
  // `rank_workers[r]`: the workers of rank r (0: the root's, that is local's). `window`:
  // tasks in flight per rank, 0 for automatic_window.
  root_core(std::shared_ptr<pool_core> local, const std::vector<unsigned>& rank_workers, unsigned window);
  ~root_core() override;  // terminate() and join() unless joined
  root_core(const root_core&) = delete;
  root_core& operator=(const root_core&) = delete;

  unsigned size() const noexcept override { return workers_; }
  std::uint32_t function_id(task_invoker invoker, generic_function function) override;
  void submit(std::uint32_t function_id, std::span<std::byte> message, std::shared_ptr<task_state> state,
              bool fed = false) override;
  void submit(task_function_ref function, std::span<std::byte> message, std::shared_ptr<task_state> state) override;
  void begin_feed() override;
  void end_feed() noexcept override;
  bool cancel(std::uint64_t task) override;
  void cancel_pending() override;
  bool running(std::uint64_t task) const noexcept override;
  void post(std::function<void()> work) override { local_->post(std::move(work)); }
  // A waiting thread may read the local pool's results itself, as with mproc::pool: the
  // local pool serialises that with its result thread, which also runs the completions of
  // other ranks' results (posted), so every state still completes one at a time.
  void pump_results(function_ref<bool()> done, std::chrono::nanoseconds budget) override {
    local_->pump_results(done, budget);
  }
  void close() override;
  void terminate() override;
  void join() override;

 private:
  // Enough in flight to cover a round trip to another rank many times over for small
  // tasks (tens of µs over TCP against ~1 µs of work), few enough that a burst's tail still
  // waits on the root, where it goes to whichever rank frees up first.
  static unsigned automatic_window(unsigned workers) noexcept { return 16 * workers + 16; }

  enum class phase { running, closed, terminated };
  static constexpr int queued = -1;  // entry::target of a task in the backlog

  struct remote_function {
    std::uint32_t invoker;
    std::uint32_t function;
    std::uint32_t local_id;
  };
  struct entry {
    std::shared_ptr<task_state> state;
    int target = queued;             // 0: the local pool; r: rank r
    std::uint32_t function_id = 0;   // while queued
    std::vector<std::byte> message;  // while queued
    std::uint64_t local_id = 0;      // the local pool's id, once known
  };
  // A local submit to make once the mutex is let go.
  struct local_submit {
    std::uint64_t id;
    std::uint32_t local_function;  // the local pool's function id
    std::vector<std::byte> message;
  };
  class relay;

  void submit_task(std::uint32_t function_id, std::span<std::byte> message, std::shared_ptr<task_state> state,
                   bool fed);
  // Where the next task goes: -1 when every window is full. Under mutex_.
  int pick_target() const noexcept;
  // Sends task `id` (its entry's message) to rank `target`, or readies its local submit.
  // Under mutex_.
  void dispatch_locked(std::uint64_t id, entry& e, int target, std::vector<local_submit>& local);
  // Moves backlog tasks into free windows. Under mutex_.
  void refill_locked(std::vector<local_submit>& local);
  // Task `id` into the local pool, through a relay that keeps the pool's id for cancel().
  void run_locally(std::uint64_t id, std::uint32_t local_function, std::span<std::byte> message);
  void submit_locally(std::vector<local_submit>& local) noexcept;
  // A task ended on `target`: its entry leaves, the backlog moves up.
  std::shared_ptr<task_state> finish(std::uint64_t id, std::vector<local_submit>& local);
  // finish, then the local submits it readied: the state to complete or fail (null when
  // cancelled or terminated meanwhile).
  std::shared_ptr<task_state> settle(std::uint64_t id) noexcept;
  void deliver_remote(const remote_result_header& header, std::vector<std::byte> reply);
  void fail_all_locked(std::vector<std::shared_ptr<task_state>>& failed);

  void communicate() noexcept;  // the communication thread
  void serve_link();

  std::shared_ptr<pool_core> local_;
  std::vector<unsigned> capacity_;  // per target: the window
  unsigned workers_ = 0;

  mutable std::mutex mutex_;
  std::condition_variable changed_;    // an entry left, a feed ended, the ranks stopped
  std::condition_variable wake_link_;  // the outbox has work, or stopping
  phase state_ = phase::running;
  unsigned feeds_ = 0;
  std::uint64_t next_id_ = 1;
  std::map<std::pair<std::uintptr_t, std::uintptr_t>, std::uint32_t> function_ids_;
  std::vector<remote_function> functions_;
  std::unordered_map<std::uint64_t, entry> entries_;
  std::deque<std::uint64_t> backlog_;
  std::vector<unsigned> in_flight_;  // per target
  struct outgoing {
    int rank;
    int tag;
    std::vector<std::byte> bytes;
  };
  std::vector<outgoing> outbox_;
  bool stopping_ = false;  // join/terminate: the link stops the ranks and ends
  bool link_ended_ = false;
  bool joined_ = false;

  mpi_link link_;
  std::thread link_thread_;
};

}  // namespace mproc::detail
