// Links mproc::mpi through mproc-mpi.pc; it starts a pool only when asked to (no mpirun here).
#include <cstdio>

#include <mproc/mpi.hpp>

int main(int argc, char** argv) {
  if (argc > 1) {
    mproc::mpi::pool pool(argc, argv);
    if (!pool) return 0;
  }
  std::printf("mpi consumer linked\n");
  return 0;
}
