// The counting and drawing under mproc::progress: a count against an optional total,
// drawn on a file descriptor either as a bar redrawn in place (a terminal) or as plain
// lines now and then (a log), with the rate, the time elapsed and the time left.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace mproc::detail {

struct progress_style {
  int fd = 2;                                                              // stderr
  bool terminal = false;                                                   // redraw in place
  std::chrono::nanoseconds redraw_every = std::chrono::milliseconds(100);  // terminal: ~10 a second
  std::chrono::nanoseconds line_every = std::chrono::seconds(5);           // otherwise: a line each
  std::size_t width = 80;                                                  // terminal columns
  // The style for `fd` as it is: a terminal (isatty) and its width, or a plain log.
  static progress_style for_fd(int fd);
};

// What one drawing says: the numbers, so tests check them and not only the text.
struct progress_reading {
  std::uint64_t count = 0;
  std::optional<std::uint64_t> total;
  std::chrono::nanoseconds elapsed{0};
  double rate = 0;                               // items a second, 0 before any time has passed
  std::optional<std::chrono::nanoseconds> left;  // with a total and a rate
};

class progress_meter {
 public:
  using clock = std::chrono::steady_clock;

  progress_meter(std::string label, std::optional<std::uint64_t> total, progress_style style,
                 clock::time_point start = clock::now());
  ~progress_meter();  // finish()
  progress_meter(const progress_meter&) = delete;
  progress_meter& operator=(const progress_meter&) = delete;

  // One more item (or n): draws if its style's interval has passed since the last drawing.
  void add(std::uint64_t n = 1, clock::time_point now = clock::now());
  // The last drawing, with a line end on a terminal; once. Later calls do nothing.
  void finish(clock::time_point now = clock::now()) noexcept;

  progress_reading reading(clock::time_point now) const;
  std::uint64_t count() const noexcept { return count_; }

  // One drawing of `r` (no \r or \n): the bar for a terminal, else the plain line.
  static std::string render(const std::string& label, const progress_reading& r, bool terminal, std::size_t width);

 private:
  void draw(clock::time_point now, bool last) noexcept;

  std::string label_;
  std::optional<std::uint64_t> total_;
  progress_style style_;
  clock::time_point start_;
  clock::time_point last_draw_;
  std::uint64_t count_ = 0;
  bool finished_ = false;
};

}  // namespace mproc::detail
