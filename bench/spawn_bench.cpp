// The `spawn` row of DESIGN.md's performance contract: start + join a process whose
// target returns at once, mproc::process against raw fork(2) + _exit(2) + waitpid(2), in
// the same program, so both fork the very same address space.
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
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iterator>
#include <string_view>

#include "mproc/process.hpp"

namespace {

struct options {
  int rounds = 7;
  int iterations = 200;
  int warmup = 20;
  int start_round = 0;
  int chunk = 50;
  std::string_view only;  // empty: every contender
};

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "spawn_bench: %s\n", what);
  std::exit(2);
}

[[noreturn]] void die_errno(const char* what) {
  std::fprintf(stderr, "spawn_bench: %s: %s\n", what, std::strerror(errno));
  std::exit(2);
}

[[noreturn]] void usage(int code) {
  std::fprintf(code == 0 ? stdout : stderr,
               "usage: mproc_spawn_bench [--rounds R] [--iterations N] [--chunk C] [--warmup W]\n"
               "                         [--start-round K] [--only raw_fork_waitpid|mproc]\n"
               "  R rounds (default 7); per round each contender runs N times (default 200), in\n"
               "  slices of C (default 50) that alternate between the contenders, after W untimed\n"
               "  warm-up runs each per invocation (default 20). Rounds are numbered from K\n"
               "  (default 0); even rounds start with raw fork+waitpid, odd ones with mproc.\n"
               "  --only runs one contender (for profiling it alone with perf or strace).\n"
               "Prints CSV: round,contender,per_op_us\n");
  std::exit(code);
}

int parse_int(std::string_view flag, const char* text, int min) {
  int value = 0;
  const std::string_view s(text);
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc{} || end != s.data() + s.size() || value < min) {
    std::fprintf(stderr, "spawn_bench: %.*s needs an integer >= %d, got '%s'\n", static_cast<int>(flag.size()),
                 flag.data(), min, text);
    usage(2);
  }
  return value;
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg(argv[i]);
    if (arg == "-h" || arg == "--help") usage(0);
    if (i + 1 >= argc) usage(2);
    const char* value = argv[++i];
    if (arg == "--rounds") {
      o.rounds = parse_int(arg, value, 1);
    } else if (arg == "--iterations") {
      o.iterations = parse_int(arg, value, 1);
    } else if (arg == "--warmup") {
      o.warmup = parse_int(arg, value, 0);
    } else if (arg == "--start-round") {
      o.start_round = parse_int(arg, value, 0);
    } else if (arg == "--chunk") {
      o.chunk = parse_int(arg, value, 1);
    } else if (arg == "--only") {
      o.only = value;
    } else {
      std::fprintf(stderr, "spawn_bench: unknown option '%s'\n", argv[i - 1]);
      usage(2);
    }
  }
  return o;
}

// The peer: the least a program can do to start and reap a child.
void raw_fork_waitpid() {
  const pid_t pid = ::fork();
  if (pid < 0) die_errno("fork");
  if (pid == 0) ::_exit(0);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) die_errno("waitpid");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("raw child did not exit with 0");
}

void returns_at_once() {}

// The subject, written as a user would.
void mproc_start_join() {
  mproc::process p(returns_at_once);
  p.start();
  p.join();
  if (p.exitcode() != 0) die("mproc child did not exit with 0");
}

struct contender {
  const char* name;
  void (*op)();
};

constexpr contender contenders[] = {
    {"raw_fork_waitpid", raw_fork_waitpid},
    {"mproc", mproc_start_join},
};

using clock_type = std::chrono::steady_clock;

bool selected(const contender& c, const options& o) { return o.only.empty() || o.only == c.name; }

// One round: every contender runs `iterations` times, in slices of `chunk` that alternate
// between the contenders (A B, B A, A B, ...), so that a burst of load elsewhere on the machine hits
// them alike. Returns each contender's mean time per operation, in microseconds.
std::array<double, std::size(contenders)> run_round(int round, const options& o) {
  constexpr std::size_t count = std::size(contenders);
  std::array<clock_type::duration, count> spent{};
  for (int done = 0, slice = 0; done < o.iterations; done += o.chunk, ++slice) {
    const int n = std::min(o.chunk, o.iterations - done);
    for (std::size_t k = 0; k < count; ++k) {
      // Even slices (of even rounds) run the contenders in table order, odd ones in reverse.
      const std::size_t i = (round + slice) % 2 == 0 ? k : count - 1 - k;
      if (!selected(contenders[i], o)) continue;
      const auto t0 = clock_type::now();
      for (int j = 0; j < n; ++j) contenders[i].op();
      spent[i] += clock_type::now() - t0;
    }
  }
  std::array<double, count> us{};
  for (std::size_t i = 0; i < count; ++i) {
    us[i] = std::chrono::duration<double, std::micro>(spent[i]).count() / o.iterations;
  }
  return us;
}

}  // namespace

int main(int argc, char** argv) {
  const options opts = parse(argc, argv);
  if (std::none_of(std::begin(contenders), std::end(contenders),
                   [&](const contender& c) { return selected(c, opts); })) {
    std::fprintf(stderr, "spawn_bench: no contender named '%.*s'\n", static_cast<int>(opts.only.size()),
                 opts.only.data());
    usage(2);
  }
  try {
    for (const contender& c : contenders) {
      if (!selected(c, opts)) continue;
      for (int i = 0; i < opts.warmup; ++i) c.op();
    }
    std::printf("round,contender,per_op_us\n");
    std::fflush(stdout);
    for (int r = opts.start_round; r < opts.start_round + opts.rounds; ++r) {
      const auto us = run_round(r, opts);
      for (std::size_t i = 0; i < std::size(contenders); ++i) {
        if (selected(contenders[i], opts)) std::printf("%d,%s,%.3f\n", r, contenders[i].name, us[i]);
      }
      std::fflush(stdout);  // the driver may read rounds as they come
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "spawn_bench: %s\n", e.what());
    return 2;
  }
  return 0;
}
