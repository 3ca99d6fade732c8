// mproc::thread_pool — Python's multiprocessing.pool.ThreadPool: the API of mproc::pool on
// threads of this process, so that code switches between threads and processes by
// changing one type.
//
// Contract (where it differs from mproc::pool):
// - Any callable is a task (captures, std::function, ...), and nothing is serialised:
//   arguments are copied or moved in, results moved out. A task that crashes takes the
//   program with it: there is no isolation, no task_timeout and no max_tasks_per_child
//   (pool_options with either throws mproc::error); `initializer` runs once in each
//   thread, and a thread whose initializer throws reports it on stderr and serves anyway
//   (it cannot be replaced, and queued tasks must not wait for it).
// - async_result, callbacks (on the pool's callback thread, in completion order), wait,
//   as_completed, cancel (exact: a queued task is taken by a thread or removed, under one
//   mutex), cancel_pending, lazy imap and progress behave as with mproc::pool.
// - terminate() fails the queued tasks with closed_error; running ones finish (a thread
//   cannot be killed). The destructor closes and joins.
#pragma once

#include <atomic>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <ranges>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mproc/detail/os/big_vector.hpp"
#include "mproc/detail/pool/thread_pool_core.hpp"
#include "mproc/error.hpp"
#include "mproc/pool.hpp"

namespace mproc {

namespace detail {

// The results of one map on threads, written in place by the chunks as they run.
template <class R>
class values_gather {
 public:
  values_gather(std::shared_ptr<async_state<std::vector<R>>> target, std::size_t total, std::size_t chunks)
      : target_(std::move(target)), results_(make_big_vector<R>(total)), chunks_left_(chunks), chunks_out_(chunks) {}
  std::span<R> slots(std::size_t offset, std::size_t count) { return std::span(results_).subspan(offset, count); }
  // From the thread that filled its slots.
  void chunk_filled() noexcept {
    if (chunks_left_.fetch_sub(1, std::memory_order_acq_rel) == 1 && !decided_.exchange(true)) {
      target_->set_value(std::move(results_));
    }
  }
  // The first failure decides the map, as Python's map fails as a whole.
  void chunk_failed(std::exception_ptr error) noexcept {
    if (!decided_.exchange(true)) target_->set_error(std::move(error));
  }
  bool decided() const noexcept { return decided_.load(std::memory_order_acquire); }

  // A chunk will not touch the items any more: it ran, was skipped, failed, or was never
  // queued. A map that read the caller's items returns only once all have.
  void chunk_ended(std::size_t n = 1) noexcept {
    if (chunks_out_.fetch_sub(n, std::memory_order_acq_rel) == n) chunks_out_.notify_all();
  }
  void wait_all_ended() const noexcept {
    for (std::size_t out = chunks_out_.load(std::memory_order_acquire); out != 0;
         out = chunks_out_.load(std::memory_order_acquire)) {
      chunks_out_.wait(out, std::memory_order_acquire);
    }
  }

 private:
  std::shared_ptr<async_state<std::vector<R>>> target_;
  std::vector<R> results_;
  std::atomic<std::size_t> chunks_left_;
  std::atomic<std::size_t> chunks_out_;
  std::atomic<bool> decided_{false};
};

// A map chunk's state on threads: how a cancel or a terminate fails it.
template <class R>
class values_chunk final : public task_state {
 public:
  explicit values_chunk(std::shared_ptr<values_gather<R>> gather) : gather_(std::move(gather)) {}
  void complete(std::span<const std::byte>) noexcept override {}
  void fail(std::exception_ptr error) noexcept override {  // cancelled or terminated: it never runs
    gather_->chunk_failed(std::move(error));
    gather_->chunk_ended();
  }

 private:
  std::shared_ptr<values_gather<R>> gather_;
};

// f on one item of a map on threads: the item copied, as a process worker gets its copy.
template <class F, class T, bool star>
chunk_result_t<F, T, star> call_on_copy(F& f, const T& item) {
  T copy = item;
  return call_item<F, T, star>(f, std::move(copy));
}

}  // namespace detail

class thread_pool {
 public:
  explicit thread_pool(unsigned threads = 0)
      : core_(std::make_shared<detail::thread_pool_core>(threads, std::function<void()>{})) {}
  explicit thread_pool(pool_options options) : core_(make_core(std::move(options))) {}
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  ~thread_pool() {
    try {
      close();
      join();
    } catch (...) {
    }
  }

  template <class F, class... A>
  auto apply(F&& f, A&&... args) {
    return apply_async(std::forward<F>(f), std::forward<A>(args)...).get();
  }

  template <class F, class... A>
  auto apply_async(F&& f, A&&... args) {
    using R = std::invoke_result_t<std::decay_t<F>&, std::decay_t<A>...>;
    auto state = std::make_shared<detail::async_state<R>>(core_);
    auto call =
        std::make_shared<std::tuple<std::decay_t<F>, std::decay_t<A>...>>(std::forward<F>(f), std::forward<A>(args)...);
    core_->submit(state, [state, call] { run_into(*state, *call); });
    return async_result<R>(std::move(state));
  }

  // As pool::map: results in input order; chunksize 0 as Python's rule. map reads the
  // caller's items in place, map_async copies them.
  template <class F, std::ranges::input_range Range>
  auto map(F f, Range&& items, std::size_t chunksize = 0) {
    return map_and_wait<false>(std::move(f), std::forward<Range>(items), chunksize);
  }
  template <class F, std::ranges::input_range Range>
  auto map_async(F f, Range&& items, std::size_t chunksize = 0) {
    return map_impl<false, false>(std::move(f), std::forward<Range>(items), chunksize).first;
  }
  template <class F, std::ranges::input_range Range>
  auto starmap(F f, Range&& tuples, std::size_t chunksize = 0) {
    return map_and_wait<true>(std::move(f), std::forward<Range>(tuples), chunksize);
  }
  template <class F, std::ranges::input_range Range>
  auto starmap_async(F f, Range&& tuples, std::size_t chunksize = 0) {
    return map_impl<true, false>(std::move(f), std::forward<Range>(tuples), chunksize).first;
  }

  // As pool::imap: the input read lazily, about two chunks per thread ahead of the loop.
  template <class F, std::ranges::input_range Range>
  auto imap(F f, Range&& items, std::size_t chunksize = 1) {
    return imap_impl(std::move(f), std::forward<Range>(items), chunksize, true);
  }
  template <class F, std::ranges::input_range Range>
  auto imap_unordered(F f, Range&& items, std::size_t chunksize = 1) {
    return imap_impl(std::move(f), std::forward<Range>(items), chunksize, false);
  }

  void cancel_pending() { core_->cancel_pending(); }
  void close() {
    imaps_.drain_all();
    core_->close();
  }
  void terminate() { core_->terminate(); }
  void join() { core_->join(); }
  unsigned size() const noexcept { return core_->size(); }

 private:
  static std::shared_ptr<detail::thread_pool_core> make_core(pool_options options) {
    if (options.task_timeout.count() != 0 || options.max_tasks_per_child != 0) {
      throw error(
          "mproc::thread_pool: a thread cannot be killed or replaced, so task_timeout and max_tasks_per_child need "
          "mproc::pool (processes)");
    }
    return std::make_shared<detail::thread_pool_core>(options.processes, std::move(options.initializer));
  }

  template <class R, class Call>
  static void run_into(detail::async_state<R>& state, Call& call) noexcept {
    try {
      auto invoke = [](auto& f, auto&... a) -> R { return std::invoke(f, std::move(a)...); };
      if constexpr (std::is_void_v<R>) {
        std::apply(invoke, call);
        state.set_value();
      } else {
        state.set_value(std::apply(invoke, call));
      }
    } catch (...) {
      state.set_error(std::current_exception());
    }
  }

  // Every chunk is queued at once: a queued chunk is a closure over a span, not a copy.
  template <bool star, bool borrow, class F, class Range>
  auto map_impl(F f, Range&& items, std::size_t chunksize) {
    auto view = std::make_shared<detail::item_view<std::remove_cvref_t<std::ranges::range_value_t<Range>>>>(
        detail::view_items<borrow>(std::forward<Range>(items)));
    using T = typename decltype(view->items)::value_type;
    using R = detail::chunk_result_t<F, T, star>;
    auto state = std::make_shared<detail::async_state<std::vector<R>>>(core_);
    const std::size_t n = view->items.size();
    if (n == 0) {
      state->set_value(std::vector<R>{});
      return std::pair(async_result<std::vector<R>>(std::move(state)), std::shared_ptr<detail::values_gather<R>>());
    }
    if (chunksize == 0) chunksize = detail::auto_chunksize<T>(n, size());
    auto gather = std::make_shared<detail::values_gather<R>>(state, n, (n + chunksize - 1) / chunksize);
    auto fn = std::make_shared<F>(std::move(f));
    for (std::size_t offset = 0; offset < n; offset += chunksize) {
      const std::size_t count = std::min(chunksize, n - offset);
      auto job = [gather, fn, view, offset, count] {
        if (!gather->decided()) {  // else an earlier chunk failed the map
          try {
            const auto in = view->items.subspan(offset, count);
            auto out = gather->slots(offset, count);
            for (std::size_t i = 0; i < count; ++i) out[i] = detail::call_on_copy<F, T, star>(*fn, in[i]);
            gather->chunk_filled();
          } catch (...) {
            gather->chunk_failed(std::current_exception());
          }
        }
        gather->chunk_ended();
      };
      try {
        core_->submit(std::make_shared<detail::values_chunk<R>>(gather), std::move(job));
      } catch (...) {
        gather->chunk_failed(std::current_exception());
        gather->chunk_ended((n - offset + chunksize - 1) / chunksize);  // this one and those after
        break;
      }
    }
    return std::pair(async_result<std::vector<R>>(std::move(state)), std::move(gather));
  }

  template <bool star, class F, class Range>
  auto map_and_wait(F f, Range&& items, std::size_t chunksize) {
    auto started = map_impl<star, true>(std::move(f), std::forward<Range>(items), chunksize);
    auto& result = started.first;
    const auto& gather = started.second;
    // The chunks read the caller's items: return (or throw) only once none will any more.
    struct wait_for_chunks {
      const decltype(gather)& g;
      ~wait_for_chunks() {
        if (g) g->wait_all_ended();
      }
    } guard{gather};
    if constexpr (std::is_same_v<typename decltype(result.get())::value_type, detail::no_result>) {
      result.get();
    } else {
      return result.get();
    }
  }

  template <class F, class Range>
  auto imap_impl(F f, Range&& items, std::size_t chunksize, bool ordered) {
    using T = std::remove_cvref_t<std::ranges::range_value_t<Range>>;
    using R = detail::chunk_result_t<F, T, false>;
    static_assert(!std::is_same_v<R, detail::no_result>,
                  "thread_pool::imap needs a function that returns a value; use map or apply_async for a void "
                  "function");
    if (chunksize == 0) chunksize = 1;
    auto send = [core = std::weak_ptr<detail::thread_pool_core>(core_), fn = std::make_shared<F>(std::move(f))](
                    std::size_t index, std::span<const T> chunk,
                    const std::shared_ptr<detail::imap_state<R>>& state) -> std::uint64_t {
      auto c = core.lock();
      if (!c) throw closed_error("mproc::thread_pool::imap: the pool was terminated");
      auto task = std::make_shared<detail::imap_chunk_state<R>>(state, index);
      auto copy = std::make_shared<std::vector<T>>(chunk.begin(), chunk.end());
      c->submit(
          task,
          [state, index, fn, copy] {
            try {
              std::vector<R> values;
              values.reserve(copy->size());
              for (const T& item : *copy) values.push_back(detail::call_on_copy<F, T, false>(*fn, item));
              state->chunk_values(index, std::move(values));
            } catch (...) {
              state->chunk_failed(index, std::current_exception());
            }
          },
          true);
      return task->task_id();
    };
    auto feed = std::make_shared<detail::imap_feed<R, Range>>(core_, std::move(send), std::forward<Range>(items),
                                                              chunksize, std::size_t{2} * size(), ordered);
    feed->start();
    imaps_.add(feed);
    return imap_result<R>(std::move(feed));
  }

  std::shared_ptr<detail::thread_pool_core> core_;
  detail::live_feeds imaps_;
};

}  // namespace mproc
