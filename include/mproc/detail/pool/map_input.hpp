// What pool::map, starmap and imap make of their input before submitting it: the items as
// one span, the chunk size, and the type of a result.
#pragma once

#include <algorithm>
#include <cstddef>
#include <ranges>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace mproc::detail {

// The items of a map, as one contiguous span: with `borrow`, the caller's own memory when
// the range is contiguous, else a copy.
template <class T>
struct item_view {
  std::vector<T> copy;
  std::span<const T> items;
};

template <bool borrow, class Range>
auto view_items(Range&& items) {
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

// chunksize 0: Python's rule, ceil(n / (4 × workers)), capped at about max_chunk_bytes of
// items, so that a chunk and its results fit in a few of the channels' blocks and the
// workers share a big map evenly (Python's rule made 1.25M-item chunks of a 10M map).
inline constexpr std::size_t max_chunk_bytes = 32 * 1024;
template <class T>
std::size_t auto_chunksize(std::size_t n, std::size_t workers) {
  const std::size_t per = 4 * workers;
  const std::size_t python = n / per + (n % per != 0 ? 1 : 0);
  return std::clamp<std::size_t>(python, 1, std::max<std::size_t>(1, max_chunk_bytes / sizeof(T)));
}

// What a map of a function returning void gathers for each item: nothing (an empty class
// travels as one byte), so that map(f, items) returns once every call has run.
struct no_result {};

// What f gives for one item: f(item), or with `star` f(std::get<0>(item), ...); no_result
// for void.
template <class R>
using result_or_none = std::conditional_t<std::is_void_v<R>, no_result, std::remove_cvref_t<R>>;
template <class F, class T, bool star>
struct chunk_result {
  using type = result_or_none<std::invoke_result_t<F&, T>>;
};
template <class F, class T>
struct chunk_result<F, T, true> {
  using type = result_or_none<decltype(std::apply(std::declval<F&>(), std::declval<T>()))>;
};
template <class F, class T, bool star>
using chunk_result_t = typename chunk_result<F, T, star>::type;

// The calling thread's buffer for encoding tasks, reused from call to call.
inline std::vector<std::byte>& task_encode_buffer() {
  thread_local std::vector<std::byte> buffer;
  return buffer;
}

}  // namespace mproc::detail
