#include "mproc/detail/wait/duration.hpp"

#include <gtest/gtest.h>

#include <chrono>

namespace {

using namespace std::chrono_literals;
using mproc::detail::to_nanoseconds;

TEST(Duration, ConvertsAnyDuration) {
  EXPECT_EQ(to_nanoseconds(2s), 2'000'000'000ns);
  EXPECT_EQ(to_nanoseconds(1.5ms), 1'500'000ns);
  EXPECT_EQ(to_nanoseconds(std::chrono::duration<double>(0.25)), 250'000'000ns);
}

TEST(Duration, NegativeMeansDoNotWait) {
  EXPECT_EQ(to_nanoseconds(-5s), 0ns);
  EXPECT_EQ(to_nanoseconds(std::chrono::duration<double>(-1.0)), 0ns);
}

TEST(Duration, HugeSaturatesInsteadOfOverflowing) {
  EXPECT_EQ(to_nanoseconds(std::chrono::hours::max()), std::chrono::nanoseconds::max());
  EXPECT_EQ(to_nanoseconds(std::chrono::duration<double>(1e300)), std::chrono::nanoseconds::max());
}

}  // namespace
