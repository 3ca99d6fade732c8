// The pool's memory helpers: the arena of per-task states and the big-vector allocation.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>

#include "mproc/detail/os/big_vector.hpp"
#include "mproc/detail/pool/state_arena.hpp"

namespace {

using mproc::detail::arena_allocator;
using mproc::detail::state_arena;

TEST(StateArena, AFreedBlockIsReusedForTheSameSizeClass) {
  state_arena arena;
  void* a = arena.allocate(200);
  arena.deallocate(a, 200);
  EXPECT_EQ(arena.allocate(250), a);  // 200 and 250 share the 256-byte class
  void* b = arena.allocate(200);
  EXPECT_NE(b, a);
  arena.deallocate(b, 200);
  arena.deallocate(a, 250);
  void* c = arena.allocate(64);  // another class: not one of those blocks
  EXPECT_NE(c, a);
  EXPECT_NE(c, b);
  arena.deallocate(c, 64);
}

TEST(StateArena, BlocksPastTheLargestClassGoStraightToOperatorNew) {
  state_arena arena;
  void* big = arena.allocate(4096);
  std::fill_n(static_cast<unsigned char*>(big), 4096, 0xab);  // the whole size is usable
  arena.deallocate(big, 4096);
  void* zero = arena.allocate(0);
  arena.deallocate(zero, 0);
}

struct counted {
  explicit counted(int v, int& alive) : value(v), alive_(alive) { ++alive_; }
  ~counted() { --alive_; }
  int value;
  int& alive_;
};

TEST(StateArena, AnAbandonedArenaLivesWhileItsStatesAreOut) {
  int alive = 0;
  std::vector<std::shared_ptr<counted>> states;
  {
    const state_arena::owner arena = state_arena::make_owned();
    for (int i = 0; i < 1000; ++i) {
      states.push_back(std::allocate_shared<counted>(arena_allocator<counted>(arena.get()), i, alive));
    }
  }  // abandoned by its owner, the arena lives on while the states are out
  EXPECT_EQ(alive, 1000);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(states[static_cast<std::size_t>(i)]->value, i);
  states.clear();
  EXPECT_EQ(alive, 0);  // each freed through its arena, the last freeing the arena (ASan: no leak)
}

// A big_vector has the size and the value-initialised elements of a plain vector.
TEST(BigVector, MatchesAPlainVectorInSizeAndElements) {
  for (const std::size_t n : {std::size_t{0}, std::size_t{10}, std::size_t{3} << 20}) {
    const auto v = mproc::detail::make_big_vector<std::int64_t>(n);
    ASSERT_EQ(v.size(), n);
    EXPECT_EQ(std::accumulate(v.begin(), v.end(), std::int64_t{0}), 0) << n;
  }
}

}  // namespace
