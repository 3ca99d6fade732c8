// mproc::pool — Python's multiprocessing.Pool, crash-proof.
//
// Contract:
// - Tasks: `F` is a function pointer or a stateless callable (a lambda without captures);
//   anything else fails to compile, saying so. Workers run the function by name (an index
//   into the pool's table of functions), never by an address taken from a message.
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
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mproc/detail/os/big_vector.hpp"
#include "mproc/detail/wait/deadline.hpp"
#include "mproc/detail/pool/pool_core.hpp"
#include "mproc/detail/pool/state_arena.hpp"
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
  static_assert(std::is_constructible_v<E, std::string>, "register_exception<E>: E must be constructible from a std::string");
  detail::register_exception_factory(detail::demangled_name(typeid(E)), [](const std::string& what) {
    return std::make_exception_ptr(E(what));
  });
}

namespace detail {

template <class F>
inline constexpr bool is_function_pointer_v = std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>;

template <class F>
inline constexpr bool is_task_function_v =
    is_function_pointer_v<F> ||
    (std::is_class_v<F> && std::is_empty_v<F> && std::is_default_constructible_v<F> && std::is_trivially_copyable_v<F>);

#define MPROC_CHECK_TASK_FUNCTION(F)                                                                       \
  static_assert(::mproc::detail::is_task_function_v<F>,                                                    \
                "mproc::pool runs a function pointer or a stateless callable (a lambda without captures): " \
                "workers call it by name and cannot receive its state. Pass the state as task arguments.")

template <class F>
generic_function to_generic(F f) {
  if constexpr (is_function_pointer_v<F>) {
    return reinterpret_cast<generic_function>(f);
  } else {
    return nullptr;
  }
}

template <class F>
F from_generic(generic_function g) {
  if constexpr (is_function_pointer_v<F>) {
    return reinterpret_cast<F>(g);
  } else {
    return F{};
  }
}

inline void report_callback_error(std::exception_ptr error) noexcept {
  std::string line = "mproc: a pool callback threw ";
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    line += demangled_name(typeid(e)) + ": " + e.what();
  } catch (...) {
    line += "an exception not derived from std::exception";
  }
  line += "\n";
  std::fputs(line.c_str(), stderr);
}

// The worker side of apply: decode the arguments, call, encode the result.
template <class F, class... A>
void invoke_apply(generic_function g, std::span<const std::byte> in, std::vector<std::byte>& out) {
  auto args = from_bytes<std::tuple<A...>>(in);
  F f = from_generic<F>(g);
  using R = std::invoke_result_t<F&, A...>;
  if constexpr (std::is_void_v<R>) {
    std::apply([&](A&... a) { std::invoke(f, std::move(a)...); }, args);
  } else {
    R result = std::apply([&](A&... a) -> R { return std::invoke(f, std::move(a)...); }, args);
    to_bytes(result, out);
  }
}

// Vectors of numbers, which map moves in bulk, encode as the version byte, a u64 count and
// the raw elements (<mproc/serialize.hpp>). These two produce and read exactly those bytes
// without building a std::vector in between.
template <class T>
inline constexpr bool is_raw_vector_element_v = std::is_arithmetic_v<T> && !std::is_same_v<T, bool>;

// Sizes `out` to end, from byte `at`, with what to_bytes writes for a vector of `n` T, and
// writes its version byte and count; returns where the n raw elements go.
template <class T>
std::byte* raw_vector_at(std::vector<std::byte>& out, std::size_t at, std::size_t n) {
  static_assert(is_raw_vector_element_v<T>);
  const std::uint64_t count = n;
  out.resize(at + 1 + sizeof count + n * sizeof(T));
  out[at] = static_cast<std::byte>(serialization_format_version);
  std::memcpy(out.data() + at + 1, &count, sizeof count);
  return out.data() + at + 1 + sizeof count;
}

// Writes pool_core::task_header_bytes of room, then what to_bytes(std::vector<T>(items))
// writes, into `out`; returns the message size.
template <class T>
std::size_t encode_vector_after_header(std::span<const T> items, std::vector<std::byte>& out) {
  constexpr std::size_t header = pool_core::task_header_bytes;
  if constexpr (is_raw_vector_element_v<T>) {
    std::byte* elements = raw_vector_at<T>(out, header, items.size());
    if (!items.empty()) std::memcpy(elements, items.data(), items.size_bytes());
  } else {
    out.assign(header, std::byte{0});
    to_bytes(std::vector<T>(items.begin(), items.end()), out);
  }
  return out.size();
}

// The elements of what to_bytes(std::vector<T>) wrote, in place: their count and bytes.
// serialization_error if `bytes` is not such a message.
template <class T>
std::pair<std::size_t, const std::byte*> raw_vector_elements(std::span<const std::byte> bytes) {
  static_assert(is_raw_vector_element_v<T>);
  std::uint64_t n = 0;
  if (bytes.size() < 1 + sizeof n || bytes[0] != static_cast<std::byte>(serialization_format_version)) {
    throw serialization_error("pool::map: a chunk is not a valid message");
  }
  std::memcpy(&n, bytes.data() + 1, sizeof n);
  if (n != (bytes.size() - 1 - sizeof n) / sizeof(T) || (bytes.size() - 1 - sizeof n) % sizeof(T) != 0) {
    throw serialization_error("pool::map: a chunk's element count does not match its length");
  }
  return {static_cast<std::size_t>(n), bytes.data() + 1 + sizeof n};
}

// Decodes what to_bytes(std::vector<T>) wrote straight into `into`, whose size the count
// must equal (else serialization_error). False for element types without that layout.
template <class T>
bool decode_vector_into(std::span<const std::byte> bytes, std::span<T> into) {
  if constexpr (is_raw_vector_element_v<T>) {
    const auto [n, data] = raw_vector_elements<T>(bytes);
    if (n != into.size()) {
      throw serialization_error("pool::map: a chunk of " + std::to_string(into.size()) +
                                " items came back with a different number of results");
    }
    if (n != 0) std::memcpy(into.data(), data, into.size_bytes());
    return true;
  } else {
    return false;
  }
}

// Whether a map chunk maps numbers to numbers.
template <class F, class T, bool star>
constexpr bool is_raw_chunk() {
  if constexpr (star || !is_raw_vector_element_v<T>) {
    return false;
  } else {
    return is_raw_vector_element_v<std::remove_cvref_t<std::invoke_result_t<F&, T>>>;
  }
}

// The worker side of a map chunk: items in, results out, in order. Numbers to numbers go
// from the message to the result message without a vector on either side.
template <class F, class T, bool star>
void invoke_chunk(generic_function g, std::span<const std::byte> in, std::vector<std::byte>& out) {
  F f = from_generic<F>(g);
  if constexpr (is_raw_chunk<F, T, star>()) {
    using R = std::remove_cvref_t<std::invoke_result_t<F&, T>>;
    const auto [n, data] = raw_vector_elements<T>(in);
    std::byte* results = raw_vector_at<R>(out, out.size(), n);
    for (std::size_t i = 0; i < n; ++i) {
      T item;
      std::memcpy(&item, data + i * sizeof(T), sizeof item);
      const R result = std::invoke(f, std::move(item));
      std::memcpy(results + i * sizeof(R), &result, sizeof result);
    }
  } else {
    auto items = from_bytes<std::vector<T>>(in);
    auto call = [&](T& item) -> decltype(auto) {
      if constexpr (star) {
        return std::apply(f, std::move(item));
      } else {
        return std::invoke(f, std::move(item));
      }
    };
    using R = std::remove_cvref_t<decltype(call(items.front()))>;
    std::vector<R> results;
    results.reserve(items.size());
    for (T& item : items) results.push_back(call(item));
    to_bytes(results, out);
  }
}

template <class R>
struct callback_for {
  using type = std::function<void(const R&)>;
};
template <>
struct callback_for<void> {
  using type = std::function<void()>;
};

template <class R>
struct value_box {
  std::optional<R> value;
};
template <>
struct value_box<void> {};

// What an async_result waits on: filled once, on the result thread.
template <class R>
class async_state : public task_state {
 public:
  using callback = typename callback_for<R>::type;
  using error_callback = std::function<void(std::exception_ptr)>;

  explicit async_state(std::weak_ptr<pool_core> core) : core_(std::move(core)) {}

  void complete(std::span<const std::byte> bytes) noexcept override {
    try {
      if constexpr (std::is_void_v<R>) {
        set_value();
      } else {
        set_value(from_bytes<R>(bytes));
      }
    } catch (...) {
      set_error(std::current_exception());
    }
  }
  void fail(std::exception_ptr error) noexcept override { set_error(std::move(error)); }

  template <class... V>
  void set_value(V&&... v) noexcept {
    try {
      if constexpr (!std::is_void_v<R>) box_.value.emplace(std::forward<V>(v)...);
    } catch (...) {
      error_ = std::current_exception();
    }
    settle();
  }
  void set_error(std::exception_ptr error) noexcept {
    error_ = std::move(error);
    settle();
  }

  // A blocking apply() usually gets its answer within microseconds: read the results for a
  // short while on this thread before sleeping, since a hand-off through the result thread
  // and a condition-variable wake cost more than the whole round trip. In a forked child,
  // which the result can never reach, this throws mproc::error (the pool is its parent's).
  void pump(std::chrono::nanoseconds budget) {
    if (!published_.load(std::memory_order_acquire)) {
      if (auto core = core_.lock()) core->pump_results(published_, budget);
    }
  }
  void wait() {
    pump(std::chrono::microseconds(50));
    std::unique_lock lock(mutex_);
    ready_cv_.wait(lock, [&] { return ready_; });
  }
  bool wait_until(deadline until) {
    pump(std::min<std::chrono::nanoseconds>(until.left(), std::chrono::microseconds(50)));
    std::unique_lock lock(mutex_);
    if (until.is_never()) {
      ready_cv_.wait(lock, [&] { return ready_; });
      return true;
    }
    return ready_cv_.wait_until(lock, until.when(), [&] { return ready_; });
  }
  bool ready() const {
    std::lock_guard lock(mutex_);
    return ready_;
  }
  // Valid once ready.
  std::exception_ptr error() const { return error_; }
  // Moves the value out, for a caller that is the state's only user.
  R take_value() {
    if constexpr (!std::is_void_v<R>) return std::move(*box_.value);
  }
  decltype(auto) value() const {
    if constexpr (!std::is_void_v<R>) return static_cast<const R&>(*box_.value);
  }

  void add_callbacks(callback on_value, error_callback on_error) {
    {
      std::lock_guard lock(mutex_);
      if (!ready_ && !settling_done_) {
        callbacks_.emplace_back(std::move(on_value), std::move(on_error));
        return;
      }
    }
    // Already finished: run it on the result thread if the pool still runs, else now.
    auto self = std::static_pointer_cast<async_state>(shared_from_this_hook_.lock());
    auto run = [self, on_value = std::move(on_value), on_error = std::move(on_error)] {
      self->run_one(on_value, on_error);
    };
    if (auto core = core_.lock()) {
      try {
        core->post(run);
        return;
      } catch (...) {
      }
    }
    run();
  }

  // Set by the pool right after making the state, for add_callbacks on a finished result.
  std::weak_ptr<task_state> shared_from_this_hook_;

 private:
  void run_one(const callback& on_value, const error_callback& on_error) const noexcept {
    try {
      if (error_) {
        if (on_error) on_error(error_);
      } else if (on_value) {
        if constexpr (std::is_void_v<R>) {
          on_value();
        } else {
          on_value(*box_.value);
        }
      }
    } catch (...) {
      report_callback_error(std::current_exception());
    }
  }

  // Runs the callbacks (those added meanwhile too), then wakes the waiters. Callbacks run
  // on the result thread: a thread that dispatched this result while pumping hands them
  // over, with the rest of settling.
  void settle() noexcept {
    for (;;) {
      std::vector<std::pair<callback, error_callback>> now;
      {
        std::lock_guard lock(mutex_);
        if (callbacks_.empty()) {
          settling_done_ = true;
          ready_ = true;
          published_.store(true, std::memory_order_release);
        } else {
          now.swap(callbacks_);
        }
      }
      if (now.empty()) {
        ready_cv_.notify_all();  // after unlocking: a woken waiter must not block on mutex_
        return;
      }
      if (!pool_core::on_result_thread() && hand_to_result_thread(now)) return;
      for (const auto& [on_value, on_error] : now) run_one(on_value, on_error);
    }
  }

  // Posts `callbacks` and the rest of settling to the result thread; false (and `callbacks`
  // untouched) if the pool is gone.
  bool hand_to_result_thread(std::vector<std::pair<callback, error_callback>>& callbacks) noexcept {
    auto self = std::static_pointer_cast<async_state>(shared_from_this_hook_.lock());
    auto core = core_.lock();
    if (!self || !core) return false;
    try {
      auto owned = std::make_shared<std::vector<std::pair<callback, error_callback>>>(std::move(callbacks));
      try {
        core->post([self, owned] {
          for (const auto& [on_value, on_error] : *owned) self->run_one(on_value, on_error);
          self->settle();
        });
      } catch (...) {
        callbacks = std::move(*owned);
        return false;
      }
      return true;
    } catch (...) {
      return false;
    }
  }

  std::weak_ptr<pool_core> core_;
  mutable std::mutex mutex_;
  std::condition_variable ready_cv_;
  bool ready_ = false;
  std::atomic<bool> published_{false};  // ready_, readable without the mutex
  bool settling_done_ = false;
  std::exception_ptr error_;
  value_box<R> box_;
  std::vector<std::pair<callback, error_callback>> callbacks_;
};

// Collects the chunks of one map into one vector, in input order.
template <class R>
class map_gather {
 public:
  map_gather(std::shared_ptr<async_state<std::vector<R>>> target, std::size_t total, std::size_t chunks)
      : target_(std::move(target)), results_(make_big_vector<R>(total)), chunks_left_(chunks) {}

  // Called by the thread dispatching results: one at a time.
  void chunk_done(std::size_t offset, std::size_t count, std::span<const std::byte> bytes) {
    if (settled()) return;
    try {
      auto into = std::span(results_).subspan(offset, count);
      if (!decode_vector_into(bytes, into)) {
        auto part = from_bytes<std::vector<R>>(bytes);
        if (part.size() != count) {
          throw serialization_error("pool::map: a chunk of " + std::to_string(count) + " items came back with " +
                                    std::to_string(part.size()) + " results");
        }
        std::move(part.begin(), part.end(), into.begin());
      }
    } catch (...) {
      chunk_failed(std::current_exception());
      return;
    }
    if (--chunks_left_ == 0 && !settled_.exchange(true, std::memory_order_acq_rel)) {
      target_->set_value(std::move(results_));
    }
  }
  // From any thread (terminate() fails chunks on its own); the first failure settles the
  // map, as Python's map fails as a whole.
  void chunk_failed(std::exception_ptr error) {
    if (settled_.exchange(true, std::memory_order_acq_rel)) return;
    target_->set_error(std::move(error));
  }
  // Whether the map has its result or its error.
  bool settled() const noexcept { return settled_.load(std::memory_order_acquire); }

 private:
  std::shared_ptr<async_state<std::vector<R>>> target_;
  std::vector<R> results_;
  std::size_t chunks_left_;
  std::atomic<bool> settled_{false};
};

// One map's chunks, submitted a window at a time as a pool feed (pool_core::begin_feed):
// each chunk that finishes, on the thread dispatching results, submits the next. The
// window keeps the task and result channels at a few chunks whatever the input's size, so
// their memory stays mapped and warm; submitting a 10M-item map at once put 40 MB through
// freshly faulted shared memory (~12 µs a page on a VM). After a failure it submits no more.
template <class T, class R>
class map_feed : public std::enable_shared_from_this<map_feed<T, R>> {
 public:
  // `items` stays valid until the feed ends: the caller's own memory while it waits for the
  // result (map), or `owned` (map_async).
  map_feed(std::shared_ptr<async_state<std::vector<R>>> target, std::weak_ptr<pool_core> core, std::uint32_t function,
           std::vector<T> owned, std::span<const T> items, std::size_t chunksize, std::size_t window)
      : core_(std::move(core)),
        function_(function),
        owned_(std::move(owned)),
        items_(owned_.empty() ? items : std::span<const T>(owned_)),
        chunksize_(chunksize),
        window_(window),
        gather_(std::move(target), items_.size(), (items_.size() + chunksize - 1) / chunksize) {}
  map_feed(const map_feed&) = delete;
  map_feed& operator=(const map_feed&) = delete;
  ~map_feed() { end_feed(); }  // dropped before its last submit: its pool terminated

  // Admits the feed (closed_error once the pool is closed) and submits the first window.
  void start() {
    auto core = core_.lock();
    if (!core) throw closed_error("pool was terminated: it takes no new tasks");
    core->begin_feed();
    {
      std::lock_guard lock(mutex_);
      feeding_ = true;
    }
    advance(false);
  }

  // For map(), whose caller's items are about to go: waits for a submit reading them, and
  // submits no more. (A map can fail while chunks are still being submitted: terminate()
  // on another thread.)
  void forget_items() noexcept {
    {
      std::lock_guard lock(mutex_);
      items_ = {};
      next_ = 0;
    }
    end_feed();
  }

 private:
  class chunk final : public task_state {
   public:
    chunk(std::shared_ptr<map_feed> feed, std::size_t offset, std::size_t count)
        : feed_(std::move(feed)), offset_(offset), count_(count) {}
    void complete(std::span<const std::byte> bytes) noexcept override {
      feed_->gather_.chunk_done(offset_, count_, bytes);
      feed_->advance(true);
    }
    void fail(std::exception_ptr error) noexcept override {
      feed_->gather_.chunk_failed(std::move(error));
      feed_->advance(true);
    }

   private:
    std::shared_ptr<map_feed> feed_;
    std::size_t offset_;
    std::size_t count_;
  };

  // A chunk finished (`finished`), or the feed starts: fills the window again. A chunk that
  // cannot be submitted (the pool terminated, no memory) fails the map. The map is failed
  // and the feed ended with the lock let go: both may run code (callbacks, terminate()
  // failing this feed's chunks) that comes back here.
  void advance(bool finished) noexcept {
    std::exception_ptr error;
    bool end = false;
    {
      std::lock_guard lock(mutex_);
      if (finished) --in_flight_;
      if (!gather_.settled()) {
        try {
          submit_window();
        } catch (...) {
          error = std::current_exception();
        }
      }
      end = feeding_ && (error || gather_.settled() || next_ == items_.size());
    }
    if (error) gather_.chunk_failed(std::move(error));
    if (end) end_feed();
  }

  // Submits chunks until the window is full or the input is all out; under mutex_.
  void submit_window() {
    if (in_flight_ >= window_ || next_ == items_.size()) return;
    auto core = core_.lock();
    if (!core) throw closed_error("pool was terminated before the map was submitted");
    auto& buffer = encode_buffer();
    while (in_flight_ < window_ && next_ < items_.size()) {
      const auto part = items_.subspan(next_, std::min(chunksize_, items_.size() - next_));
      const std::size_t size = encode_vector_after_header(part, buffer);
      auto state = std::make_shared<chunk>(this->shared_from_this(), next_, part.size());
      core->submit(function_, std::span(buffer.data(), size), std::move(state), true);
      next_ += part.size();
      ++in_flight_;
    }
  }

  void end_feed() noexcept {
    {
      std::lock_guard lock(mutex_);
      if (!feeding_) return;
      feeding_ = false;
    }
    if (auto core = core_.lock()) core->end_feed();
  }

  std::weak_ptr<pool_core> core_;
  std::uint32_t function_;
  std::vector<T> owned_;
  std::span<const T> items_;
  std::size_t chunksize_;
  std::size_t window_;
  map_gather<R> gather_;

  std::mutex mutex_;  // guards what follows
  std::size_t next_ = 0;       // the first item not submitted
  std::size_t in_flight_ = 0;  // chunks submitted and not finished
  bool feeding_ = false;       // between begin_feed and end_feed
};

// The chunks of an imap, handed to the iterating thread in input or completion order.
template <class R>
class imap_state {
 public:
  imap_state(std::size_t chunks, bool ordered) : slots_(chunks), ordered_(ordered) {}

  void chunk_done(std::size_t index, std::span<const std::byte> bytes) noexcept {
    try {
      deliver(index, from_bytes<std::vector<R>>(bytes), nullptr);
    } catch (...) {
      deliver(index, {}, std::current_exception());
    }
  }
  void chunk_failed(std::size_t index, std::exception_ptr error) noexcept { deliver(index, {}, std::move(error)); }

  // Blocks for the next chunk; nullopt when all were taken. Rethrows a failed chunk's error.
  std::optional<std::vector<R>> next() {
    std::unique_lock lock(mutex_);
    if (taken_ == slots_.size()) return std::nullopt;
    std::size_t index;
    if (ordered_) {
      index = taken_;
      cv_.wait(lock, [&] { return slots_[index].done; });
    } else {
      cv_.wait(lock, [&] { return !finished_order_.empty(); });
      index = finished_order_.front();
      finished_order_.pop_front();
    }
    ++taken_;
    slot& s = slots_[index];
    if (s.error) std::rethrow_exception(s.error);
    return std::move(s.values);
  }

 private:
  struct slot {
    bool done = false;
    std::vector<R> values;
    std::exception_ptr error;
  };
  void deliver(std::size_t index, std::vector<R> values, std::exception_ptr error) noexcept {
    std::lock_guard lock(mutex_);
    slot& s = slots_[index];
    s.values = std::move(values);
    s.error = std::move(error);
    s.done = true;
    finished_order_.push_back(index);
    cv_.notify_all();
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<slot> slots_;
  std::deque<std::size_t> finished_order_;
  std::size_t taken_ = 0;
  bool ordered_;
};

template <class R>
class imap_chunk_state final : public task_state {
 public:
  imap_chunk_state(std::shared_ptr<imap_state<R>> state, std::size_t index) : state_(std::move(state)), index_(index) {}
  void complete(std::span<const std::byte> bytes) noexcept override { state_->chunk_done(index_, bytes); }
  void fail(std::exception_ptr error) noexcept override { state_->chunk_failed(index_, std::move(error)); }

 private:
  std::shared_ptr<imap_state<R>> state_;
  std::size_t index_;
};

}  // namespace detail

class pool;

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
    if (!state_->wait_until(detail::deadline::in(timeout))) throw timeout_error("async_result::get timed out");
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
    if (!state_->ready()) throw error("async_result::successful() called before the result is ready");
    return !state_->error();
  }
  // Runs `callback` with the result, or `error_callback` with the exception, on the pool's
  // result thread once the task is done (at once if the pool has ended).
  async_result& then(typename detail::async_state<R>::callback callback,
                     std::function<void(std::exception_ptr)> error_callback = {}) {
    state_->add_callbacks(std::move(callback), std::move(error_callback));
    return *this;
  }

 private:
  friend class pool;

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

// The lazy results of imap / imap_unordered: an input range, iterated once.
template <class R>
class imap_result {
 public:
  class iterator {
   public:
    using value_type = R;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(std::shared_ptr<detail::imap_state<R>> state) : state_(std::move(state)) { load(); }
    const R& operator*() const { return current_[position_]; }
    const R* operator->() const { return &current_[position_]; }
    iterator& operator++() {
      if (++position_ == current_.size()) load();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return it.done_; }

   private:
    void load() {
      position_ = 0;
      for (;;) {
        auto chunk = state_->next();  // rethrows a failed task's exception here
        if (!chunk) {
          done_ = true;
          return;
        }
        current_ = std::move(*chunk);
        if (!current_.empty()) return;
      }
    }
    std::shared_ptr<detail::imap_state<R>> state_;
    std::vector<R> current_;
    std::size_t position_ = 0;
    bool done_ = false;
  };

  explicit imap_result(std::shared_ptr<detail::imap_state<R>> state) : state_(std::move(state)) {}
  iterator begin() { return iterator(state_); }
  std::default_sentinel_t end() const { return {}; }

 private:
  std::shared_ptr<detail::imap_state<R>> state_;
};

class pool {
 public:
  explicit pool(unsigned processes = 0) : pool(options_with(processes)) {}
  explicit pool(pool_options options)
      : core_(std::make_shared<detail::pool_core>(detail::pool_config{
            options.processes, std::move(options.initializer), options.max_tasks_per_child, options.task_timeout})) {}
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
    MPROC_CHECK_TASK_FUNCTION(F);
    using R = std::invoke_result_t<F&, std::decay_t<A>...>;
    auto state = make_state<R>();
    const std::uint32_t id =
        core_->function_id(&detail::invoke_apply<F, std::decay_t<A>...>, detail::to_generic(f));
    auto& buffer = encode_buffer();
    buffer.assign(detail::pool_core::task_header_bytes, std::byte{0});
    to_bytes(std::tuple<std::decay_t<A>...>(std::forward<A>(args)...), buffer);
    core_->submit(id, buffer, state);
    return async_result<R>(state);
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

  // Lazy results in input order / in completion order; a task's exception is rethrown
  // when iteration reaches it.
  template <class F, std::ranges::input_range Range>
  auto imap(F f, Range&& items, std::size_t chunksize = 1) {
    return imap_impl(f, std::forward<Range>(items), chunksize, true);
  }
  template <class F, std::ranges::input_range Range>
  auto imap_unordered(F f, Range&& items, std::size_t chunksize = 1) {
    return imap_impl(f, std::forward<Range>(items), chunksize, false);
  }

  // No new tasks; the workers end when the queued ones are done.
  void close() {
    if (core_) core_->close();
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

  static std::vector<std::byte>& encode_buffer() {
    thread_local std::vector<std::byte> buffer;
    return buffer;
  }

  template <class R>
  std::shared_ptr<detail::async_state<R>> make_state() {
    auto state = std::allocate_shared<detail::async_state<R>>(
        detail::arena_allocator<detail::async_state<R>>(state_arena_), core_);
    state->shared_from_this_hook_ = state;
    return state;
  }

  // The items of a map, as one contiguous span: with `borrow`, the caller's own memory when
  // the range is contiguous, else a copy.
  template <class T>
  struct item_view {
    std::vector<T> copy;
    std::span<const T> items;
  };
  template <bool borrow, class Range>
  static auto view_items(Range&& items) {
    using T = std::remove_cvref_t<std::ranges::range_value_t<Range>>;
    item_view<T> view;
    if constexpr (borrow && std::ranges::contiguous_range<Range> && std::ranges::sized_range<Range> &&
                  std::is_same_v<std::remove_cvref_t<std::ranges::range_reference_t<Range>>, T>) {
      view.items = std::span<const T>(std::ranges::data(items), std::ranges::size(items));
    } else {
      if constexpr (std::ranges::sized_range<Range>) view.copy.reserve(std::ranges::size(items));
      for (auto&& item : items) view.copy.emplace_back(std::forward<decltype(item)>(item));
      view.items = view.copy;
    }
    return view;
  }

  // chunksize 0: Python's rule, ceil(n / (4 × workers)), capped at about max_chunk_bytes
  // of items, so that a chunk and its results fit in a few of the channels' blocks and the
  // workers share a big map evenly (Python's rule made 1.25M-item chunks of a 10M map).
  static constexpr std::size_t max_chunk_bytes = 32 * 1024;
  template <class T>
  std::size_t auto_chunksize(std::size_t n) const {
    const std::size_t per = std::size_t{4} * size();
    const std::size_t python = n / per + (n % per != 0 ? 1 : 0);
    return std::clamp<std::size_t>(python, 1, std::max<std::size_t>(1, max_chunk_bytes / sizeof(T)));
  }
  // How many chunks of one map are in flight at once.
  std::size_t map_window() const { return std::size_t{4} * size(); }

  template <class F, class T, bool star>
  static auto result_type_of() {
    if constexpr (star) {
      return std::type_identity<std::remove_cvref_t<decltype(std::apply(std::declval<F&>(), std::declval<T>()))>>{};
    } else {
      return std::type_identity<std::remove_cvref_t<std::invoke_result_t<F&, T>>>{};
    }
  }

  // Submits items in chunks; `make_chunk_state(index, offset, count)` gives each chunk's
  // state.
  template <bool star, class F, class T, class MakeState>
  void submit_chunks(F f, std::span<const T> all, std::size_t chunksize, MakeState make_chunk_state) {
    const std::uint32_t id = core_->function_id(&detail::invoke_chunk<F, T, star>, detail::to_generic(f));
    auto& buffer = encode_buffer();
    for (std::size_t offset = 0, index = 0; offset < all.size(); offset += chunksize, ++index) {
      const auto chunk = all.subspan(offset, std::min(chunksize, all.size() - offset));
      const std::size_t size = detail::encode_vector_after_header(chunk, buffer);
      core_->submit(id, std::span(buffer.data(), size), make_chunk_state(index, offset, chunk.size()));
    }
  }

  // `borrow`: the caller waits for the result (map, starmap), so a contiguous input is read
  // in place while chunks are fed; map_async copies it, as its caller may let it go.
  template <bool star, bool borrow, class F, class Range>
  auto map_impl(F f, Range&& items, std::size_t chunksize) {
    MPROC_CHECK_TASK_FUNCTION(F);
    auto view = view_items<borrow>(std::forward<Range>(items));
    const auto all = view.items;
    using T = typename decltype(all)::value_type;
    using R = typename decltype(result_type_of<F, T, star>())::type;
    static_assert(!std::is_void_v<R>, "pool::map needs a function that returns a value; use apply_async for void tasks");
    using feed_type = detail::map_feed<T, R>;
    auto state = make_state<std::vector<R>>();
    if (all.empty()) {
      state->set_value(std::vector<R>{});
      return std::pair(async_result<std::vector<R>>(state), std::shared_ptr<feed_type>());
    }
    if (chunksize == 0) chunksize = auto_chunksize<T>(all.size());
    const std::uint32_t id = core_->function_id(&detail::invoke_chunk<F, T, star>, detail::to_generic(f));
    auto feed = std::make_shared<feed_type>(state, core_, id, std::move(view.copy), all, chunksize, map_window());
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
    return started.first.move_out();
  }

  template <class F, class Range>
  auto imap_impl(F f, Range&& items, std::size_t chunksize, bool ordered) {
    MPROC_CHECK_TASK_FUNCTION(F);
    const auto view = view_items<true>(std::forward<Range>(items));  // submitted before returning
    const auto all = view.items;
    using T = typename decltype(all)::value_type;
    using R = typename decltype(result_type_of<F, T, false>())::type;
    static_assert(!std::is_void_v<R>, "pool::imap needs a function that returns a value");
    if (chunksize == 0) chunksize = 1;
    const std::size_t chunks = (all.size() + chunksize - 1) / chunksize;
    auto state = std::make_shared<detail::imap_state<R>>(chunks, ordered);
    submit_chunks<false>(f, all, chunksize, [&](std::size_t index, std::size_t, std::size_t) {
      return std::make_shared<detail::imap_chunk_state<R>>(state, index);
    });
    return imap_result<R>(state);
  }

  std::shared_ptr<detail::pool_core> core_;
  std::shared_ptr<detail::state_arena> state_arena_ = std::make_shared<detail::state_arena>();
};

}  // namespace mproc
