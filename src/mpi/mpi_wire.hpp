// What the ranks of an mproc::mpi job say to each other: one MPI message per task, result
// or control word, its kind in the MPI tag. Tasks and results are the remote runner's
// (src/pool/remote_runner.hpp).
#pragma once

#include <cstdint>

namespace mproc::detail::mpi_wire {

enum tag : int {
  task = 1,       // root → rank: a remote_task_header, then the task's bytes
  result = 2,     // rank → root: a remote reply
  stop = 3,       // root → rank: finish the tasks, then answer stopped
  terminate = 4,  // root → rank: kill the workers now, then answer stopped
  stopped = 5,    // rank → root: nothing more will come from this rank
};

// What every rank tells the others at start: its table hash, workers, pid and host.
struct rank_facts {
  std::uint64_t table_hash;
  std::uint32_t workers;
  std::int32_t pid;
  std::uint32_t usable_cpus;  // in this rank's CPU affinity
  std::uint32_t online_cpus;  // on its node
  char host[64];
};

}  // namespace mproc::detail::mpi_wire
