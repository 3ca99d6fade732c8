// The `spawn` row of DESIGN.md's performance contract: start + join a process whose
// target returns at once, mproc::process against raw fork(2) + _exit(2) + waitpid(2), in
// the same program, so both fork the very same address space. With --row forkserver-spawn
// (issue 17): mproc::process from the forkserver beside the plain mproc::process (Python's
// forkserver is bench/spawn.py --start-method forkserver).
//
// Output (stdout), CSV, one line per contender per round after a header:
//   round,contender,per_op_us
// per_op_us is the mean over --iterations back-to-back start+join operations. Within a
// round the contenders take turns in slices of --chunk operations (A B B A A B ...), and
// rounds alternate which one starts, so that neither always runs on the caches and
// scheduler state the other left, and a burst of load elsewhere hits both alike.
// --start-round lets a driver that runs one round per invocation (bench/compare.py) keep
// the alternation and the numbering going.
//
// Note on fairness: once mproc's runtime exists it has registered pthread_atfork handlers,
// which glibc's fork() also runs for the raw contender. They only take a mutex in the
// parent and walk an (empty) registry in the child, well under a microsecond.
// The program is linked with -z now (bench/CMakeLists.txt) so that no child pays for lazy
// binding of _exit(2), which would pad both contenders alike.
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <exception>
#include <iterator>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bench_support.hpp"
#include "mproc/forkserver.hpp"
#include "mproc/process.hpp"

namespace {

using bench::clock_type;

constexpr bench::program program{"spawn_bench",
                                 "usage: mproc_spawn_bench [--rounds R] [--iterations N] [--chunk C] [--warmup W]\n"
                                 "                         [--start-round K] [--row spawn|forkserver-spawn]\n"
                                 "                         [--only raw_fork_waitpid|mproc|mproc_forkserver]\n"
                                 "  R rounds (default 7); per round each contender runs N times (default 200), in\n"
                                 "  slices of C (default 50) that alternate between the contenders, after W untimed\n"
                                 "  warm-up runs each per invocation (default 20). Rounds are numbered from K\n"
                                 "  (default 0); even rounds start with raw fork+waitpid, odd ones with mproc.\n"
                                 "  --only runs one contender (for profiling it alone with perf or strace).\n"
                                 "Prints CSV: round,contender,per_op_us\n"};

struct options {
  int rounds = 7;
  int iterations = 200;
  int warmup = 20;
  int start_round = 0;
  int chunk = 50;
  std::string_view only;  // empty: every contender
  std::string_view row = "spawn";
};

options parse(int argc, char** argv) {
  options o;
  program.parse(argc, argv,
                {{"--rounds", &o.rounds, 1},
                 {"--iterations", &o.iterations, 1},
                 {"--warmup", &o.warmup, 0},
                 {"--start-round", &o.start_round, 0},
                 {"--chunk", &o.chunk, 1},
                 {"--only", &o.only},
                 {"--row", &o.row}});
  return o;
}

// The peer: the least a program can do to start and reap a child.
void raw_fork_waitpid() {
  const pid_t pid = ::fork();
  if (pid < 0) program.die_errno("fork");
  if (pid == 0) ::_exit(0);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) program.die_errno("waitpid");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) program.die("raw child did not exit with 0");
}

void returns_at_once() {}

// The subject, written as a user would.
void mproc_start_join() {
  mproc::process p(returns_at_once);
  p.start();
  p.join();
  if (p.exitcode() != 0) program.die("mproc child did not exit with 0");
}

// The same from the forkserver (started by the warm-up runs, as Python's is by its own).
void mproc_forkserver_start_join() {
  mproc::process p(mproc::forkserver, returns_at_once);
  p.start();
  p.join();
  if (p.exitcode() != 0) program.die("mproc forkserver child did not exit with 0");
}

struct contender {
  const char* name;
  void (*op)();
};

constexpr contender spawn_contenders[] = {
    {"raw_fork_waitpid", raw_fork_waitpid},
    {"mproc", mproc_start_join},
};

constexpr contender forkserver_contenders[] = {
    {"mproc", mproc_start_join},
    {"mproc_forkserver", mproc_forkserver_start_join},
};

// One round: every contender runs `iterations` times, in slices of `chunk` that take turns
// (bench::take_turns). Returns each contender's mean time per operation, in microseconds.
std::vector<double> run_round(std::span<const contender> contenders, int round, const options& o) {
  const std::size_t count = contenders.size();
  std::vector<clock_type::duration> spent(count);
  for (int done = 0, slice = 0; done < o.iterations; done += o.chunk, ++slice) {
    const int n = std::min(o.chunk, o.iterations - done);
    bench::take_turns(contenders, o.only, round, slice, [&](std::size_t i) {
      const auto t0 = clock_type::now();
      for (int j = 0; j < n; ++j) contenders[i].op();
      spent[i] += clock_type::now() - t0;
    });
  }
  std::vector<double> us(count);
  for (std::size_t i = 0; i < count; ++i) {
    us[i] = std::chrono::duration<double, std::micro>(spent[i]).count() / o.iterations;
  }
  return us;
}

}  // namespace

MPROC_REMOTE(returns_at_once);

int main(int argc, char** argv) {
  const options opts = parse(argc, argv);
  if (opts.row != "spawn" && opts.row != "forkserver-spawn") {
    program.misuse("no row named '" + std::string(opts.row) + "'");
  }
  const std::span<const contender> contenders =
      opts.row == "spawn" ? std::span<const contender>(spawn_contenders) : forkserver_contenders;
  if (!bench::any_selected(contenders, opts.only)) {
    program.misuse("no contender named '" + std::string(opts.only) + "'");
  }
  try {
    bench::for_each_selected(contenders, opts.only, [&](std::size_t i) {
      for (int j = 0; j < opts.warmup; ++j) contenders[i].op();
    });
    bench::print_header("per_op_us");
    for (int r = opts.start_round; r < opts.start_round + opts.rounds; ++r) {
      const auto us = run_round(contenders, r, opts);
      bench::print_round(contenders, opts.only, r, "%.3f", [&](std::size_t i) { return us[i]; });
    }
  } catch (const std::exception& e) {
    program.die(e.what());
  }
  return 0;
}
