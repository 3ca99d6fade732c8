// What the ranks of an mproc::mpi job say to each other: one MPI message per task, result
// or control word, its kind in the MPI tag. A task is the local pool's message with its
// 16-byte header room holding the task's id and its function as registry indices; a
// result starts with the id and whether the task succeeded.
#pragma once

#include <cstdint>

namespace mproc::detail::mpi_wire {

enum tag : int {
  task = 1,       // root → rank: task_header, then the task's bytes
  result = 2,     // rank → root: result_header, then the result or the encoded exception
  stop = 3,       // root → rank: finish the tasks, then answer stopped
  terminate = 4,  // root → rank: kill the workers now, then answer stopped
  stopped = 5,    // rank → root: nothing more will come from this rank
};

struct task_header {
  std::uint64_t id;
  std::uint32_t invoker;   // function_table index
  std::uint32_t function;  // function_table index, or function_table::no_function
};
static_assert(sizeof(task_header) == 16, "fills the room task_sink leaves");

struct result_header {
  std::uint64_t id;
  std::uint64_t failed;  // 1: the bytes are an encoded exception
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
