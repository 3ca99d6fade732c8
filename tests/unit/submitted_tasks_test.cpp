// The hand-off of submitted tasks to the pool's mutex (src/pool/submitted_tasks.hpp).
#include "pool/submitted_tasks.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "tagged_state.hpp"

namespace {

using mproc::detail::submitted_tasks;
using mproc::detail::task_state;

using mproc_test::tag_of;
using mproc_test::tagged_state;

TEST(SubmittedTasks, HandsEveryEntryOnOnceInOrderAcrossBlocks) {
  submitted_tasks q;
  std::vector<std::uint64_t> seen;
  const auto drain = [&] {
    q.drain([&](std::uint64_t id, std::shared_ptr<task_state> s) {
      ASSERT_TRUE(s);
      EXPECT_EQ(tag_of(s), id);
      seen.push_back(id);
    });
  };
  std::uint64_t next = 1;
  // Drains after 0, 1, a block less one, a block, a block and one, and several blocks.
  for (const std::uint64_t batch : {0u, 1u, 254u, 255u, 256u, 1000u, 3u}) {
    for (std::uint64_t k = 0; k < batch; ++k, ++next) q.push(next, std::make_shared<tagged_state>(next));
    drain();
    ASSERT_EQ(seen.size(), next - 1) << "after a batch of " << batch;
    drain();  // nothing new: nothing handed on twice
    ASSERT_EQ(seen.size(), next - 1);
  }
  for (std::size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], i + 1);
}

TEST(SubmittedTasks, AConsumerDrainingWhileTheProducerPushesSeesEachOnceInOrder) {
  constexpr std::uint64_t count = 200'000;
  submitted_tasks q;
  std::atomic<bool> pushed{false};
  std::thread producer([&] {
    for (std::uint64_t id = 1; id <= count; ++id) q.push(id, std::make_shared<tagged_state>(id));
    pushed.store(true);
  });
  std::uint64_t expected = 1;
  bool in_order = true;
  for (;;) {
    const bool last = pushed.load();
    q.drain([&](std::uint64_t id, std::shared_ptr<task_state> s) {
      if (id != expected || !s || tag_of(s) != id) in_order = false;
      ++expected;
    });
    if (last) break;
  }
  producer.join();
  EXPECT_TRUE(in_order);
  EXPECT_EQ(expected, count + 1);
}

TEST(SubmittedTasks, EntriesNeverDrainedAreReleasedWithTheQueue) {
  std::vector<std::weak_ptr<task_state>> watched;
  {
    submitted_tasks q;
    for (std::uint64_t id = 1; id <= 600; ++id) {
      auto s = std::make_shared<tagged_state>(id);
      watched.push_back(s);
      q.push(id, std::move(s));
      if (id == 300) q.drain([](std::uint64_t, std::shared_ptr<task_state>) {});
    }
  }
  for (const auto& w : watched) EXPECT_TRUE(w.expired());
}

}  // namespace
