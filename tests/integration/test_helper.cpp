// The misbehaving program that integration tests run: each mode plays one scenario that
// needs a whole program (its exit, its stdout), printed on stdout for the test to check.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "mproc/process.hpp"

namespace {

using namespace std::chrono_literals;

void print_line(const char* text) {
  std::printf("%s\n", text);
  std::fflush(stdout);
}

void sleep_then_report_finished() {
  std::this_thread::sleep_for(200ms);
  print_line("non-daemon finished");
}

// Python's exit rule: returning from main joins the non-daemon child and terminates the
// daemon one.
int exit_rule(bool stubborn_daemon) {
  mproc::process worker(sleep_then_report_finished);
  int ready[2];
  if (::pipe(ready) != 0) return 3;
  mproc::process daemon([stubborn_daemon, &ready] {
    if (stubborn_daemon) ::signal(SIGTERM, SIG_IGN);
    (void)::write(ready[1], "r", 1);
    for (;;) ::pause();
  });
  daemon.set_daemon(true);
  worker.start();
  daemon.start();
  char c;
  if (::read(ready[0], &c, 1) != 1) return 4;  // SIGTERM must not come before SIG_IGN
  std::printf("daemon %d\n", *daemon.pid());
  std::fflush(stdout);
  return 0;
}

// A running child whose process object is gone before main returns.
int destroyed_then_exit() {
  {
    mproc::process worker(sleep_then_report_finished);
    worker.start();
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "exit-rule") == 0) return exit_rule(false);
  if (argc == 2 && std::strcmp(argv[1], "stubborn-daemon") == 0) return exit_rule(true);
  if (argc == 2 && std::strcmp(argv[1], "destroyed-then-exit") == 0) return destroyed_then_exit();
  std::fprintf(stderr, "usage: %s exit-rule|stubborn-daemon|destroyed-then-exit\n", argv[0]);
  return 2;
}
