#include <gtest/gtest.h>

#include "mproc/os.hpp"

namespace {

using mproc::os::wait_status;

TEST(WaitStatus, ExitCodeOneIsRaw256AsTheTutorialPrints) {
  const wait_status s(256);
  EXPECT_EQ(s.raw(), 256);
  EXPECT_TRUE(s.exited());
  EXPECT_EQ(s.exit_code(), 1);
  EXPECT_FALSE(s.signaled());
}

TEST(WaitStatus, CleanExitIsZero) {
  const wait_status s(0);
  EXPECT_TRUE(s.exited());
  EXPECT_EQ(s.exit_code(), 0);
}

TEST(WaitStatus, ExitCodeIsTheHighByte) {
  const wait_status s(42 << 8);
  EXPECT_TRUE(s.exited());
  EXPECT_EQ(s.exit_code(), 42);
}

TEST(WaitStatus, KilledBySignal) {
  const wait_status s(9);
  EXPECT_FALSE(s.exited());
  EXPECT_TRUE(s.signaled());
  EXPECT_EQ(s.signal(), 9);
  EXPECT_FALSE(s.core_dumped());
}

TEST(WaitStatus, CoreDumpFlag) {
  const wait_status s(0x80 | 6);
  EXPECT_TRUE(s.signaled());
  EXPECT_EQ(s.signal(), 6);
  EXPECT_TRUE(s.core_dumped());
}

TEST(WaitStatus, EqualityComparesRaw) {
  EXPECT_EQ(wait_status(256), wait_status(256));
  EXPECT_NE(wait_status(256), wait_status(9));
}

}  // namespace
