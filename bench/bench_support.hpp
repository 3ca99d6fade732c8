// What every benchmark program of bench/ does alike, so that bench/compare.py can drive them
// all the same way (the Python peers share bench/bench_common.py):
// - the command line: `program` is the program's voice: die() reports a failure and exits
//   2, usage() prints the --help text, misuse() both; parse() reads "--flag VALUE" pairs
//   from a table of flags, round_options' own and the program's.
// - rounds: a round runs every contender over the same work, in sessions that alternate
//   between the contenders (slice_size, take_turns, run_round); --only picks one contender
//   (selected, any_selected, for_each_selected).
// - sessions: the checksum they fold their results into, what they measured and the figure
//   it makes (measured, metric, figure), the daemon child they fork (start_child).
// - the CSV on stdout: a header `round,contender,<metric>`, then one line per contender per
//   round (print_header, print_round; print_rounds for a row of measured sessions), flushed
//   per round: the driver may read rounds as they come.
//
// Contract: everything here runs in the program's main thread, in the parent process.
// die(), usage() and misuse() call std::exit: a forked child reports a failure through its
// exit code instead. Nothing here is timed: the helpers call the sessions, which own their
// clocks.
#pragma once

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "mproc/process.hpp"

namespace bench {

using clock_type = std::chrono::steady_clock;
using u64 = std::uint64_t;

// ---- the command line -----------------------------------------------------------------

// One flag of a program's table: "--name VALUE" stores VALUE in *target; an integer flag
// must be at least `min`.
struct flag {
  std::string_view name;
  std::variant<int*, long*, unsigned*, std::string_view*> target;
  long min = 0;
};

// The flags of the programs that measure rows (--row): which row, how many rounds of how
// many iterations in how many sessions, where round numbers start, and --only.
struct round_options {
  std::string_view row;
  int rounds = 7;
  long iterations = 0;  // 0: the row's default
  int slices = 0;       // 0: the program's or row's default
  int start_round = 0;
  std::string_view only;  // empty: every contender
};

// A program's name in its messages ("lock_bench: ...") and its --help text.
class program {
 public:
  constexpr program(const char* name, const char* usage) : name_(name), usage_(usage) {}

  // Prints "<name>: <what>" on stderr and exits with 2.
  [[noreturn]] void die(const std::string& what) const {
    std::fprintf(stderr, "%s: %s\n", name_, what.c_str());
    std::exit(2);
  }

  // die() with ": <strerror(errno)>" after `what`.
  [[noreturn]] void die_errno(const char* what) const { die(std::string(what) + ": " + std::strerror(errno)); }

  // Prints the usage text, on stdout for code 0 (--help) and on stderr otherwise, and exits
  // with `code`.
  [[noreturn]] void usage(int code) const {
    std::fputs(usage_, code == 0 ? stdout : stderr);
    std::exit(code);
  }

  // A command line that makes no sense: "<name>: <what>" and the usage text on stderr, exit 2.
  [[noreturn]] void misuse(const std::string& what) const {
    std::fprintf(stderr, "%s: %s\n", name_, what.c_str());
    usage(2);
  }

  // Reads argv[1..] as "--flag VALUE" pairs into the targets of `flags`, left to right.
  // -h or --help prints the usage text and exits 0; a flag without a value, a flag not in
  // the table and an integer that is malformed, out of its type's range or below its flag's
  // min exit through usage(2).
  void parse(int argc, char** argv, std::initializer_list<flag> flags) const {
    parse(argc, argv, std::span<const flag>(flags.begin(), flags.size()));
  }

  // parse() of round_options' flags (--row, --rounds >= 1, --iterations >= 1, --slices >= 1,
  // --start-round >= 0, --only) and the program's own, `more`.
  void parse(int argc, char** argv, round_options& o, std::initializer_list<flag> more = {}) const {
    std::vector<flag> flags = {
        {"--row", &o.row},          {"--rounds", &o.rounds, 1},           {"--iterations", &o.iterations, 1},
        {"--slices", &o.slices, 1}, {"--start-round", &o.start_round, 0}, {"--only", &o.only}};
    flags.insert(flags.end(), more);
    parse(argc, argv, std::span<const flag>(flags));
  }

 private:
  void parse(int argc, char** argv, std::span<const flag> flags) const {
    for (int i = 1; i < argc; ++i) {
      const std::string_view arg(argv[i]);
      if (arg == "-h" || arg == "--help") usage(0);
      if (i + 1 >= argc) usage(2);
      const char* value = argv[++i];
      const auto f = std::find_if(flags.begin(), flags.end(), [&](const flag& g) { return g.name == arg; });
      if (f == flags.end()) misuse("unknown option '" + std::string(arg) + "'");
      std::visit([&](auto* target) { store(*f, value, *target); }, f->target);
    }
  }

  template <class T>
  void store(const flag& f, const char* text, T& target) const {
    if constexpr (std::is_same_v<T, std::string_view>) {
      target = text;
    } else {
      T value{};
      const std::string_view s(text);
      const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
      if (ec != std::errc{} || end != s.data() + s.size() || std::cmp_less(value, f.min)) {
        misuse(std::string(f.name) + " needs an integer >= " + std::to_string(f.min) + ", got '" + text + "'");
      }
      target = value;
    }
  }

  const char* name_;
  const char* usage_;
};

// ---- rounds ---------------------------------------------------------------------------

// Whether --only (empty: every contender) picks the contender named `name`.
inline bool selected(std::string_view only, std::string_view name) { return only.empty() || only == name; }

// Calls f(i) for each contender `only` selects, in table order. Contenders are anything
// indexable with a `name` member.
template <class Contenders, class F>
void for_each_selected(const Contenders& contenders, std::string_view only, F f) {
  for (std::size_t i = 0; i < std::size(contenders); ++i) {
    if (selected(only, contenders[i].name)) f(i);
  }
}

// Whether `only` selects any of `contenders`.
template <class Contenders>
bool any_selected(const Contenders& contenders, std::string_view only) {
  return std::any_of(std::begin(contenders), std::end(contenders),
                     [&](const auto& c) { return selected(only, c.name); });
}

// The row --row names, in a program whose rows have `name`, `iterations`, `warmup`,
// `slices` and `contenders`: fills in what the options left to the row (iterations, warm-up,
// sessions per round) and checks the rest; misuse or die with the reason otherwise.
template <class Rows, class Options>
const auto& select_row(const Rows& rows, Options& opts, const program& p, long max_iterations) {
  const auto found = std::find_if(std::begin(rows), std::end(rows), [&](const auto& r) { return opts.row == r.name; });
  if (found == std::end(rows)) {
    std::string names;
    for (const auto& r : rows) names += (names.empty() ? "" : ", ") + std::string(r.name);
    p.misuse("--row must be one of " + names);
  }
  const auto& r = *found;
  if (opts.iterations == 0) opts.iterations = r.iterations;
  if (opts.warmup < 0) opts.warmup = r.warmup;
  if (opts.slices == 0) opts.slices = r.slices;
  opts.slices = static_cast<int>(std::min<long>(opts.slices, opts.iterations));
  if (opts.iterations > max_iterations) p.die("--iterations: at most " + std::to_string(max_iterations));
  if (!any_selected(r.contenders, opts.only))
    p.die("row " + std::string(r.name) + " has no contender named '" + std::string(opts.only) + "'");
  return r;
}

// How many of `total` iterations session `slice` of `slices` runs: an even split, the first
// sessions taking one more each until the remainder is used up.
constexpr long slice_size(long total, int slices, int slice) {
  return total / slices + (slice < total % slices ? 1 : 0);
}

// Session `slice` of round `round`: calls f(i) for each contender `only` selects, in table
// order when round + slice is even and in reverse when it is odd (A B, B A, A B, ...), so
// that rounds alternate which contender starts too. Neither contender always runs on the
// caches and scheduler state the other left, and a burst of load elsewhere on the machine
// hits them alike.
template <class Contenders, class F>
void take_turns(const Contenders& contenders, std::string_view only, int round, int slice, F f) {
  const std::size_t count = std::size(contenders);
  for (std::size_t k = 0; k < count; ++k) {
    const std::size_t i = (round + slice) % 2 == 0 ? k : count - 1 - k;
    if (selected(only, contenders[i].name)) f(i);
  }
}

// Round `round`: o.iterations split into o.slices sessions per contender, taking turns.
// session(i, slice, n) runs contender i over n iterations and returns what it measured;
// the result holds, per contender, the sum over its sessions (Result{} for one o.only
// leaves out).
template <class Result, class Contenders, class Session>
std::vector<Result> run_round(const Contenders& contenders, const round_options& o, int round, Session session) {
  std::vector<Result> total(std::size(contenders));
  for (int slice = 0; slice < o.slices; ++slice) {
    const long n = slice_size(o.iterations, o.slices, slice);
    take_turns(contenders, o.only, round, slice, [&](std::size_t i) { total[i] += session(i, slice, n); });
  }
  return total;
}

// ---- sessions ------------------------------------------------------------------------

// An order-sensitive checksum of 64-bit words (FNV-1a), which a session folds its results
// into and compares with the expected one.
struct checksum {
  u64 h = 0xcbf2'9ce4'8422'2325ULL;
  void add(u64 v) { h = (h ^ v) * 0x100'0000'01b3ULL; }
};

// What a session measured: `units` (tasks, messages, bytes, round trips, ...) in `elapsed`.
struct measured {
  clock_type::duration elapsed{};
  double units = 0;

  measured& operator+=(const measured& m) {
    elapsed += m.elapsed;
    units += m.units;
    return *this;
  }
};

// How a row turns what was measured into its figure.
enum class metric {
  rate,       // units per second
  bandwidth,  // 10^9 units per second
  latency,    // microseconds per unit
};

inline double figure(metric kind, const measured& m) {
  const double seconds = std::chrono::duration<double>(m.elapsed).count();
  switch (kind) {
    case metric::rate:
      return m.units / seconds;
    case metric::bandwidth:
      return m.units / seconds / 1e9;
    case metric::latency:
      break;
  }
  return seconds * 1e6 / m.units;
}

// A child (a daemon, so that a parent that dies mid-session takes it along) running `body`.
template <class F>
mproc::process start_child(F body) {
  mproc::process p(std::move(body));
  p.set_daemon(true);
  p.start();
  return p;
}

// ---- the CSV --------------------------------------------------------------------------

inline void print_header(const char* metric_name) {
  std::printf("round,contender,%s\n", metric_name);
  std::fflush(stdout);
}

// Round `round`'s lines, `round,contender,figure_of(i)` for each contender i `only`
// selects, in table order; `format` is the figure's printf conversion (e.g. "%.6g").
template <class Contenders, class FigureOf>
void print_round(const Contenders& contenders, std::string_view only, int round, const char* format,
                 FigureOf figure_of) {
  for_each_selected(contenders, only, [&](std::size_t i) {
    char figure_text[64];
    std::snprintf(figure_text, sizeof figure_text, format, figure_of(i));
    std::printf("%d,%s,%s\n", round, contenders[i].name, figure_text);
  });
  std::fflush(stdout);
}

// The CSV of a row of a program that measures several (--row): the header, then rounds
// o.start_round, ... of run_round, each contender's figure(r.kind, ...) printed with "%.6g".
// session(i, round, slice, n) runs contender i of `r` over n iterations. A Row has a name,
// a metric_name (the CSV column), a kind (metric) and contenders.
template <class Row, class Session>
void print_rounds(const Row& r, const round_options& o, Session session) {
  print_header(r.metric_name);
  for (int round = o.start_round; round < o.start_round + o.rounds; ++round) {
    const std::vector<measured> total = run_round<measured>(
        r.contenders, o, round, [&](std::size_t i, int slice, long n) { return session(i, round, slice, n); });
    print_round(r.contenders, o.only, round, "%.6g", [&](std::size_t i) { return figure(r.kind, total[i]); });
  }
}

}  // namespace bench
