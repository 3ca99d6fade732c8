// When a blocking call gives up: one absolute CLOCK_MONOTONIC time, or never. A timed wait
// turns its timeout into one deadline up front, so retries after EINTR or spurious wakes
// never stretch it.
#pragma once

#include <chrono>
#include <compare>

#include "mproc/detail/wait/duration.hpp"

namespace mproc::detail {

class deadline {
 public:
  using clock = std::chrono::steady_clock;

  constexpr explicit deadline(clock::time_point when) noexcept : when_(when) {}

  // Wait as long as it takes.
  static constexpr deadline never() noexcept { return deadline(clock::time_point::max()); }
  // Has passed already: do not wait, take only what is there.
  static constexpr deadline no_wait() noexcept { return deadline(clock::time_point{}); }
  // `timeout` from now, saturated: a timeout too long to represent is never.
  template <duration D>
  static deadline in(D timeout) noexcept {
    const auto now = clock::now();
    const std::chrono::nanoseconds ns = to_nanoseconds(timeout);
    if (ns >= clock::time_point::max() - now) return never();
    return deadline(now + ns);
  }
  // A time point of any clock, as a deadline on the monotonic clock; one that has passed
  // is no_wait().
  template <class Clock, class Duration>
  static deadline at(const std::chrono::time_point<Clock, Duration>& when) {
    const auto now = Clock::now();
    if (when <= now) return no_wait();
    return in(when - now);
  }

  constexpr bool is_never() const noexcept { return when_ == clock::time_point::max(); }
  constexpr clock::time_point when() const noexcept { return when_; }
  bool passed(clock::time_point now = clock::now()) const noexcept { return !is_never() && when_ <= now; }
  // Time left, zero once passed; nanoseconds::max() for never.
  std::chrono::nanoseconds left(clock::time_point now = clock::now()) const noexcept {
    if (is_never()) return std::chrono::nanoseconds::max();
    return when_ <= now ? std::chrono::nanoseconds::zero() : when_ - now;
  }

  friend constexpr auto operator<=>(const deadline&, const deadline&) noexcept = default;

 private:
  clock::time_point when_;
};

}  // namespace mproc::detail
