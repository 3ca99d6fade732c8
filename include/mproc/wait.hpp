// mproc::wait_ready — Python's multiprocessing.connection.wait: which of these objects is
// ready?
//
// Contract:
// - A waitable converts implicitly from a reference to:
//     connection  readable: a message has begun to arrive, or the peer has closed its end
//                 (recv then throws closed_error at once). A write-only end: mproc::error.
//     process     ended (its sentinel is readable); it is not reaped: exitcode() does that.
//     queue<T>    (and joinable_queue<T>) holds a message: a get() now would not block,
//                 unless another consumer takes it first.
//     event       is set.
//     async_result<R>  ready(): its value or its error is in.
//   It refers to its object, which must outlive the wait. A closed connection or queue
//   handle throws closed_error; a process not started, mproc::error.
// - wait_ready(objects) blocks until at least one is ready and returns the indices of all
//   that are ready then, ascending. wait_ready(objects, timeout) waits at most `timeout`
//   (one absolute CLOCK_MONOTONIC deadline; zero: look and return) and may return none.
//   An empty list with no timeout: mproc::error (it would wait forever).
// - What readiness means is the moment the call looked: another consumer of a queue or an
//   end may take what made it ready before the caller acts.
// - Signals: EINTR is retried within the deadline, never reported.
// - Cost to everyone else: none while nobody waits this way. A wait counts itself among
//   the sleepers of each queue and event it covers, as a get() or wait() does, so their
//   puts and sets make a wake syscall only while some thread sleeps on them.
// - How it sleeps: descriptors only, one poll(2); futex-based objects only, one
//   futex_waitv(2) (Linux >= 5.16; on older kernels or under valgrind it re-checks every
//   millisecond instead); both at once, the calling thread sleeps on the futexes while a
//   short-lived thread polls the descriptors. At most 127 futex-based objects are slept on
//   at once; past that, the rest are re-checked every millisecond.
// - Thread safety: any number of threads may wait on the same objects at once.
#pragma once

#include <concepts>
#include <cstddef>
#include <initializer_list>
#include <span>
#include <vector>

#include "mproc/detail/wait/deadline.hpp"
#include "mproc/detail/wait/duration.hpp"
#include "mproc/detail/wait/wait_probe.hpp"

namespace mproc {

class waitable {
 public:
  template <class T>
    requires requires(T& object) {
      { mproc_wait_probe(object) } -> std::same_as<detail::wait_probe>;
    }
  waitable(T& object)  // NOLINT(google-explicit-constructor): a list of mixed objects is the point
      : probe_(mproc_wait_probe(object)) {}

  const detail::wait_probe& probe() const noexcept { return probe_; }

 private:
  detail::wait_probe probe_;
};

namespace detail {
std::vector<std::size_t> wait_ready_until(std::span<const waitable> objects, deadline until);
}

// Blocks until at least one object is ready; the indices of those ready, ascending.
inline std::vector<std::size_t> wait_ready(std::span<const waitable> objects) {
  return detail::wait_ready_until(objects, detail::deadline::never());
}
inline std::vector<std::size_t> wait_ready(std::initializer_list<waitable> objects) {
  return wait_ready(std::span<const waitable>(objects.begin(), objects.size()));
}
// Waits at most `timeout`; empty when none became ready.
template <detail::duration D>
std::vector<std::size_t> wait_ready(std::span<const waitable> objects, D timeout) {
  return detail::wait_ready_until(objects, detail::deadline::in(timeout));
}
template <detail::duration D>
std::vector<std::size_t> wait_ready(std::initializer_list<waitable> objects, D timeout) {
  return wait_ready(std::span<const waitable>(objects.begin(), objects.size()), timeout);
}

}  // namespace mproc
