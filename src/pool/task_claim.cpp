#include "pool/task_claim.hpp"

#include "mproc/detail/ipc/channel.hpp"

namespace mproc::detail {

void task_claims::claim(unsigned self, std::uint64_t task, std::int64_t started_ns) noexcept {
  const std::uint64_t deaths = tasks_->owner_deaths();
  if (deaths != deaths_seen_) {
    // A consumer died holding the lock since this worker last looked: its claim may be
    // for the very message this worker is about to take.
    void_abandoned();
    deaths_seen_ = deaths;
  }
  task_claim_slot& s = slots_[self];
  s.seq.store(tasks_->message_id(), std::memory_order_relaxed);
  s.started_ns.store(started_ns, std::memory_order_relaxed);
  s.task.store(task, std::memory_order_release);
}

bool task_claims::release(unsigned self, std::uint64_t task) noexcept {
  return slots_[self].task.compare_exchange_strong(task, 0, std::memory_order_acq_rel);
}

bool task_claims::condemn(unsigned k, std::uint64_t task) noexcept {
  return slots_[k].task.compare_exchange_strong(task, task | condemned, std::memory_order_acq_rel);
}

void task_claims::void_abandoned() noexcept {
  for (unsigned k = 0; k < count_; ++k) {
    std::uint64_t task = slots_[k].task.load(std::memory_order_acquire);
    const std::uint64_t message = slots_[k].seq.load(std::memory_order_relaxed);
    // Only in a lane the caller holds can an uncommitted claim not be a live take's.
    if (task != 0 && tasks_->held_by_caller(message) && !tasks_->committed(message)) {
      // Its owner may be clearing it after a commit seen earlier: then it is 0 already.
      slots_[k].task.compare_exchange_strong(task, 0, std::memory_order_acq_rel);
    }
  }
}

std::uint64_t task_claims::settle_dead(unsigned k) {
  std::uint64_t task = 0;
  tasks_->hold_consumers([&] {
    void_abandoned();
    task = slots_[k].task.exchange(0, std::memory_order_acq_rel);
  });
  return task;
}

}  // namespace mproc::detail
