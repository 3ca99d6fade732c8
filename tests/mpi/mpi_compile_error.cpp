// Must not compile: a handle sent to a pool on other machines, as a task argument or
// (MPROC_HANDLES_AS_MAP_ITEMS) inside map items. Built only by the ctest tests
// mpi.HandleAsATaskArgumentFailsToCompile and mpi.HandlesInMapItemsFailToCompile.
#include <vector>

#include <mproc/mpi.hpp>
#include <mproc/queue.hpp>

int main(int argc, char** argv) {
  mproc::mpi::pool pool(argc, argv);
  if (!pool) return 0;
#ifdef MPROC_HANDLES_AS_MAP_ITEMS
  std::vector<std::pair<int, mproc::queue<int>>> items(3);
  pool.map([](std::pair<int, mproc::queue<int>> item) { return item.first; }, items);
#else
  mproc::queue<int> results;
  pool.apply([](mproc::queue<int> q, int x) { q.put(x); }, results, 1);
#endif
}
