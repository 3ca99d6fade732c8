// The pool's table of pending tasks (src/pending_tasks.hpp).
#include "pool/pending_tasks.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <set>
#include <vector>

#include "tagged_state.hpp"

namespace {

using mproc::detail::pending_tasks;
using mproc::detail::task_state;

using mproc_test::tag_of;
using mproc_test::tagged_state;

TEST(PendingTasks, TakesEachTaskOnceInAnyOrder) {
  pending_tasks p;
  for (std::uint64_t id = 5; id < 15; ++id) p.add(id, std::make_shared<tagged_state>(id));
  EXPECT_EQ(p.size(), 10u);
  for (std::uint64_t id : {7u, 5u, 14u, 6u, 8u}) {
    const auto s = p.take(id);
    ASSERT_TRUE(s);
    EXPECT_EQ(tag_of(s), id);
    EXPECT_FALSE(p.take(id)) << "task " << id << " taken twice";
  }
  EXPECT_FALSE(p.take(4));
  EXPECT_FALSE(p.take(15));
  EXPECT_EQ(p.size(), 5u);
  std::set<std::uint64_t> rest;
  p.take_all([&](std::shared_ptr<task_state> s) { rest.insert(tag_of(s)); });
  EXPECT_EQ(rest, (std::set<std::uint64_t>{9, 10, 11, 12, 13}));
  EXPECT_EQ(p.size(), 0u);
  EXPECT_FALSE(p.take(9));
}

// One task that never settles while a million others do: it is still found, and the
// others leave nothing behind (the ring does not grow with every id since the straggler).
TEST(PendingTasks, AStragglerDoesNotHoldTheRingOpen) {
  pending_tasks p;
  p.add(1, std::make_shared<tagged_state>(1));
  for (std::uint64_t id = 2; id < 1'000'000; ++id) {
    p.add(id, std::make_shared<tagged_state>(id));
    ASSERT_TRUE(p.take(id));
  }
  EXPECT_EQ(p.size(), 1u);
  EXPECT_LE(p.ring_slots(), 4096u + 4u);
  const auto s = p.take(1);
  ASSERT_TRUE(s);
  EXPECT_EQ(tag_of(s), 1u);
  EXPECT_EQ(p.size(), 0u);
  p.add(1'000'000, std::make_shared<tagged_state>(1'000'000));
  EXPECT_TRUE(p.take(1'000'000));
}

}  // namespace
