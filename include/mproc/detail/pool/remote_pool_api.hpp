// The pool API of the distributed pools (mproc::mpi::pool, mproc::redis::pool): mproc::pool's
// own, each call first checking at compile time that no argument or item holds a handle to
// this machine's memory (remote_task.hpp). `Derived::target(call)` gives the mproc::pool to
// forward to, or throws naming `call`.
#pragma once

#include <cstddef>
#include <ranges>
#include <utility>

#include "mproc/detail/pool/remote_task.hpp"
#include "mproc/pool.hpp"

namespace mproc::detail {

template <class Derived>
class remote_pool_api {
 public:
  template <class F, class... A>
  auto apply(F f, A&&... args) {
    check_remote_values<A...>();
    return to("apply").apply(f, std::forward<A>(args)...);
  }
  template <class F, class... A>
  auto apply_async(F f, A&&... args) {
    check_remote_values<A...>();
    return to("apply_async").apply_async(f, std::forward<A>(args)...);
  }
  template <class F, std::ranges::input_range Range>
  auto map(F f, Range&& items, std::size_t chunksize = 0) {
    check_remote_values<std::ranges::range_value_t<Range>>();
    return to("map").map(f, std::forward<Range>(items), chunksize);
  }
  template <class F, std::ranges::input_range Range>
  auto map_async(F f, Range&& items, std::size_t chunksize = 0) {
    check_remote_values<std::ranges::range_value_t<Range>>();
    return to("map_async").map_async(f, std::forward<Range>(items), chunksize);
  }
  template <class F, std::ranges::input_range Range>
  auto starmap(F f, Range&& tuples, std::size_t chunksize = 0) {
    check_remote_values<std::ranges::range_value_t<Range>>();
    return to("starmap").starmap(f, std::forward<Range>(tuples), chunksize);
  }
  template <class F, std::ranges::input_range Range>
  auto starmap_async(F f, Range&& tuples, std::size_t chunksize = 0) {
    check_remote_values<std::ranges::range_value_t<Range>>();
    return to("starmap_async").starmap_async(f, std::forward<Range>(tuples), chunksize);
  }
  template <class F, std::ranges::input_range Range>
  auto imap(F f, Range&& items, std::size_t chunksize = 1) {
    check_remote_values<std::ranges::range_value_t<Range>>();
    return to("imap").imap(f, std::forward<Range>(items), chunksize);
  }
  template <class F, std::ranges::input_range Range>
  auto imap_unordered(F f, Range&& items, std::size_t chunksize = 1) {
    check_remote_values<std::ranges::range_value_t<Range>>();
    return to("imap_unordered").imap_unordered(f, std::forward<Range>(items), chunksize);
  }
  void cancel_pending() { to("cancel_pending").cancel_pending(); }
  void close() { to("close").close(); }
  void terminate() { to("terminate").terminate(); }
  void join() { to("join").join(); }

 private:
  mproc::pool& to(const char* call) { return static_cast<Derived*>(this)->target(call); }
};

}  // namespace mproc::detail
