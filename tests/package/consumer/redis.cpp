// Links mproc::redis through mproc-redis.pc; it serves only when asked to (no server here).
#include <cstdio>

#include <mproc/redis.hpp>

int main(int argc, char**) {
  if (argc > 1) mproc::redis::serve({});
  std::printf("redis consumer linked\n");
  return 0;
}
