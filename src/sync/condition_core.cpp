// mproc::condition: a list of waiting threads (wait_list) beside the condition's lock.
//
// wait() enters the list under the lock, releases the lock (every level of a recursive
// one), sleeps on its own slot, takes the lock back and leaves the list; notify(n), under
// the lock, marks the n longest-waiting live waiters woken. Because each waiter has a slot
// of its own, notify(n) wakes exactly n (never a latecomer instead of a waiter, never a
// dead one), and a waiter that times out knows whether it was notified first.
//
// Dead peers: a waiter that dies is skipped by notify (its slot's robust mutex tells); a
// process that dies holding the lock (a notifier, or a waiter between its wake and its
// return) leaves it to the next acquirer through the lock's robust recovery. The list
// itself never needs repair (see wait_list.hpp).
//
// Layout of the memfd: [condition state][its own lock, unless given one][the slots].
#include <climits>

#include "mproc/detail/sync/sync_core.hpp"
#include "mproc/error.hpp"
#include "sync/sync_memory.hpp"
#include "sync/wait_list.hpp"

namespace mproc::detail {

struct condition_core::state {
  object_header header;
  wait_list_header waiters;
};

namespace {

constexpr std::size_t state_offset = 0;
constexpr std::size_t own_lock_offset = 256;
constexpr std::size_t slots_offset = own_lock_offset + lock_bytes;
constexpr std::size_t initial_bytes = 4096;
static_assert(sizeof(condition_core::state) <= own_lock_offset);

wait_list list_of(sync_memory& memory, condition_core::state& s) { return {memory, s.waiters, slots_offset}; }

}  // namespace

condition_core::condition_core(std::shared_ptr<lock_core> lock)
    : memory_(sync_memory::create("mproc-condition", initial_bytes, "mproc::condition")), lock_(std::move(lock)) {
  state_ = reinterpret_cast<state*>(memory_->make_object(state_offset, sync_kind::condition, sizeof(state)));
  wait_list::init(state_->waiters, slots_offset, initial_bytes);
  if (!lock_) lock_ = std::make_shared<lock_core>(memory_, own_lock_offset, true, true);
}

condition_core::condition_core(const sync_token& lock, const sync_token& self)
    : memory_(sync_memory::open(self.memory, "mproc::condition")) {
  if (self.offset != state_offset) {
    throw error("mproc::condition::load: the handle received does not name an mproc::condition");
  }
  state_ = reinterpret_cast<state*>(memory_->open_object(state_offset, sync_kind::condition, sizeof(state)));
  // The condition's own lock lives in its memfd: one claim of a descriptor is enough.
  auto lock_memory = memory_->is(lock.memory) ? memory_ : sync_memory::open(lock.memory, "mproc::condition");
  lock_ = std::make_shared<lock_core>(std::move(lock_memory), static_cast<std::size_t>(lock.offset), false, false);
}

bool condition_core::wait(deadline until) {
  if (!lock_->held_by_this_thread()) {
    throw error("mproc::condition::wait: this thread does not hold the condition's lock; lock it first");
  }
  wait_list list = list_of(*memory_, *state_);
  const std::uint32_t slot = list.enter("mproc::condition::wait");
  const unsigned levels = lock_->release_all();
  list.sleep(slot, until, std::chrono::milliseconds(0), [] {});
  lock_->reacquire(levels);
  // Read under the lock: a notify that came between the timeout and now still counts.
  return list.leave(slot) == slot_woken;
}

unsigned condition_core::notify(unsigned n) {
  if (!lock_->held_by_this_thread()) {
    throw error("mproc::condition::notify: this thread does not hold the condition's lock; lock it first");
  }
  return list_of(*memory_, *state_).wake(n, slot_woken, true);
}

std::uint64_t condition_core::owner_deaths() const noexcept {
  return state_->waiters.dead_waiters.load(std::memory_order_relaxed) + lock_->owner_deaths();
}

sync_token condition_core::token() const { return memory_->token(state_offset); }

}  // namespace mproc::detail
