// Must not compile: the mistakes a Python user makes first in C++, each chosen by a macro.
// Built only by the ctest tests unit.Teaching.*, which expect the one line that names the
// fix (see tests/unit/CMakeLists.txt).
#include <mproc/pipe.hpp>
#include <mproc/pool.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>

namespace {
void read_end(mproc::connection) {}
void read_end_by_reference(mproc::connection&) {}
int count_items(mproc::queue<int>& q) { return static_cast<int>(q.qsize()); }
}  // namespace

int main() {
  auto [a, b] = mproc::pipe();
  mproc::pool p(1);
  mproc::queue<int> q;
#if defined(MPROC_MOVE_ONLY_TO_PROCESS)
  mproc::process child(read_end, a);
#elif defined(MPROC_MOVE_ONLY_TO_TASK)
  p.apply(read_end, a);
#elif defined(MPROC_PROCESS_TARGET_BY_REFERENCE)
  mproc::process child(read_end_by_reference, std::move(a));
#elif defined(MPROC_TASK_BY_REFERENCE)
  p.apply(count_items, q);
#elif defined(MPROC_NUMBER_TIMEOUT)
  q.get(0.5);
#endif
  return 0;
}
