// The board of cancellable tasks (src/pool/task_board.hpp), as the parent and a worker
// use its words.
#include "pool/task_board.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>

namespace {

using mproc::detail::task_board;

struct board_fixture : ::testing::Test {
  std::unique_ptr<task_board::memory> memory = std::make_unique<task_board::memory>();
  task_board board{memory.get()};
};

using TaskBoard = board_fixture;

TEST_F(TaskBoard, AWordServesOneTaskUntilItIsSettled) {
  const std::uint64_t first = 7;
  const std::uint64_t second = first + task_board::size;  // the same word
  ASSERT_TRUE(board.enter(first));
  EXPECT_FALSE(board.enter(second)) << "the word still serves the first task";
  EXPECT_TRUE(board.start(first));
  EXPECT_FALSE(board.enter(second)) << "a started task keeps its word until it settles";
  board.settle(second);  // names another task: changes nothing
  EXPECT_FALSE(board.enter(second));
  board.settle(first);
  EXPECT_TRUE(board.enter(second));
  EXPECT_TRUE(board.cancel(second));
}

TEST_F(TaskBoard, ACancelledTaskKeepsItsWordUntilItsMessageIsTaken) {
  const std::uint64_t task = 3;
  ASSERT_TRUE(board.enter(task));
  ASSERT_TRUE(board.cancel(task));
  board.settle(task);  // the parent fails it at once; the message is still queued
  EXPECT_FALSE(board.enter(task + task_board::size)) << "a new task there would make the worker run the cancelled one";
  EXPECT_FALSE(board.start(task)) << "the worker taking the message must skip it";
  EXPECT_TRUE(board.enter(task + task_board::size));
}

TEST_F(TaskBoard, AStartedTaskCannotBeCancelled) {
  const std::uint64_t task = 11;
  ASSERT_TRUE(board.enter(task));
  EXPECT_TRUE(board.start(task));
  EXPECT_FALSE(board.cancel(task));
  // A worker that died after starting: the next one to take the message runs it.
  EXPECT_TRUE(board.start(task));
}

}  // namespace
