// The pool's task claims (src/task_claim.hpp) with real processes killed at each point of
// a take: a worker killed before its take of a task commits must leave the task to
// another worker (not fail it as lost, or it runs and is reported lost), and one killed
// after must lose it (not leave it unreported, or its caller waits forever).
#include "pool/task_claim.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <new>
#include <optional>
#include <span>
#include <vector>

#include "mproc/detail/ipc/channel.hpp"

namespace {

using mproc::detail::channel;
using mproc::detail::task_claim_slot;
using mproc::detail::task_claims;

constexpr unsigned workers = 3;

// A channel of task messages (each the task id's 8 bytes) and the claims of `workers`
// workers, in memory the forked children share.
class TaskClaim : public ::testing::Test {
 protected:
  void SetUp() override {
    memory_ =
        ::mmap(nullptr, sizeof(task_claim_slot) * workers, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(memory_, MAP_FAILED);
    slots_ = new (memory_) task_claim_slot[workers]{};
    claims_.emplace(slots_, workers, tasks_);
  }
  void TearDown() override { ::munmap(memory_, sizeof(task_claim_slot) * workers); }

  void put_task(std::uint64_t id) {
    tasks_.put_one(std::as_bytes(std::span(&id, 1)), mproc::detail::deadline::never());
  }

  enum class death { inside_take, after_take, after_release };

  static std::uint64_t task_id(std::span<const std::byte> message) {
    std::uint64_t id;
    std::memcpy(&id, message.data(), sizeof id);
    return id;
  }

  // Takes the next task as the pool's worker does, claiming it for worker `slot`, and
  // SIGKILLs the calling process inside the take (holding the consumers' lock) when
  // `die_inside`. Returns the task's id; 0 when none was queued.
  std::uint64_t take_claiming(unsigned slot, bool die_inside) {
    std::uint64_t id = 0;
    tasks_.get(
        [&](std::span<const std::byte> message) {
          id = task_id(message);
          claims_->claim(slot, id, 1);
          if (die_inside) ::raise(SIGKILL);
        },
        1, mproc::detail::deadline::no_wait());
    return id;
  }

  // Worker `slot`, in a child process, takes the next task as the pool's worker does and
  // is SIGKILLed at `when`. Returns once the child is dead.
  void worker_killed(unsigned slot, death when) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      const std::uint64_t id = take_claiming(slot, when == death::inside_take);
      if (id != 0 && when == death::after_release) claims_->release(slot, id);
      ::raise(SIGKILL);
      ::_exit(1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  }

  // Worker `slot`, in this process, takes the next task as the pool's worker does.
  void take_here(unsigned slot) { ASSERT_NE(take_claiming(slot, false), 0u); }

  // The ids of the tasks still queued, taken in order.
  std::vector<std::uint64_t> drain() {
    std::vector<std::uint64_t> ids;
    const auto take = [&](std::span<const std::byte> message) { ids.push_back(task_id(message)); };
    while (tasks_.get(take, 1, mproc::detail::deadline::no_wait()) != 0) {
    }
    return ids;
  }

  channel tasks_{0};
  void* memory_ = nullptr;
  task_claim_slot* slots_ = nullptr;
  std::optional<task_claims> claims_;
};

// A worker killed before its take committed leaves the task queued.
TEST_F(TaskClaim, KilledBeforeItsTakeCommitsLeavesTheTaskQueued) {
  put_task(7);
  put_task(8);
  worker_killed(0, death::inside_take);
  EXPECT_EQ(claims_->task(0), 7u);  // claimed, but the take never committed
  EXPECT_EQ(claims_->settle_dead(0), 0u);
  EXPECT_EQ(claims_->task(0), 0u);
  EXPECT_EQ(tasks_.owner_deaths(), 1u);
  EXPECT_EQ(drain(), (std::vector<std::uint64_t>{7, 8}));
}

// A worker killed before its take committed leaves the task to the next worker, even before
// the parent looks.
TEST_F(TaskClaim, KilledBeforeItsTakeCommitsLeavesItToTheNext) {
  put_task(7);
  worker_killed(0, death::inside_take);
  worker_killed(1, death::after_take);  // takes 7 for good, voiding worker 0's claim first
  EXPECT_EQ(claims_->settle_dead(0), 0u);
  EXPECT_EQ(claims_->settle_dead(1), 7u);
  EXPECT_TRUE(drain().empty());
}

// Workers killed one after the other inside the same take leave it to the one that commits.
TEST_F(TaskClaim, KilledInTurnInOneTakeLeaveItToTheCommitter) {
  put_task(7);
  put_task(8);
  worker_killed(0, death::inside_take);
  worker_killed(1, death::inside_take);
  worker_killed(2, death::after_take);
  EXPECT_EQ(claims_->settle_dead(0), 0u);
  EXPECT_EQ(claims_->settle_dead(1), 0u);
  EXPECT_EQ(claims_->settle_dead(2), 7u);
  EXPECT_EQ(drain(), (std::vector<std::uint64_t>{8}));
}

TEST_F(TaskClaim, AWorkerKilledAfterItsTakeCommittedLosesItsTask) {
  put_task(7);
  put_task(8);
  worker_killed(0, death::after_take);
  EXPECT_EQ(claims_->settle_dead(0), 7u);
  EXPECT_EQ(claims_->settle_dead(0), 0u);  // settled once
  EXPECT_EQ(drain(), (std::vector<std::uint64_t>{8}));
}

// A worker killed after its take committed still loses the task when others took and died
// since.
TEST_F(TaskClaim, KilledAfterItsTakeCommitsLosesItDespiteLaterDeaths) {
  put_task(7);
  put_task(8);
  put_task(9);
  worker_killed(0, death::after_take);   // 7, for good
  worker_killed(1, death::inside_take);  // 8, abandoned
  worker_killed(2, death::after_take);   // 8, for good
  EXPECT_EQ(claims_->settle_dead(0), 7u);
  EXPECT_EQ(claims_->settle_dead(1), 0u);
  EXPECT_EQ(claims_->settle_dead(2), 8u);
  EXPECT_EQ(drain(), (std::vector<std::uint64_t>{9}));
}

TEST_F(TaskClaim, AWorkerKilledAfterReportingItsTaskHoldsNone) {
  put_task(7);
  worker_killed(0, death::after_release);
  EXPECT_EQ(claims_->settle_dead(0), 0u);
  EXPECT_TRUE(drain().empty());
}

// A condemned task cannot be released, and settles as condemned.
// The parent kills a worker for its task's timeout only after condemning that very claim.
TEST_F(TaskClaim, ACondemnedTaskCannotBeReleased) {
  put_task(7);
  take_here(0);
  EXPECT_TRUE(claims_->condemn(0, 7));
  EXPECT_FALSE(claims_->condemn(0, 7));  // once
  EXPECT_FALSE(claims_->release(0, 7));  // the worker must wait for its kill, not go on
  EXPECT_EQ(claims_->settle_dead(0), 7 | task_claims::condemned);
}

// A task released before its timeout kill cannot be condemned, nor can its successor.
// A task that ended just before the parent decided it had run too long: the kill must not
// land on the worker's next task.
TEST_F(TaskClaim, ATaskReleasedBeforeItsTimeoutKillIsSpared) {
  put_task(7);
  put_task(8);
  take_here(0);
  EXPECT_TRUE(claims_->release(0, 7));
  EXPECT_FALSE(claims_->condemn(0, 7));
  take_here(0);
  EXPECT_FALSE(claims_->condemn(0, 7));
  EXPECT_EQ(claims_->task(0), 8u);
  EXPECT_EQ(claims_->settle_dead(0), 8u);
}

TEST_F(TaskClaim, AClaimRecordsTheMessageItTook) {
  put_task(7);
  put_task(8);
  worker_killed(0, death::after_take);
  const std::uint64_t first = slots_[0].seq.load();
  EXPECT_TRUE(tasks_.committed(first));
  worker_killed(1, death::inside_take);  // claims 8, never commits
  const std::uint64_t second = slots_[1].seq.load();
  EXPECT_NE(second, first);
  EXPECT_FALSE(tasks_.committed(second));
  EXPECT_EQ(drain(), (std::vector<std::uint64_t>{8}));
  EXPECT_TRUE(tasks_.committed(second));
}

}  // namespace
