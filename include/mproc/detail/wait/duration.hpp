// Conversion of any std::chrono::duration to the nanoseconds the compiled core takes.
#pragma once

#include <chrono>
#include <concepts>
#include <type_traits>

namespace mproc::detail {

template <class T>
inline constexpr bool is_duration_v = false;
template <class Rep, class Period>
inline constexpr bool is_duration_v<std::chrono::duration<Rep, Period>> = true;

template <class D>
concept duration = is_duration_v<std::remove_cvref_t<D>>;

// Saturates instead of overflowing, so `hours::max()` means "practically forever" and a
// negative timeout means "do not wait" (as a zero timeout does).
template <duration D>
constexpr std::chrono::nanoseconds to_nanoseconds(D timeout) noexcept {
  using std::chrono::nanoseconds;
  using wide = std::chrono::duration<long double, std::nano>;
  const wide w = std::chrono::duration_cast<wide>(timeout);
  if (!(w > wide::zero())) return nanoseconds::zero();  // also catches NaN
  if (w >= wide(static_cast<long double>(nanoseconds::max().count()))) return nanoseconds::max();
  return std::chrono::duration_cast<nanoseconds>(timeout);
}

}  // namespace mproc::detail

namespace mproc::detail {

// The absolute CLOCK_MONOTONIC deadline `timeout` from now, saturated: a timed wait turns
// its timeout into one deadline, so retries after EINTR or spurious wakes never stretch it.
template <duration D>
std::chrono::steady_clock::time_point deadline_in(D timeout) noexcept {
  using clock = std::chrono::steady_clock;
  const auto now = clock::now();
  const std::chrono::nanoseconds ns = to_nanoseconds(timeout);
  if (ns >= clock::time_point::max() - now) return clock::time_point::max();
  return now + ns;
}

// A deadline that has already passed: "do not wait".
inline constexpr std::chrono::steady_clock::time_point no_wait{};

}  // namespace mproc::detail
