// mproc::process — Python's multiprocessing.Process.
//
// Contract:
// - `process(target, args...)` copies (decays) the callable and its arguments into the
//   object; `start()` forks, and the child calls `run()`, which invokes
//   `std::move(target)(std::move(args)...)`. Any callable works, as with std::thread, since
//   fork copies it into the child. Or subclass and override `run()`. After start() the
//   parent's object drops its copy of the target and arguments, as Python does, so that it
//   does not keep the child's ends of pipes open.
// - The child ends with exit code 0 when run() returns, 1 when an exception escapes it
//   (after printing `process <name> (pid N): <type>: <what>` to stderr), or whatever code
//   it passes to exit()/_exit(). Before it ends, the child joins its own non-daemon
//   children and terminates its daemon ones, and flushes its standard streams.
// - No zombies: an ended child is reaped by join, is_alive, exitcode or
//   active_children(), or by the runtime. Destroying a `process` whose child still runs
//   hands the child to the runtime, which reaps it when it ends. At normal program exit
//   (return from main, std::exit) daemon children get SIGTERM, then SIGKILL after one
//   second, and non-daemon children are joined, as in Python.
// - A daemon child also dies when its parent dies, even by SIGKILL (PR_SET_PDEATHSIG).
//   Linux delivers that signal when the *thread* that called start() ends, so start
//   daemon processes from a thread that lives as long as they should. Non-daemon
//   children may be orphaned and adopted by init, as the tutorial describes.
// - Only the process that called start() may join, poll or signal the child; elsewhere
//   (a forked copy of the object) those calls throw mproc::error.
// - Misuse throws mproc::error: start() twice, set_daemon() after start(), join(),
//   terminate(), kill() or sentinel() before start(). OS failures (fork under
//   RLIMIT_NPROC, ...) throw std::system_error and leave the object unstarted.
// - Thread safety: distinct objects are independent. One object may be joined, polled and
//   signalled from several threads at once; start(), set_name() and set_daemon() must not
//   race with other calls on the same object.
// - mproc needs SIGCHLD left at its default (or a handler that does not reap mproc's
//   children). With SIGCHLD set to SIG_IGN the kernel reaps children itself and their
//   exit codes are lost: exitcode() then throws mproc::error.
// - `process(mproc::forkserver, target, args...)` (needs <mproc/forkserver.hpp>, which
//   <mproc/mproc.hpp> includes) starts the child from the forkserver instead of forking the
//   caller: see forkserver.hpp for what the target and arguments may be. Every member
//   behaves as above, except that the child's parent in the kernel's eyes is the server,
//   so the child's exit status reaches this object through the server.
// - Children are managed through pidfds. Where pidfd_open(2) is missing (Linux < 5.3,
//   valgrind) mproc falls back to the pid, with the same behaviour, except that a child
//   reaped outside mproc (above) may have its pid reused before a later terminate() or
//   kill() sends to it. MPROC_FORCE_NO_PIDFD=1 in the environment forces the fallback
//   (a test hook).
#pragma once

#include <chrono>
#include <concepts>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mproc/detail/wait/duration.hpp"
#include "mproc/detail/wait/wait_probe.hpp"
#include "mproc/error.hpp"
#include "mproc/types.hpp"

namespace mproc {

// Python's forkserver start method: the tag that selects it (see <mproc/forkserver.hpp>).
struct forkserver_t {
  explicit constexpr forkserver_t() = default;
};
inline constexpr forkserver_t forkserver{};

struct process_info;

namespace detail {

class child_record;

// How start() makes a child other than by fork(2) of the caller: the forkserver's client
// (pool layer, <mproc/forkserver.hpp>) implements it, so this layer needs no registry.
class child_starter {
 public:
  virtual ~child_starter() = default;
  // Starts the child, which runs as `name` with parent `parent`; the record returned is
  // started (set_started) and not yet tracked. Throws as start() does.
  virtual std::shared_ptr<child_record> start(const std::string& name, bool daemon, const process_info& parent) = 0;
};

// Defined for Tag = forkserver_t by <mproc/forkserver.hpp>; a program that did not include
// it stops here, with the remedy.
template <class Tag, class F, class... A>
struct forkserver_target {
  static_assert(sizeof(Tag) == 0,
                "mproc::process(mproc::forkserver, ...): #include <mproc/forkserver.hpp> (or <mproc/mproc.hpp>)");
  template <class... B>
  static std::unique_ptr<child_starter> make(B&&...) {
    return nullptr;
  }
};

struct target_base {
  virtual ~target_base() = default;
  virtual void invoke() = 0;
};

template <class F, class... A>
struct target final : target_base {
  template <class G, class... B>
  explicit target(G&& g, B&&... b) : fn(std::forward<G>(g)), args(std::forward<B>(b)...) {}
  void invoke() override {
    std::apply([this](A&... a) { std::invoke(std::move(fn), std::move(a)...); }, args);
  }
  F fn;
  std::tuple<A...> args;
};

}  // namespace detail

// What current_process() and parent_process() return.
struct process_info {
  std::string name;  // "MainProcess" for a program not started by mproc
  pid_t pid = 0;
  bool daemon = false;
};

class process {
 public:
  // A process whose run() does nothing until a subclass overrides it.
  process();

  // A process that calls target(args...) in the child.
  // A mistake in the target or its arguments fails to compile with one line naming the fix.
  template <class F, class... A>
    requires(!std::is_base_of_v<process, std::remove_cvref_t<F>> &&
             !std::is_same_v<std::remove_cvref_t<F>, forkserver_t>)
  explicit process(F&& target, A&&... args) : process(make_target(std::forward<F>(target), std::forward<A>(args)...)) {}

  // A process whose child comes from the forkserver and calls target(args...) there. The
  // target is found there by name and the arguments travel serialised: the rules are in
  // <mproc/forkserver.hpp>; a target or argument that cannot travel fails to compile, and a
  // function pointer not registered with MPROC_REMOTE throws mproc::error here.
  template <class F, class... A>
  explicit process(forkserver_t, F&& target, A&&... args)
      : process(detail::forkserver_target<forkserver_t, std::decay_t<F>, std::decay_t<A>...>::make(
            std::forward<F>(target), std::forward<A>(args)...)) {}

  // Moving transfers the child; a moved-from object may only be destroyed or assigned to.
  // Assigning over a started object hands its child to the runtime, as destruction does.
  process(process&&) noexcept;
  process& operator=(process&&) noexcept;
  process(const process&) = delete;
  process& operator=(const process&) = delete;

  // Never blocks and never throws: a running child is handed to the runtime.
  virtual ~process();

  // Forks the child, which calls run(). Does not wait. Throws mproc::error if already
  // started, std::system_error if fork(2) fails (the object is then unchanged).
  void start();

  // In the child: calls the target given to the constructor, if any.
  virtual void run();

  // Blocks until the child ends, and reaps it.
  void join();
  // Blocks at most `timeout`; true when the child has ended (and is reaped).
  template <detail::duration D>
  bool join(D timeout) {
    return join_for(detail::to_nanoseconds(timeout));
  }

  // Never blocks; reaps the child if it has ended. False before start().
  bool is_alive();

  // SIGTERM / SIGKILL. No effect once the child has ended; never hits a recycled pid
  // (without pidfds: unless the child was reaped outside mproc, see the contract above).
  void terminate();
  void kill();

  // nullopt before start() and while running; the exit code once ended; -N when killed
  // by signal N. Never blocks; reaps the child if it has ended.
  std::optional<int> exitcode();

  // nullopt before start().
  std::optional<pid_t> pid() const;

  // Default "process-N", N counting the processes made in this program.
  const std::string& name() const;
  void set_name(std::string name);

  // A daemon child is terminated at normal exit and killed when its parent dies.
  // set_daemon() after start(): mproc::error.
  bool daemon() const;
  void set_daemon(bool daemon);

  // A file descriptor that becomes readable when the child ends, for poll/select: its
  // pidfd, or where the kernel (or valgrind) has no pidfds, a pipe that reaches end of
  // file then. Owned by the object: do not close it. Before start(): mproc::error.
  int sentinel() const;

 private:
  // For mproc::wait_ready: ready once the child has ended (its sentinel is readable).
  friend detail::wait_probe mproc_wait_probe(process& p) { return {.fd = p.sentinel()}; }

  template <class F, class... A>
  static std::unique_ptr<detail::target_base> make_target(F&& target, A&&... args) {
    constexpr bool copyable = (std::is_constructible_v<std::decay_t<A>, A&&> && ...);
    constexpr bool callable = std::invocable<std::decay_t<F>, std::decay_t<A>...>;
    static_assert(copyable,
                  "mproc::process: an argument is a move-only handle (a connection): pass it with std::move(...), "
                  "which hands it to the child");
    static_assert(!copyable || callable || !std::invocable<std::decay_t<F>&, std::decay_t<A>&...>,
                  "mproc::process: the target takes an argument by non-const reference, but the child gets its own "
                  "copy of each argument: take it by value (a handle still names the same queue, pipe or lock) or "
                  "by const&");
    static_assert(!copyable || callable || std::invocable<std::decay_t<F>&, std::decay_t<A>&...>,
                  "mproc::process: the target cannot be called with these arguments");
    if constexpr (copyable && callable) {
      return std::make_unique<detail::target<std::decay_t<F>, std::decay_t<A>...>>(std::forward<F>(target),
                                                                                   std::forward<A>(args)...);
    } else {
      return nullptr;
    }
  }

  explicit process(std::unique_ptr<detail::target_base> target);
  explicit process(std::unique_ptr<detail::child_starter> starter);
  bool join_for(std::chrono::nanoseconds timeout);
  [[noreturn]] void run_in_child(const process_info& parent) noexcept;
  void start_elsewhere(const process_info& parent);

  struct impl;
  impl& state() const;
  std::unique_ptr<impl> impl_;
};

// The calling process: its name, pid and daemon flag.
process_info current_process();

// The process that started this one through mproc::process; nullopt otherwise.
std::optional<process_info> parent_process();

// The pids of this process's running children; reaps the ones that have ended.
std::vector<pid_t> active_children();

// CPUs this process may run on (its affinity mask), at least 1.
unsigned cpu_count();

}  // namespace mproc
