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
