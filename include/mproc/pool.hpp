// mproc::pool — Python's multiprocessing.Pool, crash-proof.
//
// Contract:
// - Tasks: `F` is a function pointer, a stateless callable (a lambda without captures), or
//   a serialisable function object (operator() and cereal's serialize; `partial` makes
//   one), whose state travels with the task: once per task, once per chunk in map, imap
//   and starmap. Anything else fails to compile, naming these remedies. Workers run the
//   function by name (an index into the pool's table of functions), never by an address
//   taken from a message; a state is data only.
//   Arguments and results cross by value through <mproc/serialize.hpp>; a queue, pipe end
//   or lock passed as an argument works inside the task.
// - Exceptions: a task's std exception (runtime_error, logic_error, invalid_argument,
//   out_of_range, domain_error, length_error, range_error, overflow_error,
//   underflow_error, bad_alloc) or mproc error is rethrown by get() with its type and
//   what(); so is a type registered with register_exception<E>(); anything else arrives as
//   remote_error carrying the type's name. A result that cannot be serialised fails its
//   task with serialization_error; the worker goes on.
// - Workers cannot take the pool down: a worker that dies mid-task (abort, segfault,
//   _exit, SIGKILL, OOM kill) fails exactly the task it ran with worker_lost (its
//   exitcode(): n, or -N for signal N) and is replaced. With `task_timeout`, a task running
//   longer fails with timeout_error and its worker is killed and replaced.
//   `max_tasks_per_child` recycles workers; `initializer` runs once in each worker.
// - Workers are forked from a single-threaded zygote made when the pool starts, ignore
//   SIGINT, and die when the parent dies, even by SIGKILL.
// - Callbacks (async_result::then) run in the parent on the pool's result thread, once,
//   in completion order; one that throws is reported on stderr and does not stop the
//   thread. `then` on a finished result still runs its callback (on the result thread
//   while the pool runs, else at once). Blocking on a pool result from inside a callback
//   deadlocks, as in Python.
// - close(): no new tasks (closed_error); join() (after close or terminate, else
//   mproc::error) waits for the tasks, their callbacks and the workers. terminate() kills
//   the workers at once; results still pending then fail with closed_error. The
//   destructor closes and joins a running pool.
// - Thread safety: several threads may submit at once; close/terminate/join may be
//   called from any thread.
// - A pool belongs to the process that made it. In a process forked from it (os::fork,
//   a `process` child) every call on the copy throws mproc::error and destroying it does
//   nothing to the parent's workers; a `process` child holds none of its descriptors.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mproc/detail/os/big_vector.hpp"
#include "mproc/detail/pool/async_state.hpp"
#include "mproc/detail/pool/completion.hpp"
#include "mproc/detail/pool/imap_feed.hpp"
#include "mproc/detail/pool/imap_state.hpp"
#include "mproc/detail/pool/map_feed.hpp"
#include "mproc/detail/pool/map_input.hpp"
#include "mproc/detail/pool/pool_core.hpp"
#include "mproc/detail/pool/registry.hpp"
#include "mproc/detail/pool/state_arena.hpp"
#include "mproc/detail/pool/task_function.hpp"
#include "mproc/detail/wait/deadline.hpp"
#include "mproc/error.hpp"
#include "mproc/serialize.hpp"

namespace mproc {

struct pool_options {
  unsigned processes = 0;                     // 0: cpu_count()
  std::function<void()> initializer;          // runs once in each worker, before its first task
  unsigned max_tasks_per_child = 0;           // 0: unlimited; then the worker is replaced
  std::chrono::milliseconds task_timeout{0};  // 0: none; else kill the worker, timeout_error
};

// Makes get() rethrow E (constructible from a std::string) with its own type when a task
// throws it. Call at start-up, in the process that calls get().
template <class E>
void register_exception() {
  static_assert(std::is_constructible_v<E, std::string>,
                "register_exception<E>: E must be constructible from a std::string");
  detail::register_exception_factory(detail::demangled_name(typeid(E)),
                                     [](const std::string& what) { return std::make_exception_ptr(E(what)); });
}

// f with its first arguments bound, as functools.partial: partial(scale, config)(x) is
// scale(config, x). A task like any other: the function travels by name, the bound values
// (each serialisable) travel with the task, once per task or map chunk. Partials nest.
template <class F, class... B>
auto partial(F f, B... bound) {
  detail::check_task_function<F>();
  static_assert((serializable<B> && ...),
                "mproc::partial: every bound value must be serializable (see <mproc/serialize.hpp>): it travels "
                "to the worker with the task");
  return detail::partial_function<F, B...>(f, std::move(bound)...);
}

class pool;
template <class R>
class async_result;

namespace detail {
// The pool API over another kind of pool than this machine's workers (mproc::mpi's).
struct pool_over {
  std::shared_ptr<task_sink> sink;
};

struct result_access {
  template <class R>
  static std::vector<std::shared_ptr<async_state<R>>> states(std::span<async_result<R>> results) {
    std::vector<std::shared_ptr<async_state<R>>> states;
    states.reserve(results.size());
    for (auto& r : results) states.push_back(r.state_);
    return states;
  }
};
}  // namespace detail

template <class R>
class async_result {
 public:
  explicit async_result(std::shared_ptr<detail::async_state<R>> state) : state_(std::move(state)) {}

  // Blocks until the task is done; returns its result or rethrows its exception.
  R get() {
    state_->wait();
    return take();
  }
  // Blocks at most `timeout`; then throws timeout_error.
  template <detail::duration D>
  R get(D timeout) {
    if (!state_->wait_until(detail::deadline::in(timeout)))
      throw timeout_error(
          "mproc::async_result::get: timed out before the task finished; wait longer, or check ready()");
    return take();
  }
  void wait() { state_->wait(); }
  template <detail::duration D>
  bool wait(D timeout) {
    return state_->wait_until(detail::deadline::in(timeout));
  }
  bool ready() const { return state_->ready(); }
  // Whether the task succeeded. Before ready(): mproc::error, as Python's ValueError.
  bool successful() const {
    if (!state_->ready())
      throw error("mproc::async_result::successful: the task has not finished; call it once ready() is true");
    return !state_->error();
  }
  // Cancels the task if no worker has started it: true, and it never runs; get() throws
  // cancelled_error and the error callback gets it. False once it started or ended, for a
  // map_async result (pool::cancel_pending fails a whole map), and for a task submitted
  // while 16,384 earlier tasks of its pool were unfinished, which only cancel_pending
  // can cancel. A cancel racing a worker's start has one outcome: ran, or cancelled.
  bool cancel() { return state_->cancel(); }
  // Whether it was cancelled (by cancel() or pool::cancel_pending()).
  bool cancelled() const { return state_->cancelled(); }
  // Whether a worker runs it now.
  bool running() const { return state_->running(); }

  // Runs `callback` with the result, or `error_callback` with the exception, on the pool's
  // result thread once the task is done (at once if the pool has ended).
  async_result& then(typename detail::async_state<R>::callback callback,
                     std::function<void(std::exception_ptr)> error_callback = {}) {
    state_->add_callbacks(state_, std::move(callback), std::move(error_callback));
    return *this;
  }

 private:
  // For mproc::wait_ready: ready once its value or error is in.
  friend detail::wait_probe mproc_wait_probe(async_result& r) { return r.state_->probe(); }

  friend class pool;
  friend struct detail::result_access;

  R take() {
    if (auto e = state_->error()) std::rethrow_exception(e);
    if constexpr (!std::is_void_v<R>) return state_->value();
  }
  // For a result nobody else holds (pool::map's own): waits, then moves the value out
  // instead of copying it.
  R move_out() {
    state_->wait();
    if (auto e = state_->error()) std::rethrow_exception(e);
    return state_->take_value();
  }
  std::shared_ptr<detail::async_state<R>> state_;
};

// The lazy results of imap / imap_unordered: a view, iterated once (the range-for's
// iterator and next() advance the same position). A failed chunk's error is thrown when
// its item is read (operator*, next), once per chunk; iteration can go on past it.
// Dropping the result before its end cancels the chunks no worker has started.
template <class R>
class imap_result : public std::ranges::view_base {
  struct cursor {
    explicit cursor(std::shared_ptr<detail::imap_reader<R>> r) : reader(std::move(r)) {}
    std::shared_ptr<detail::imap_reader<R>> reader;
    std::vector<R> values;
    std::size_t position = 0;
    std::exception_ptr error;
    bool at_end = false;
    bool need_load = true;

    // Makes the cursor stand on an item, an error or the end.
    void ensure(detail::deadline until) {
      if (!need_load) return;
      values.clear();
      position = 0;
      for (;;) {
        auto chunk = reader->next(until);
        if (!chunk) {
          at_end = true;
          break;
        }
        if (chunk->error) {
          error = std::move(chunk->error);
          break;
        }
        if (!chunk->values.empty()) {
          values = std::move(chunk->values);
          break;
        }
      }
      need_load = false;
    }
    void advance() {
      if (error) {
        error = nullptr;
        need_load = true;
      } else if (++position == values.size()) {
        need_load = true;
      }
    }
    const R& current() const {
      if (error) std::rethrow_exception(error);
      return values[position];
    }
  };

 public:
  class iterator {
   public:
    using value_type = R;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(std::shared_ptr<cursor> c) : cursor_(std::move(c)) { cursor_->ensure(detail::deadline::never()); }
    // Throws the item's error if its chunk failed.
    const R& operator*() const { return cursor_->current(); }
    const R* operator->() const { return &cursor_->current(); }
    iterator& operator++() {
      cursor_->advance();
      cursor_->ensure(detail::deadline::never());
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return it.cursor_->at_end; }

   private:
    std::shared_ptr<cursor> cursor_;
  };

  imap_result() = default;
  explicit imap_result(std::shared_ptr<detail::imap_reader<R>> reader)
      : cursor_(std::make_shared<cursor>(std::move(reader))) {}
  iterator begin() { return iterator(cursor_); }
  std::default_sentinel_t end() const { return {}; }

  // Python's IMapIterator.next(timeout): the next result, or nullopt at the end; rethrows
  // a failed chunk's error; timeout_error when nothing came in time.
  std::optional<R> next() { return next_until(detail::deadline::never()); }
  template <detail::duration D>
  std::optional<R> next(D timeout) {
    return next_until(detail::deadline::in(timeout));
  }

 private:
  std::optional<R> next_until(detail::deadline until) {
    cursor& c = *cursor_;
    c.ensure(until);
    if (c.at_end) return std::nullopt;
    if (c.error) {
      auto error = c.error;
      c.advance();
      std::rethrow_exception(error);
    }
    std::optional<R> value(std::move(c.values[c.position]));
    c.advance();
    return value;
  }

  std::shared_ptr<cursor> cursor_;
};

class pool {
 public:
  explicit pool(unsigned processes = 0) : pool(options_with(processes)) {}
  explicit pool(pool_options options)
      : core_(std::make_shared<detail::pool_core>(detail::pool_config{
            options.processes, std::move(options.initializer), options.max_tasks_per_child, options.task_timeout})) {}
  explicit pool(detail::pool_over over) : core_(std::move(over.sink)) {}
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;

  // A pool still running is closed and joined; never throws.
  ~pool() {
    try {
      close();
      join();
    } catch (...) {
    }
  }

  // Runs f(args...) in a worker and blocks for its result.
  template <class F, class... A>
  auto apply(F f, A&&... args) {
    return apply_async(f, std::forward<A>(args)...).get();
  }

  // Runs f(args...) in a worker; returns at once.
  template <class F, class... A>
  auto apply_async(F f, A&&... args) {
    detail::check_task_function<F>();
    if constexpr (!detail::task_function<F> || !detail::task_arguments_ok_v<F, A...>) {
      detail::check_task_arguments<F, A...>();
      return async_result<int>(nullptr);  // never reached: it did not compile
    } else {
      using R = std::invoke_result_t<F&, std::decay_t<A>...>;
      detail::register_at_startup<&detail::invoke_apply<F, std::decay_t<A>...>>();
      auto state = make_state<R>();
      auto& buffer = detail::task_encode_buffer();
      buffer.assign(detail::task_sink::task_header_bytes, std::byte{0});
      detail::encode_task_state(f, buffer);
      detail::encode_message(std::tuple<std::decay_t<A>...>(std::forward<A>(args)...), buffer);
      core_->submit({&detail::invoke_apply<F, std::decay_t<A>...>, detail::to_generic(f)}, buffer, state);
      return async_result<R>(std::move(state));
    }
  }

  // f over items, results in input order. chunksize 0: Python's rule,
  // ceil(len / (4 × workers)), capped at 32 KiB of items per chunk. The chunks go to the
  // workers a window at a time (4 per worker), whatever the input's size; map reads the
  // caller's items in place, map_async copies them.
  template <class F, std::ranges::input_range Range>
  auto map(F f, Range&& items, std::size_t chunksize = 0) {
    return map_and_wait<false>(f, std::forward<Range>(items), chunksize);
  }
  template <class F, std::ranges::input_range Range>
  auto map_async(F f, Range&& items, std::size_t chunksize = 0) {
    return map_impl<false, false>(f, std::forward<Range>(items), chunksize).first;
  }

  // f(std::get<0>(t), std::get<1>(t), ...) over tuples, results in input order.
  template <class F, std::ranges::input_range Range>
  auto starmap(F f, Range&& tuples, std::size_t chunksize = 0) {
    return map_and_wait<true>(f, std::forward<Range>(tuples), chunksize);
  }
  template <class F, std::ranges::input_range Range>
  auto starmap_async(F f, Range&& tuples, std::size_t chunksize = 0) {
    return map_impl<true, false>(f, std::forward<Range>(tuples), chunksize).first;
  }

  // Lazy results in input order / in completion order. The input is read lazily, on the
  // iterating thread, about two chunks per worker ahead of the loop (an unbounded input
  // works; an lvalue input must outlive the result). A chunk's error is thrown when its
  // item is read. Dropping the result early cancels the chunks no worker started.
  template <class F, std::ranges::input_range Range>
  auto imap(F f, Range&& items, std::size_t chunksize = 1) {
    return imap_impl(f, std::forward<Range>(items), chunksize, true);
  }
  template <class F, std::ranges::input_range Range>
  auto imap_unordered(F f, Range&& items, std::size_t chunksize = 1) {
    return imap_impl(f, std::forward<Range>(items), chunksize, false);
  }

  // Every task no worker has started fails with cancelled_error (a map or imap that had
  // one fails as a whole) before this returns; tasks that run finish. The pool goes on.
  void cancel_pending() { core_->cancel_pending(); }

  // No new tasks; the workers end when the queued ones are done. The rest of a live imap's
  // input is read and queued first (so an imap over an unbounded input must be read to
  // its end or dropped before close()).
  void close() {
    if (!core_) return;
    imaps_.drain_all();
    core_->close();
  }
  // Kills the workers now; pending results fail with closed_error.
  void terminate() {
    if (core_) core_->terminate();
  }
  // Waits for the workers to end. Before close() or terminate(): mproc::error.
  void join() {
    if (core_) core_->join();
  }
  unsigned size() const { return core_->size(); }

 private:
  static pool_options options_with(unsigned processes) {
    pool_options options;
    options.processes = processes;
    return options;
  }

  template <class R>
  std::shared_ptr<detail::async_state<R>> make_state() {
    auto state = std::allocate_shared<detail::async_state<R>>(
        detail::arena_allocator<detail::async_state<R>>(state_arena_.get()), core_);
    return state;
  }

  // A stateful function's state, encoded once for all the chunks of a map.
  template <class F>
  static std::vector<std::byte> encoded_state(const F& f) {
    std::vector<std::byte> state;
    detail::encode_task_state(f, state);
    return state;
  }

  // How many chunks of one map are in flight at once.
  std::size_t map_window() const { return std::size_t{4} * size(); }

  // `borrow`: the caller waits for the result (map, starmap), so a contiguous input is read
  // in place while chunks are fed; map_async copies it, as its caller may let it go.
  template <bool star, bool borrow, class F, class Range>
  auto map_impl(F f, Range&& items, std::size_t chunksize) {
    detail::check_task_function<F>();
    auto view = detail::view_items<borrow>(std::forward<Range>(items));
    const auto all = view.items;
    using T = typename decltype(all)::value_type;
    using R = detail::chunk_result_t<F, T, star>;
    using feed_type = detail::map_feed<T, R>;
    auto state = make_state<std::vector<R>>();
    if (all.empty()) {
      state->set_value(std::vector<R>{});
      return std::pair(async_result<std::vector<R>>(state), std::shared_ptr<feed_type>());
    }
    if (chunksize == 0) chunksize = detail::auto_chunksize<T>(all.size(), size());
    detail::register_at_startup<&detail::invoke_chunk<F, T, star>>();
    const std::uint32_t id = core_->function_id(&detail::invoke_chunk<F, T, star>, detail::to_generic(f));
    auto feed = std::make_shared<feed_type>(state, core_, id, encoded_state(f), std::move(view.copy), all, chunksize,
                                            map_window());
    feed->start();
    return std::pair(async_result<std::vector<R>>(state), std::move(feed));
  }

  // map and starmap: the result, once no chunk reads the caller's items any more.
  template <bool star, class F, class Range>
  auto map_and_wait(F f, Range&& items, std::size_t chunksize) {
    auto started = map_impl<star, true>(f, std::forward<Range>(items), chunksize);
    struct forget_items {
      decltype(started.second)& feed;
      ~forget_items() {
        if (feed) feed->forget_items();
      }
    } guard{started.second};
    if constexpr (std::is_same_v<typename decltype(started.first.move_out())::value_type, detail::no_result>) {
      started.first.move_out();  // a void function: returns once every call ran
    } else {
      return started.first.move_out();
    }
  }

  // The input is kept as a view (an lvalue range by reference, an rvalue one moved in) and
  // read lazily; the first window is submitted before returning.
  template <class F, class Range>
  auto imap_impl(F f, Range&& items, std::size_t chunksize, bool ordered) {
    detail::check_task_function<F>();
    using T = std::remove_cvref_t<std::ranges::range_value_t<Range>>;
    using R = detail::chunk_result_t<F, T, false>;
    static_assert(!std::is_same_v<R, detail::no_result>,
                  "pool::imap needs a function that returns a value; use map (which returns once every call "
                  "ran) or apply_async for a void function");
    if (chunksize == 0) chunksize = 1;
    detail::register_at_startup<&detail::invoke_chunk<F, T, false>>();
    const std::uint32_t id = core_->function_id(&detail::invoke_chunk<F, T, false>, detail::to_generic(f));
    auto send = [core = std::weak_ptr<detail::task_sink>(core_), id, state_bytes = encoded_state(f)](
                    std::size_t index, std::span<const T> chunk,
                    const std::shared_ptr<detail::imap_state<R>>& state) -> std::uint64_t {
      auto c = core.lock();
      if (!c) throw closed_error("mproc::pool::imap: the pool was terminated before the input was all submitted");
      auto& buffer = detail::task_encode_buffer();
      const std::size_t size =
          detail::encode_chunk_after_header(std::span<const std::byte>(state_bytes), chunk, buffer);
      auto task = std::make_shared<detail::imap_chunk_state<R>>(state, index);
      c->submit(id, std::span(buffer.data(), size), task, true);
      return task->task_id();
    };
    auto feed = std::make_shared<detail::imap_feed<R, Range>>(core_, std::move(send), std::forward<Range>(items),
                                                              chunksize, imap_window(), ordered);
    feed->start();
    imaps_.add(feed);
    return imap_result<R>(std::move(feed));
  }

  // How many chunks of an imap are submitted and not yet read: about two per worker.
  std::size_t imap_window() const { return std::size_t{2} * size(); }

  std::shared_ptr<detail::task_sink> core_;
  detail::state_arena::owner state_arena_ = detail::state_arena::make_owned();
  detail::live_feeds imaps_;  // for close()
};

// concurrent.futures' wait and as_completed, over results of any pools. Indices are
// places in the span; a cancelled result counts as done.
enum class return_when { first_completed, first_exception, all_completed };
struct wait_outcome {
  std::vector<std::size_t> done;      // in completion order (those done already first)
  std::vector<std::size_t> not_done;  // in span order
};

namespace detail {
template <class R>
wait_outcome wait_for_results(std::span<async_result<R>> results, return_when when, deadline until) {
  completion_watch<R> watch(result_access::states(results));
  const auto satisfied = [&] {
    switch (when) {
      case return_when::first_completed:
        return watch.finished() > 0 || watch.size() == 0;
      case return_when::first_exception:
        return watch.any_failed() || watch.finished() == watch.size();
      case return_when::all_completed:
        break;
    }
    return watch.finished() == watch.size();
  };
  while (!satisfied() && watch.await_next(until)) {
  }
  wait_outcome outcome;
  for (std::size_t i = 0; i < watch.finished(); ++i) outcome.done.push_back(watch.finished_at(i));
  for (std::size_t i = 0; i < watch.size(); ++i) {
    if (!watch.is_finished(i)) outcome.not_done.push_back(i);
  }
  return outcome;
}
}  // namespace detail

// Waits until `when` holds: every result done, the first done, or the first failed (or
// all done). With a timeout, returns when it passes, whatever is done by then.
template <class R>
wait_outcome wait(std::span<async_result<R>> results, return_when when = return_when::all_completed) {
  return detail::wait_for_results(results, when, detail::deadline::never());
}
template <class R, detail::duration D>
wait_outcome wait(std::span<async_result<R>> results, return_when when, D timeout) {
  return detail::wait_for_results(results, when, detail::deadline::in(timeout));
}
template <class R>
wait_outcome wait(std::vector<async_result<R>>& results, return_when when = return_when::all_completed) {
  return wait(std::span<async_result<R>>(results), when);
}
template <class R, detail::duration D>
wait_outcome wait(std::vector<async_result<R>>& results, return_when when, D timeout) {
  return wait(std::span<async_result<R>>(results), when, timeout);
}

// The indices of `results` as each finishes (those finished already first): an input
// range for a range-for. With a timeout (counted from this call), advancing past it with
// results unfinished throws timeout_error.
template <class R>
detail::as_completed_range<R> as_completed(std::span<async_result<R>> results) {
  return detail::as_completed_range<R>(detail::result_access::states(results), detail::deadline::never());
}
template <class R, detail::duration D>
detail::as_completed_range<R> as_completed(std::span<async_result<R>> results, D timeout) {
  return detail::as_completed_range<R>(detail::result_access::states(results), detail::deadline::in(timeout));
}
template <class R>
detail::as_completed_range<R> as_completed(std::vector<async_result<R>>& results) {
  return as_completed(std::span<async_result<R>>(results));
}
template <class R, detail::duration D>
detail::as_completed_range<R> as_completed(std::vector<async_result<R>>& results, D timeout) {
  return as_completed(std::span<async_result<R>>(results), timeout);
}

}  // namespace mproc

// thread_pool: the same API on threads (Python's ThreadPool), after all that it uses.
#include "mproc/thread_pool.hpp"
