// The non-template part of mproc::mpi::pool: MPI's start and end, the check that every
// rank runs the same function table, and on each rank either the root's pool (a task_sink
// over this rank's workers and the other ranks') or the loop that serves the root.
#pragma once

#include <chrono>
#include <memory>

#include "mproc/detail/pool/task_sink.hpp"

namespace mproc::detail {

struct mpi_settings {
  unsigned processes_per_rank = 0;
  std::chrono::milliseconds task_timeout{0};
  unsigned max_tasks_per_child = 0;
  unsigned window = 0;
};

class mpi_session {
 public:
  // Collective over MPI_COMM_WORLD: this rank's local pool (its zygote forked before
  // MPI_Init), MPI_Init, the table check (mproc::error on every rank, naming the ranks and
  // hosts that differ). On a rank other than 0 it then serves tasks until the root's pool
  // ends, and returns with MPI finalised.
  mpi_session(int& argc, char**& argv, const mpi_settings& settings);
  ~mpi_session();  // finish()
  mpi_session(const mpi_session&) = delete;
  mpi_session& operator=(const mpi_session&) = delete;

  bool is_root() const noexcept;
  int ranks() const noexcept;
  unsigned workers() const noexcept;  // in all ranks
  // The root's pool; null on other ranks.
  std::shared_ptr<task_sink> sink() const noexcept;
  // On the root, once its pool has joined: the ranks are told to end, then MPI_Finalize.
  // Idempotent.
  void finish() noexcept;

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace mproc::detail
