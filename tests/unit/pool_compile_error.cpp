// Must not compile: a pool task that captures state. Built only by the ctest test
// unit.Pool.StatefulTaskFailsToCompileWithAHint, which expects mproc's message.
#include <mproc/pool.hpp>

int main() {
  mproc::pool p(1);
  int captured = 3;
  return p.apply([captured](int x) { return x + captured; }, 1);
}
