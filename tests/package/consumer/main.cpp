// Builds against mproc's public headers alone and runs one child process.
#include <cstdio>

#include <mproc/mproc.hpp>

int main() {
  mproc::process p([](int code) { std::printf("child says %d\n", code); }, 7);
  p.start();
  p.join();
  if (p.exitcode() != 0) return 1;
  std::printf("consumer ok\n");
  return 0;
}
