// mproc::forkserver — Python's forkserver start method:
//   mproc::process p(mproc::forkserver, work, 1, std::string("x"));
//
// Contract:
// - The child is forked from a server that never inherited the caller's threads or locks:
//   the program's own binary (/proc/self/exe) re-executed in server mode, which takes over
//   in a static initializer of mproc, before main, and never returns to main. It is started
//   on first use, from the calling thread (posix_spawn, so no lock of the caller is copied),
//   and serves every later start of this process. A lock another thread holds forever
//   cannot hang a forkserver child, as it can a plain fork's.
// - Static initialisers of the program that run before mproc's (those of its own object
//   files, which precede libmproc.a on the link line) run in the server too, as in any
//   exec: keep them free of side effects outside the process (no files created, no
//   connections opened). mproc is linked as a static library (the default); the
//   program's registrations (below) must be made by then, which they are.
// - The target is named through the registry (<mproc/pool.hpp>'s registry.hpp): a lambda
//   without captures or a function object registers itself; a serialisable function
//   object's state travels with it; a function pointer needs MPROC_REMOTE(f) at namespace
//   scope, or the constructor throws mproc::error naming it. A capturing lambda or
//   std::function fails to compile. Each argument is decayed, must be serialisable
//   (<mproc/serialize.hpp>) and travels encoded; handles (queues, pipes' connections,
//   locks, events, shared values, shared dicts) travel as they do to pool tasks: the child
//   claims the descriptor from this process, and start() returns only once the child has
//   its arguments, so the handles the object held may go at once.
// - Every member of process behaves as with a plain fork: pid, join (with timeout),
//   is_alive, exitcode (0, 1 after an exception with the same stderr line, -N for signal
//   N), terminate, kill, name, daemon, sentinel (readable once the child has ended and
//   its status has arrived), current_process() and parent_process() in the child (the
//   parent is the caller), and active_children() and the exit rule count the child. The
//   child's parent in the kernel's eyes is the server, which reaps it and sends its exit
//   status back, so no zombie is left.
// - The server dies with its parent, however the parent dies (it watches a pidfd of the
//   parent, or getppid() every 100 ms without pidfds), is never counted by
//   active_children(), and ends at normal program exit after the exit rule has run; it is
//   reaped by this process, never a zombie. Daemon children die with the server, hence
//   with the caller, and with no dependence on which thread started them. If the server
//   itself is killed, the exit codes of its running children are lost (exitcode() throws
//   mproc::error) and the next start runs a new server.
// - The child inherits what the server has: the caller's environment, working directory,
//   standard streams and resource limits as they were at the first start (as Python's
//   forkserver), not later changes; descriptors reach it only as handles among the
//   arguments.
// - A subclass that overrides run() cannot use the forkserver: run() cannot travel.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mproc/detail/pool/forkserver_call.hpp"
#include "mproc/detail/pool/registry.hpp"
#include "mproc/detail/pool/task_function.hpp"
#include "mproc/process.hpp"
#include "mproc/serialize.hpp"

namespace mproc::detail {

// In the forkserver's child: decode the function's state and the arguments, say so, call.
template <class F, class... A>
void invoke_forkserver_target(generic_function g, std::span<const std::byte> in, std::vector<std::byte>& /*out*/) {
  auto function = decode_task_function<F>(g, in);  // not a structured binding: lambdas capture f
  F& f = function.first;
  auto args = decode_message<std::tuple<A...>>(function.second, "mproc::process(mproc::forkserver): the arguments");
  forkserver_arguments_received();
  std::apply([&](A&... a) { std::invoke(f, std::move(a)...); }, args);
}

template <class F, class... A>
class forkserver_starter final : public child_starter {
 public:
  // `f` as its decayed type: a function passed by name must become its pointer here.
  template <class... B>
  explicit forkserver_starter(F f, B&&... args)
      : call_(forkserver_call_of(&invoke_forkserver_target<F, A...>, to_generic(f))), args_(std::forward<B>(args)...) {
    encode_task_state(f, bytes_);
    encode_message(args_, bytes_);
  }

  std::shared_ptr<child_record> start(const std::string& name, bool daemon, const process_info& parent) override {
    return start_forkserver_child(call_, bytes_, name, daemon, parent);
  }

 private:
  forkserver_call call_;
  // Kept until start() returns: a handle's descriptor is claimed from this process by the
  // child, so this process must still hold it then.
  std::tuple<A...> args_;
  std::vector<std::byte> bytes_;
};

template <class F, class... A>
struct forkserver_target<forkserver_t, F, A...> {
  template <class G, class... B>
  static std::unique_ptr<child_starter> make(G&& f, B&&... args) {
    static_assert(task_function<F>,
                  "mproc::process(mproc::forkserver, f, ...): f must be a function pointer (registered with "
                  "MPROC_REMOTE(f)), a lambda without captures, or a serialisable function object: the server's "
                  "child finds f by name and receives only what serialises. Pass captured values as arguments.");
    static_assert((std::is_constructible_v<A, B&&> && ...),
                  "mproc::process(mproc::forkserver, ...): an argument is a move-only handle (a connection): pass it "
                  "with std::move(...)");
    static_assert((serializable<A> && ...),
                  "mproc::process(mproc::forkserver, ...): every argument travels encoded to the server's child and "
                  "must be serializable (<mproc/serialize.hpp>): give your type a cereal serialize(Archive&)");
    static_assert(std::is_invocable_v<F&, A...> || !std::is_invocable_v<F&, A&...>,
                  "mproc::process(mproc::forkserver, ...): the target takes an argument by non-const reference, but "
                  "the child gets its own copy: take it by value or by const&");
    static_assert(std::is_invocable_v<F&, A...> || std::is_invocable_v<F&, A&...>,
                  "mproc::process(mproc::forkserver, ...): the target cannot be called with these arguments");
    if constexpr (task_function<F> && (serializable<A> && ...) && std::is_invocable_v<F&, A...> &&
                  (std::is_constructible_v<A, B&&> && ...)) {
      register_at_startup<&invoke_forkserver_target<F, A...>>();
      return std::make_unique<forkserver_starter<F, A...>>(std::forward<G>(f), std::forward<B>(args)...);
    } else {
      return nullptr;  // never reached: it did not compile
    }
  }
};

}  // namespace mproc::detail
