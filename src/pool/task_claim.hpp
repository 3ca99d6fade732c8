// Which task each pool worker has taken from the task channel, kept in shared memory so
// that, when a worker dies, the parent can tell whether the task it was taking is really
// gone with it (fail it: worker_lost) or still queued for another worker (say nothing).
//
// Why it is not simple: a take commits inside the channel, under the robust lock of the
// consumers of the message's lane, after the worker read the message. Published before the commit, a claim can be
// stale (the worker died before committing; the message stays queued and another worker
// runs it); published after, it can be missing (the worker died between the commit and
// the claim; the task vanishes and its caller waits forever). So:
// - A worker claims inside the get sink, under the consumers' lock, before the commit, and
//   records the message's id in the channel with it (channel::message_id()).
// - Under that lock, a claim of a message in that lane not yet taken is abandoned: a live
//   claimer holds the lock until its take commits. Whoever next holds the lock after a
//   consumer died in it voids such claims before any message is taken (void_abandoned):
//   the parent when it settles a dead worker, a worker when it claims after the channel
//   counted an owner death.
// - So a claim that survives in a dead worker's slot, read under the lock, is a take that
//   committed: its task is the worker's, and is lost with it.
// - The parent kills a worker for a task past its timeout only after condemning that very
//   claim (a compare-and-swap from the task to task | condemned). A worker whose task ended
//   just before finds its release refused and waits for the kill without taking another
//   task: the kill can never land on the next task (which would fail with worker_lost
//   while it ran fine).
//
// Thread safety: each slot is written by its own worker (claim, release), voided by the
// holder of the consumers' lock, and settled by the parent once its worker is dead.
#pragma once

#include <atomic>
#include <cstdint>

namespace mproc::detail {

class channel;

// One worker's claim; a cache line each, so that workers do not share one.
struct alignas(64) task_claim_slot {
  std::atomic<std::uint64_t> task;  // 0: none
  std::atomic<std::uint64_t> seq;   // the message's id in the task channel (channel::message_id)
  std::atomic<std::int64_t> started_ns;
};

class task_claims {
 public:
  // Marks a claim whose worker the parent kills for its timeout. Task ids stay below it.
  static constexpr std::uint64_t condemned = std::uint64_t{1} << 63;

  // `slots[0, count)` live in memory shared with the workers (zeroed: no claims).
  task_claims(task_claim_slot* slots, unsigned count, channel& tasks) noexcept
      : slots_(slots), count_(count), tasks_(&tasks) {}

  // Worker `self`, inside the sink of a get of one message from the task channel: the
  // message handed is `task`'s, taken at `started_ns`. Returns once the claim is visible.
  void claim(unsigned self, std::uint64_t task, std::int64_t started_ns) noexcept;

  // Worker `self` has reported the result of `task`, its claim: it holds no task. False
  // when the claim was condemned meanwhile: the worker is being killed.
  bool release(unsigned self, std::uint64_t task) noexcept;

  // The parent: condemns slot `k`'s claim if it is still `task`; true when it did, and the
  // worker may then be killed for it.
  bool condemn(unsigned k, std::uint64_t task) noexcept;

  // The parent, once slot `k`'s worker is dead: the task whose take it committed (0 when
  // none; with `condemned` set if the parent killed it for its timeout); the slot is left
  // empty. Takes the consumers' lock: waits for a live taker.
  std::uint64_t settle_dead(unsigned k);

  // The holder of a lane's consumers' lock (or all of them): voids every claim of a message
  // in a lane it holds whose take never committed.
  void void_abandoned() noexcept;

  // Slot `k`'s task (0: none) and since when, as the watchdog reads them.
  std::uint64_t task(unsigned k) const noexcept { return slots_[k].task.load(std::memory_order_acquire); }
  std::int64_t started_ns(unsigned k) const noexcept { return slots_[k].started_ns.load(std::memory_order_acquire); }

 private:
  task_claim_slot* slots_;
  unsigned count_;
  channel* tasks_;
  // This process's view of the channel's owner deaths when it last voided claims: a
  // worker voids again only when a consumer died since (a claim must not cost a scan).
  std::uint64_t deaths_seen_ = UINT64_MAX;
};

}  // namespace mproc::detail
