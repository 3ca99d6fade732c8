// Must not compile: a pool task that captures state (a lambda with captures, or a
// std::function with MPROC_STD_FUNCTION_TASK). Built only by the ctest tests
// unit.Pool.CapturingLambdaFailsToCompileNamingPartial and
// unit.Pool.StdFunctionFailsToCompileNamingPartial, which expect mproc's message.
#include <functional>

#include <mproc/pool.hpp>

int main() {
  mproc::pool p(1);
  int captured = 3;
#ifdef MPROC_STD_FUNCTION_TASK
  std::function<int(int)> f = [captured](int x) { return x + captured; };
  return p.apply(f, 1);
#else
  return p.apply([captured](int x) { return x + captured; }, 1);
#endif
}
