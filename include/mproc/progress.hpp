// mproc::progress — tqdm for any input range: the results of imap, imap_unordered or
// as_completed, or anything else a range-for walks.
//
// Contract:
// - `progress(r, label)` is a view of the same elements as `r` (an lvalue range is
//   referred to, an rvalue one moved in), counting each one the loop takes. The total is
//   std::ranges::size(r) when `r` is sized; `progress(r, total, label)` gives it.
// - It draws on stderr, as it is when the view is made: on a terminal, one line redrawn in
//   place at most ~10 times a second ("label: 45%|####      | 450/1000 [00:02<00:03,
//   180.5 it/s]"), ended with a newline when the loop ends; otherwise (a pipe, a file, a
//   log) one plain line every 5 seconds and one at the end, so logs stay readable. Without
//   a total: the count, elapsed time and rate.
// - The last drawing comes when iteration reaches the end or the view is destroyed (a
//   loop left early), with the count reached. Drawing never throws and never fails the
//   loop: a line that cannot be written is dropped.
// - Thread safety: one view belongs to the thread that iterates it.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <utility>

#include "mproc/detail/os/held_range.hpp"
#include "mproc/detail/progress/progress_meter.hpp"

namespace mproc {

// `Range`: the range's type as progress() received it (see held_range).
template <class Range>
class progress_view : public std::ranges::view_base {
  using V = std::remove_reference_t<Range>;

 public:
  progress_view(Range&& base, std::optional<std::uint64_t> total, std::string label)
      : base_(std::forward<Range>(base)),
        meter_(std::make_shared<detail::progress_meter>(std::move(label), total,
                                                        detail::progress_style::for_fd(STDERR_FILENO))) {}

  class iterator {
   public:
    using value_type = std::ranges::range_value_t<V>;
    using difference_type = std::ranges::range_difference_t<V>;
    iterator() = default;
    iterator(std::ranges::iterator_t<V> at, detail::progress_meter* meter) : at_(std::move(at)), meter_(meter) {}
    decltype(auto) operator*() const { return *at_; }
    iterator& operator++() {
      ++at_;
      meter_->add();
      return *this;
    }
    void operator++(int) { ++*this; }
    const std::ranges::iterator_t<V>& base() const noexcept { return at_; }
    detail::progress_meter* meter() const noexcept { return meter_; }

   private:
    std::ranges::iterator_t<V> at_;
    detail::progress_meter* meter_ = nullptr;
  };
  class sentinel {
   public:
    sentinel() = default;
    explicit sentinel(std::ranges::sentinel_t<V> end) : end_(std::move(end)) {}
    // Reaching the end draws the last time.
    friend bool operator==(const iterator& it, const sentinel& s) {
      const bool done = it.base() == s.end_;
      if (done) it.meter()->finish();
      return done;
    }

   private:
    std::ranges::sentinel_t<V> end_;
  };

  iterator begin() { return iterator(std::ranges::begin(base_.get()), meter_.get()); }
  sentinel end() { return sentinel(std::ranges::end(base_.get())); }

 private:
  detail::held_range<Range> base_;
  std::shared_ptr<detail::progress_meter> meter_;  // drawn a last time when the view goes
};

template <std::ranges::input_range R>
progress_view<R> progress(R&& range, std::string label = {}) {
  std::optional<std::uint64_t> total;
  if constexpr (std::ranges::sized_range<R>) total = static_cast<std::uint64_t>(std::ranges::size(range));
  return progress_view<R>(std::forward<R>(range), total, std::move(label));
}

template <std::ranges::input_range R>
progress_view<R> progress(R&& range, std::size_t total, std::string label = {}) {
  return progress_view<R>(std::forward<R>(range), total, std::move(label));
}

}  // namespace mproc
