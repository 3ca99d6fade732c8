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

// Saturates instead of overflowing, so `hours::max()` means "practically forever" and a
// negative timeout means "do not wait" (as a zero timeout does).
template <class D>
constexpr std::chrono::nanoseconds duration_to_nanoseconds(D timeout) noexcept {
  using std::chrono::nanoseconds;
  using wide = std::chrono::duration<long double, std::nano>;
  const wide w = std::chrono::duration_cast<wide>(timeout);
  if (!(w > wide::zero())) return nanoseconds::zero();  // also catches NaN
  if (w >= wide(static_cast<long double>(nanoseconds::max().count()))) return nanoseconds::max();
  return std::chrono::duration_cast<nanoseconds>(timeout);
}

// What a timeout parameter accepts: a std::chrono duration. A plain number (Python's
// habit: 0.5 for half a second) is accepted here too, only so that to_nanoseconds can
// reject it with one line that says what to write, instead of a page of overloads.
template <class D>
concept duration = is_duration_v<std::remove_cvref_t<D>> ||
    (std::is_arithmetic_v<std::remove_cvref_t<D>> && !std::is_same_v<std::remove_cvref_t<D>, bool>);

template <class D>
inline constexpr bool is_number_timeout_v = !is_duration_v<std::remove_cvref_t<D>>;

// A timeout's nanoseconds (duration_to_nanoseconds); a number fails to compile, saying why.
template <duration D>
constexpr std::chrono::nanoseconds to_nanoseconds(D timeout) noexcept {
  static_assert(!is_number_timeout_v<D>,
                "mproc: a timeout is a std::chrono duration, not a number: write 500ms or 2s (using namespace "
                "std::chrono_literals), or std::chrono::duration<double>(0.5)");
  if constexpr (is_number_timeout_v<D>) {
    return std::chrono::nanoseconds::zero();
  } else {
    return duration_to_nanoseconds(timeout);
  }
}

}  // namespace mproc::detail
