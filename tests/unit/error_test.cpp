#include "mproc/error.hpp"

#include <gtest/gtest.h>

#include <string>
#include <type_traits>

namespace {

template <class E>
void expect_in_family(const char* message) {
  static_assert(std::is_base_of_v<mproc::error, E>);
  static_assert(std::is_constructible_v<E, std::string>, "recreatable from its what()");
  try {
    throw E(message);
  } catch (const mproc::error& e) {
    EXPECT_STREQ(e.what(), message);
    return;
  }
  ADD_FAILURE() << "not caught as mproc::error";
}

TEST(Error, EveryTypeIsAnMprocErrorWithItsMessage) {
  static_assert(std::is_base_of_v<std::runtime_error, mproc::error>);
  expect_in_family<mproc::error>("plain");
  expect_in_family<mproc::timeout_error>("late");
  expect_in_family<mproc::queue_full>("full");
  expect_in_family<mproc::queue_empty>("empty");
  expect_in_family<mproc::closed_error>("closed");
  expect_in_family<mproc::cancelled_error>("cancelled");
  expect_in_family<mproc::worker_lost>("lost");
  expect_in_family<mproc::remote_error>("remote");
  expect_in_family<mproc::broken_barrier>("broken");
  expect_in_family<mproc::serialization_error>("bytes");
}

TEST(Error, WorkerLostCarriesHowTheWorkerEnded) {
  const mproc::worker_lost by_signal("worker 12 died", -9);
  EXPECT_EQ(by_signal.exitcode(), -9);
  EXPECT_STREQ(by_signal.what(), "worker 12 died");
  EXPECT_EQ(mproc::worker_lost("exited", 3).exitcode(), 3);
}

TEST(Error, RemoteErrorCarriesTheTypeNameAndMessage) {
  const mproc::remote_error e("disk on fire", "my::fire_error");
  EXPECT_EQ(e.type_name(), "my::fire_error");
  EXPECT_STREQ(e.what(), "disk on fire");
}

TEST(Error, ErrorsAreDistinctTypes) {
  try {
    throw mproc::queue_full("q");
  } catch (const mproc::queue_empty&) {
    FAIL() << "queue_full caught as queue_empty";
  } catch (const mproc::queue_full& e) {
    EXPECT_STREQ(e.what(), "q");
  }
}

}  // namespace
