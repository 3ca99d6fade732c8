// mproc::mpi::pool — the pool on an MPI job (Open MPI under mpirun or Slurm's srun), as
// mpi4py.futures, without its hangs. Target mproc::mpi.
//
// Contract:
// - Collective: every rank constructs the pool, first thing in main (before any other MPI
//   call; the constructor calls MPI_Init). Rank 0 (the root) runs the program: the pool is
//   true there. Every other rank serves tasks inside the constructor until the root's pool
//   ends, then the constructor returns a false pool: `if (!pool) return 0;`.
// - Each rank runs a local mproc::pool (processes_per_rank workers; its zygote is forked
//   before MPI_Init), the root's too. Tasks go to the least loaded rank, at most `window`
//   in flight on each (0: 16 per worker of that rank, plus 16); the rest wait on the root. A map's
//   chunks spread the same way.
// - The API and its behaviour are mproc::pool's: apply, apply_async, map, map_async,
//   starmap, starmap_async, imap, imap_unordered, cancel_pending, close, terminate, join,
//   async_result with callbacks (on the root), exceptions by type, wait/as_completed.
//   Differences: a task already sent to another rank counts as started (cancel() is false,
//   running() true); worker_lost from another rank keeps its message, not its exitcode().
// - Functions cross by name (the registry, <mproc/detail/pool/registry.hpp>): a lambda
//   without captures or a function object registers itself; a function pointer needs
//   MPROC_REMOTE(f) at namespace scope, else submitting it throws mproc::error. Every rank
//   must run the same build of the binary: the constructor compares the tables' hashes and
//   throws mproc::error on every rank, naming the ranks and hosts that differ.
// - A task argument or map item that holds a queue, pipe end, lock, event or shared value
//   fails to compile: it names this machine's memory.
// - Failures: a task that crashes or is killed is worker_lost inside its rank's pool, and
//   the run goes on; task_timeout works as in mproc::pool. Open MPI is fail-stop: a rank
//   that dies (SIGKILL, a node lost) ends the whole job within seconds, with mpirun's
//   message naming the rank, and the local pools' processes die with their ranks.
// - `mpirun -np 1 ./app` and a plain `./app` act as a local pool.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "mproc/detail/mpi/mpi_session.hpp"
#include "mproc/detail/pool/remote_pool_api.hpp"
#include "mproc/error.hpp"
#include "mproc/pool.hpp"

namespace mproc::mpi {

struct pool_options {
  unsigned processes_per_rank = 0;            // workers of each rank's local pool; 0: cpu_count() there
  std::chrono::milliseconds task_timeout{0};  // 0: none
  unsigned max_tasks_per_child = 0;           // 0: unlimited
  unsigned window = 0;                        // tasks in flight per rank; 0: automatic
};

class pool : public detail::remote_pool_api<pool> {
 public:
  pool(int& argc, char**& argv, pool_options options = {})
      : session_(
            std::make_unique<detail::mpi_session>(argc, argv,
                                                  detail::mpi_settings{options.processes_per_rank, options.task_timeout,
                                                                       options.max_tasks_per_child, options.window})) {
    if (session_->is_root()) root_.emplace(detail::pool_over{session_->sink()});
  }
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;
  // On the root: closes and joins the pool (every rank ends its serving), then
  // MPI_Finalize. Never throws.
  ~pool() {
    root_.reset();
    session_->finish();
  }

  // True on the root only, which runs the program.
  explicit operator bool() const noexcept { return session_->is_root(); }
  int ranks() const noexcept { return session_->ranks(); }
  unsigned size() const noexcept { return session_->workers(); }
  // apply, apply_async, map, map_async, starmap, starmap_async, imap, imap_unordered,
  // cancel_pending, close, terminate, join: remote_pool_api, on the root only.

 private:
  friend class detail::remote_pool_api<pool>;
  mproc::pool& target(const char* call) {
    if (!root_)
      throw error(std::string("mproc::mpi::pool::") + call +
                  ": only the root (rank 0) submits; on other ranks the pool served tasks and ended in its "
                  "constructor: return when `!pool`");
    return *root_;
  }

  std::unique_ptr<detail::mpi_session> session_;
  std::optional<mproc::pool> root_;
};

}  // namespace mproc::mpi
