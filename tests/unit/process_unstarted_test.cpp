// What a process object does before start(): no fork happens here.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <regex>
#include <string>

#include "../integration/test_support.hpp"
#include "mproc/process.hpp"

namespace {

void noop() {}

TEST(ProcessUnstarted, DefaultNamesCountUp) {
  mproc::process a(noop);
  mproc::process b(noop);
  std::smatch ma, mb;
  ASSERT_TRUE(std::regex_match(a.name(), ma, std::regex("process-([0-9]+)"))) << a.name();
  ASSERT_TRUE(std::regex_match(b.name(), mb, std::regex("process-([0-9]+)"))) << b.name();
  EXPECT_EQ(std::stoi(mb[1]), std::stoi(ma[1]) + 1);
}

TEST(ProcessUnstarted, NameCanBeSet) {
  mproc::process p(noop);
  p.set_name("test");
  EXPECT_EQ(p.name(), "test");
}

TEST(ProcessUnstarted, StateBeforeStart) {
  mproc::process p(noop);
  EXPECT_FALSE(p.daemon());
  EXPECT_FALSE(p.pid().has_value());
  EXPECT_FALSE(p.exitcode().has_value());
  EXPECT_FALSE(p.is_alive());
}

TEST(ProcessUnstarted, DaemonCanBeSetBeforeStart) {
  mproc::process p(noop);
  p.set_daemon(true);
  EXPECT_TRUE(p.daemon());
}

TEST(ProcessUnstarted, JoinSentinelAndSignalsNeedStart) {
  mproc::process p(noop);
  EXPECT_THROW(p.join(), mproc::error);
  EXPECT_THROW(p.join(std::chrono::milliseconds(1)), mproc::error);
  EXPECT_THROW((void)p.sentinel(), mproc::error);
  EXPECT_THROW(p.terminate(), mproc::error);
  EXPECT_THROW(p.kill(), mproc::error);
}

TEST(ProcessUnstarted, MovedFromObjectThrowsClearly) {
  mproc::process a(noop);
  a.set_name("moved");
  mproc::process b(std::move(a));
  EXPECT_EQ(b.name(), "moved");
  EXPECT_THROW((void)a.name(), mproc::error);  // NOLINT(bugprone-use-after-move)
  try {
    (void)a.name();  // NOLINT(bugprone-use-after-move)
  } catch (const mproc::error& e) {
    EXPECT_THAT(e.what(), ::testing::StartsWith("mproc::process: this object was moved from")) << e.what();
  }
}

// The house voice (CONTRIBUTING.md): the member called, and the process by name.
TEST(ProcessUnstarted, ErrorsNameTheCallAndTheProcess) {
  mproc::process p(noop);
  p.set_name("idle");
  const auto what_of = [](auto call) { return mproc_test::what_of<mproc::error>(call); };
  EXPECT_EQ(what_of([&] { p.join(); }), "mproc::process::join: process idle was never started; call start() first");
  EXPECT_THAT(what_of([&] { (void)p.join(std::chrono::milliseconds(1)); }),
              ::testing::StartsWith("mproc::process::join: "));
  EXPECT_THAT(what_of([&] { (void)p.sentinel(); }), ::testing::StartsWith("mproc::process::sentinel: "));
  EXPECT_THAT(what_of([&] { p.terminate(); }), ::testing::StartsWith("mproc::process::terminate: "));
  EXPECT_THAT(what_of([&] { p.kill(); }), ::testing::StartsWith("mproc::process::kill: "));
}

TEST(ProcessUnstarted, TargetsOfEveryKindCompile) {
  struct functor {
    void operator()(int, const std::string&) const {}
  };
  struct with_member {
    void method(int) {}
  };
  auto move_only = std::make_unique<int>(1);
  mproc::process by_function(noop);
  mproc::process by_functor(functor{}, 1, std::string("x"));
  mproc::process by_lambda([captured = 3](int) { (void)captured; }, 2);
  mproc::process by_member(&with_member::method, with_member{}, 4);
  mproc::process by_move_only([](std::unique_ptr<int>) {}, std::move(move_only));
  EXPECT_FALSE(by_move_only.pid().has_value());
}

TEST(ProcessUnstarted, MainProcessIdentity) {
  const mproc::process_info me = mproc::current_process();
  EXPECT_EQ(me.name, "MainProcess");
  EXPECT_FALSE(me.daemon);
  EXPECT_GT(me.pid, 0);
  EXPECT_FALSE(mproc::parent_process().has_value());
}

TEST(ProcessUnstarted, CpuCountIsPositive) { EXPECT_GE(mproc::cpu_count(), 1U); }

}  // namespace
