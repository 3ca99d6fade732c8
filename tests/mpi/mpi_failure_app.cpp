// The MPI job that mpi_failure_test.cpp starts under mpirun and breaks:
//   serve  every rank prints its pid, the root keeps every worker busy and prints "ready",
//          then waits until the test kills a rank;
//   check  the pool starts (or, built as the _other variant with one more registered
//          function, finds the ranks' tables differ) and runs one task.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "mproc/mpi.hpp"

namespace {

int nap(int seconds) {
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  return seconds;
}
MPROC_REMOTE(nap);

#ifdef MPROC_TEST_OTHER_BUILD
int only_in_the_other_build(int x) { return x; }
MPROC_REMOTE(only_in_the_other_build);
#endif

}  // namespace

int main(int argc, char** argv) {
  const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
  std::printf("rank %s pid %d\n", rank != nullptr ? rank : "?", static_cast<int>(::getpid()));
  std::fflush(stdout);
  const bool serve = argc > 1 && std::strcmp(argv[1], "serve") == 0;
  mproc::mpi::pool_options options;
  options.processes_per_rank = 2;
  try {
    mproc::mpi::pool pool(argc, argv, options);
    if (!pool) return 0;
    if (!serve) {
      std::printf("result %d\n", pool.apply(nap, 0));
      return 0;
    }
    std::vector<mproc::async_result<int>> busy;
    for (unsigned i = 0; i < pool.size(); ++i) busy.push_back(pool.apply_async(nap, 3600));
    std::printf("ready\n");
    std::fflush(stdout);
    for (auto& b : busy) b.get();
  } catch (const mproc::error& e) {
    std::fprintf(stderr, "rank %s: %s\n", rank != nullptr ? rank : "?", e.what());
    return 3;
  }
  return 0;
}
