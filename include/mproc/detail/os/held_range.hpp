// A range kept by something that reads it later (imap's input, progress's range): an
// lvalue range by reference, an rvalue one moved in. Not std::views::all: its views derive
// from std::ranges::view_interface, which Clang 14 cannot compile with libstdc++ 12.
#pragma once

#include <memory>
#include <type_traits>
#include <utility>

namespace mproc::detail {

template <class Range>
class held_range {
  static constexpr bool by_reference = std::is_lvalue_reference_v<Range>;
  using stored = std::conditional_t<by_reference, std::remove_reference_t<Range>*, std::remove_cvref_t<Range>>;

 public:
  explicit held_range(Range&& range) : range_(hold(std::forward<Range>(range))) {}
  auto& get() noexcept {
    if constexpr (by_reference) {
      return *range_;
    } else {
      return range_;
    }
  }

 private:
  static stored hold(Range&& range) {
    if constexpr (by_reference) {
      return std::addressof(range);
    } else {
      return stored(std::move(range));
    }
  }
  stored range_;
};

}  // namespace mproc::detail
