// mproc::progress's meter: counting, rates and drawing (see progress_meter.hpp).
#include "mproc/detail/progress/progress_meter.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>

namespace mproc::detail {
namespace {

// H:MM:SS, or MM:SS under an hour, as tqdm writes it.
std::string clock_time(std::chrono::nanoseconds t) {
  const auto total = std::chrono::duration_cast<std::chrono::seconds>(t).count();
  char buf[32];
  if (total >= 3600) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(total / 3600),
                  static_cast<long long>(total / 60 % 60), static_cast<long long>(total % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%02lld:%02lld", static_cast<long long>(total / 60),
                  static_cast<long long>(total % 60));
  }
  return buf;
}

std::string rate_text(double rate) {
  char buf[48];
  if (rate >= 1 || rate == 0) {
    std::snprintf(buf, sizeof buf, "%.1f it/s", rate);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f s/it", 1 / rate);
  }
  return buf;
}

// Writes all of `text`, retrying after signals; a drawing that cannot be written is
// dropped (a progress bar must never fail the work it measures).
void write_all(int fd, const std::string& text) noexcept {
  std::size_t at = 0;
  while (at < text.size()) {
    const ssize_t n = ::write(fd, text.data() + at, text.size() - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    at += static_cast<std::size_t>(n);
  }
}

}  // namespace

progress_style progress_style::for_fd(int fd) {
  progress_style style;
  style.fd = fd;
  style.terminal = ::isatty(fd) == 1;
  winsize size{};
  if (style.terminal && ::ioctl(fd, TIOCGWINSZ, &size) == 0 && size.ws_col >= 20) style.width = size.ws_col;
  return style;
}

progress_meter::progress_meter(std::string label, std::optional<std::uint64_t> total, progress_style style,
                               clock::time_point start)
    : label_(std::move(label)), total_(total), style_(style), start_(start), last_draw_(start) {
  if (style_.terminal) draw(start, false);  // the empty bar at once
}

progress_meter::~progress_meter() { finish(); }

void progress_meter::add(std::uint64_t n, clock::time_point now) {
  count_ += n;
  const auto every = style_.terminal ? style_.redraw_every : style_.line_every;
  if (now - last_draw_ >= every) draw(now, false);
}

void progress_meter::finish(clock::time_point now) noexcept {
  if (finished_) return;
  finished_ = true;
  draw(now, true);
}

progress_reading progress_meter::reading(clock::time_point now) const {
  progress_reading r;
  r.count = count_;
  r.total = total_;
  r.elapsed = std::max(now - start_, clock::duration::zero());
  const double seconds = std::chrono::duration<double>(r.elapsed).count();
  if (seconds > 0) r.rate = static_cast<double>(count_) / seconds;
  if (total_ && r.rate > 0) {
    const double remaining = static_cast<double>(*total_ > count_ ? *total_ - count_ : 0) / r.rate;
    r.left = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(remaining));
  }
  return r;
}

std::string progress_meter::render(const std::string& label, const progress_reading& r, bool terminal,
                                   std::size_t width) {
  const std::string prefix = label.empty() ? "" : label + ": ";
  std::string times = clock_time(r.elapsed);  // appended, not "<" + s: GCC 12 warns (-Wrestrict) on that
  if (r.left) {
    times += '<';
    times += clock_time(*r.left);
  }
  if (!r.total) {
    return prefix + std::to_string(r.count) + " [" + times + ", " + rate_text(r.rate) + "]";
  }
  const std::uint64_t total = *r.total;
  const double fraction = total == 0 ? 1.0 : std::min(1.0, static_cast<double>(r.count) / static_cast<double>(total));
  const std::string percent = std::to_string(static_cast<int>(std::floor(fraction * 100))) + "%";
  const std::string counts = std::to_string(r.count) + "/" + std::to_string(total);
  const std::string tail = " " + counts + " [" + times + ", " + rate_text(r.rate) + "]";
  if (!terminal) return prefix + percent + tail;
  // prefix, percent, |bar|, tail: the bar takes what the terminal's width leaves.
  const std::size_t fixed = prefix.size() + percent.size() + 2 + tail.size();
  const std::size_t bar = width > fixed + 1 ? std::min<std::size_t>(width - fixed - 1, 50) : 10;
  const auto filled = static_cast<std::size_t>(fraction * static_cast<double>(bar));
  return prefix + percent + "|" + std::string(filled, '#') + std::string(bar - filled, ' ') + "|" + tail;
}

void progress_meter::draw(clock::time_point now, bool last) noexcept {
  last_draw_ = now;
  try {
    const std::string text = render(label_, reading(now), style_.terminal, style_.width);
    // A terminal's line is redrawn in place (\r, then erase to its end); a log gets lines.
    std::string line;
    if (style_.terminal) line += '\r';
    line += text;
    if (style_.terminal) line += "\x1b[K";
    if (!style_.terminal || last) line += '\n';
    write_all(style_.fd, line);
  } catch (...) {  // no memory for the text: skip this drawing
  }
}

}  // namespace mproc::detail
