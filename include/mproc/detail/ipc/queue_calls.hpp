// The calls every mproc queue offers, Python's Queue API (blocking, timed, never waiting),
// written once over two of the queue's own: mproc::queue and mproc::redis::queue.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <utility>

#include "mproc/detail/wait/deadline.hpp"
#include "mproc/detail/wait/duration.hpp"
#include "mproc/error.hpp"

namespace mproc::detail {

// Queue derives from queue_calls<Queue, T>, befriends it, and has
//   static constexpr const char* api_name;  // how errors name it: "mproc::queue"
//   bool put_until(const T&, deadline);     // false: still full at the deadline
//   std::optional<T> get_until(deadline);   // empty: still empty at the deadline
//   std::size_t qsize() const;              // messages in it now
//   std::size_t maxsize() const;            // 0: unbounded
template <class Queue, class T>
class queue_calls {
 public:
  // Blocks while the queue is full.
  void put(const T& value) { self().put_until(value, deadline::never()); }
  // Blocks at most `timeout`; then throws queue_full.
  template <duration D>
  void put(const T& value, D timeout) {
    if (!self().put_until(value, deadline::in(timeout)))
      throw queue_full(std::string(Queue::api_name) +
                       "::put: the queue stayed full for the whole timeout; wait longer, or take values faster");
  }
  // Never waits; throws queue_full when full.
  void put_nowait(const T& value) {
    if (!try_put(value))
      throw queue_full(std::string(Queue::api_name) + "::put_nowait: the queue is full; use put() to wait for room");
  }
  bool try_put(const T& value) { return self().put_until(value, deadline::no_wait()); }
  template <duration D>
  bool try_put_for(const T& value, D timeout) {
    return self().put_until(value, deadline::in(timeout));
  }

  // Blocks while the queue is empty.
  T get() { return std::move(*self().get_until(deadline::never())); }
  // Blocks at most `timeout`; then throws queue_empty.
  template <duration D>
  T get(D timeout) {
    auto value = self().get_until(deadline::in(timeout));
    if (!value)
      throw queue_empty(std::string(Queue::api_name) +
                        "::get: nothing came within the timeout; wait longer, or check that a producer runs");
    return std::move(*value);
  }
  // Never waits; throws queue_empty when empty.
  T get_nowait() {
    auto value = try_get();
    if (!value)
      throw queue_empty(std::string(Queue::api_name) +
                        "::get_nowait: the queue is empty; use get() to wait for a value");
    return std::move(*value);
  }
  std::optional<T> try_get() { return self().get_until(deadline::no_wait()); }
  template <duration D>
  std::optional<T> try_get_for(D timeout) {
    return self().get_until(deadline::in(timeout));
  }

  // Snapshots: others may put and get meanwhile.
  bool empty() const { return self().qsize() == 0; }
  bool full() const {
    const std::size_t max = self().maxsize();
    return max != 0 && self().qsize() >= max;
  }

 private:
  Queue& self() { return static_cast<Queue&>(*this); }
  const Queue& self() const { return static_cast<const Queue&>(*this); }
};

}  // namespace mproc::detail
