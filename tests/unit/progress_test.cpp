// mproc::progress's meter on a clock the test moves: the numbers it draws (count, total,
// percent, rate, time left), how often a terminal is redrawn and a log gets a line.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "mproc/detail/progress/progress_meter.hpp"

namespace {

using namespace std::chrono_literals;
using mproc::detail::progress_meter;
using mproc::detail::progress_style;

// What the meter wrote into a pipe.
class captured {
 public:
  captured() {
    if (::pipe2(fds_, O_CLOEXEC | O_NONBLOCK) != 0) throw std::runtime_error("pipe2");
  }
  ~captured() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  int fd() const { return fds_[1]; }
  std::string text() {
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fds_[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
    return out;
  }

 private:
  int fds_[2];
};

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

TEST(Progress, AReadingHasTheCountRateAndTimeLeft) {
  const auto t0 = progress_meter::clock::time_point{} + 1h;
  captured out;
  progress_meter meter("work", 1000, progress_style{.fd = out.fd()}, t0);
  meter.add(450, t0 + 2500ms);
  const auto r = meter.reading(t0 + 2500ms);
  EXPECT_EQ(r.count, 450u);
  EXPECT_DOUBLE_EQ(r.rate, 180.0);
  ASSERT_TRUE(r.left.has_value());
  EXPECT_NEAR(std::chrono::duration<double>(*r.left).count(), 550.0 / 180.0, 1e-6);
  const std::string bar = progress_meter::render("work", r, true, 80);
  EXPECT_EQ(bar.rfind("work: 45%|", 0), 0u) << bar;
  EXPECT_NE(bar.find("| 450/1000 [00:02<00:03, 180.0 it/s]"), std::string::npos) << bar;
  EXPECT_LE(bar.size(), 80u);
  EXPECT_EQ(progress_meter::render("work", r, false, 80), "work: 45% 450/1000 [00:02<00:03, 180.0 it/s]");
}

TEST(Progress, WithoutATotalItShowsTheCountAndRate) {
  const auto t0 = progress_meter::clock::time_point{} + 1h;
  captured out;
  progress_meter meter("", std::nullopt, progress_style{.fd = out.fd()}, t0);
  meter.add(7, t0 + 3700s);
  EXPECT_EQ(progress_meter::render("", meter.reading(t0 + 3700s), false, 80), "7 [1:01:40, 528.6 s/it]");
}

TEST(Progress, ATerminalIsRedrawnAtMostTenTimesASecond) {
  const auto t0 = progress_meter::clock::time_point{} + 1h;
  captured out;
  {
    progress_meter meter("t", 100, progress_style{.fd = out.fd(), .terminal = true}, t0);
    for (int k = 1; k <= 100; ++k) meter.add(1, t0 + k * 10ms);  // 100 items over one second
    meter.finish(t0 + 1s);
  }
  const std::string text = out.text();
  // The empty bar, one redraw each 100 ms (10), and the last drawing: 12.
  EXPECT_EQ(count_of(text, "\r"), 12u) << text;
  EXPECT_EQ(count_of(text, "\n"), 1u);
  EXPECT_NE(text.find("t: 0%|"), std::string::npos);
  const std::string last = text.substr(text.rfind('\r'));
  EXPECT_NE(last.find("t: 100%|"), std::string::npos) << last;
  EXPECT_NE(last.find(" 100/100 [00:01<00:00, 100.0 it/s]"), std::string::npos) << last;
}

TEST(Progress, ALogGetsALineEveryFiveSecondsAndOneAtTheEnd) {
  const auto t0 = progress_meter::clock::time_point{} + 1h;
  captured out;
  {
    progress_meter meter("log", 12, progress_style{.fd = out.fd()}, t0);
    for (int k = 1; k <= 12; ++k) meter.add(1, t0 + k * 1s);
    meter.finish(t0 + 12s);
  }
  const std::string text = out.text();
  EXPECT_EQ(count_of(text, "\r"), 0u);
  EXPECT_EQ(text,
            "log: 41% 5/12 [00:05<00:07, 1.0 it/s]\n"
            "log: 83% 10/12 [00:10<00:02, 1.0 it/s]\n"
            "log: 100% 12/12 [00:12<00:00, 1.0 it/s]\n")
      << text;
}

TEST(Progress, ALoopLeftEarlyDrawsTheCountReachedOnce) {
  const auto t0 = progress_meter::clock::time_point{} + 1h;
  captured out;
  {
    progress_meter meter("x", 10, progress_style{.fd = out.fd()}, t0);
    meter.add(3, t0 + 1s);
    meter.finish(t0 + 1s);
    meter.finish(t0 + 2s);
  }
  EXPECT_EQ(out.text(), "x: 30% 3/10 [00:01<00:02, 3.0 it/s]\n");
}

}  // namespace
