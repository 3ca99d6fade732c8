// mproc::barrier: arrivals counted under a robust mutex, waiters in a wait_list.
//
// The last of `parties` arrivals runs the action (if any), marks every waiting slot
// released and starts the next cycle; each waiter, woken on its own slot, takes its slot
// back and returns its arrival index. A timeout, abort() or a throwing action breaks the
// barrier: every waiting slot is marked broken (its waiter throws broken_barrier), and so
// is every later wait() until reset(). reset() breaks the current waiters out and makes it
// usable again.
//
// Dead peers:
// - A process that dies holding the barrier's mutex (arriving, running the action,
//   aborting, resetting) breaks the barrier, as a throwing action would: the state it was
//   changing cannot be trusted, and the cycle cannot complete as its members expect. The
//   exception: if it died while releasing a complete cycle (a flag says so), the release
//   is finished instead. Whoever locks the mutex next repairs it; and since that might be
//   nobody while every other party sleeps, sleeping waiters try the mutex every
//   `holder_check_period` (a trylock, no system call) to see its holder's death.
// - A party that dies after arriving was counted: the cycle completes without it.
// - A party that dies before arriving cannot be told from a slow one: the others wait until
//   their timeout, which breaks the barrier for all. Without a timeout they wait forever,
//   as in Python: use one when a party may die.
//
// Layout of the memfd: [barrier state][the slots].
#include <pthread.h>

#include <cerrno>
#include <climits>
#include <exception>

#include "mproc/detail/sync/sync_core.hpp"
#include "mproc/error.hpp"
#include "sync/sync_memory.hpp"
#include "sync/wait_list.hpp"
#include "wait/robust_mutex.hpp"

namespace mproc::detail {

struct barrier_core::state {
  object_header header;
  alignas(64) pthread_mutex_t mutex;
  std::uint32_t parties;
  std::uint32_t count;      // arrivals in this cycle
  std::uint64_t cycle;      // cycles completed or reset
  std::uint32_t releasing;  // the last arrival is releasing this cycle (recovery finishes it)
  std::atomic<std::uint32_t> is_broken;
  std::atomic<std::uint64_t> owner_deaths;
  wait_list_header waiters;
};

namespace {

constexpr std::size_t slots_offset = 512;
constexpr std::size_t initial_bytes = 4096;
static_assert(sizeof(barrier_core::state) <= slots_offset);
constexpr std::chrono::milliseconds holder_check_period(100);

wait_list list_of(sync_memory& memory, barrier_core::state& s) { return {memory, s.waiters, slots_offset}; }

// Unlocks on scope exit.
class state_guard {
 public:
  explicit state_guard(barrier_core::state& s) noexcept : s_(s) {}
  ~state_guard() { ::pthread_mutex_unlock(&s_.mutex); }
  state_guard(const state_guard&) = delete;
  state_guard& operator=(const state_guard&) = delete;

 private:
  barrier_core::state& s_;
};

}  // namespace

barrier_core::barrier_core(unsigned parties, std::function<void()> action)
    : memory_(sync_memory::create("mproc-barrier", initial_bytes, "mproc::barrier")), action_(std::move(action)) {
  if (parties == 0) throw error("mproc::barrier::barrier: parties must be at least 1");
  state_ = reinterpret_cast<state*>(memory_->make_object(0, sync_kind::barrier, sizeof(state)));
  robust_mutex_init(state_->mutex, "mproc::barrier::barrier");
  state_->parties = parties;
  wait_list::init(state_->waiters, slots_offset, initial_bytes);
}

barrier_core::barrier_core(const sync_token& token) : memory_(sync_memory::open(token.memory, "mproc::barrier")) {
  if (token.offset != 0) throw error("mproc::barrier::load: the handle received does not name an mproc::barrier");
  state_ = reinterpret_cast<state*>(memory_->open_object(0, sync_kind::barrier, sizeof(state)));
}

void barrier_core::lock_state(const char* call) {
  robust_mutex_lock(state_->mutex, deadline::never(), "mproc::barrier", call, [this] { recover(); });
}

void barrier_core::recover() noexcept {
  state& s = *state_;
  s.owner_deaths.fetch_add(1, std::memory_order_relaxed);
  if (s.releasing != 0) {
    release_all_locked();
  } else {
    break_locked();
  }
}

void barrier_core::check_holder() noexcept {
  const int r = ::pthread_mutex_trylock(&state_->mutex);
  if (r == EOWNERDEAD) {
    recover();
    robust_mutex_mark_consistent(state_->mutex);
  }
  if (r == 0 || r == EOWNERDEAD) ::pthread_mutex_unlock(&state_->mutex);
}

void barrier_core::release_all_locked() noexcept {
  state& s = *state_;
  s.releasing = 1;
  try {
    list_of(*memory_, s).wake(UINT_MAX, slot_woken, false);
  } catch (...) {
    // Only a slot beyond this process's mapping could throw (no address space left). Its
    // waiter times out or its check sees the flag left set.
    return;
  }
  s.count = 0;
  ++s.cycle;
  s.releasing = 0;
}

void barrier_core::break_locked() noexcept {
  state& s = *state_;
  s.is_broken.store(1, std::memory_order_release);
  s.count = 0;
  try {
    list_of(*memory_, s).wake(UINT_MAX, slot_broken, false);
  } catch (...) {  // as above
  }
}

std::size_t barrier_core::wait(deadline until) {
  state& s = *state_;
  lock_state("wait");
  std::uint32_t slot = 0;
  std::size_t index = 0;
  {
    state_guard unlock(s);
    if (s.is_broken.load(std::memory_order_relaxed) != 0) {
      throw broken_barrier("mproc::barrier::wait: the barrier is broken; reset() it to use it again");
    }
    index = s.count++;
    if (s.count == s.parties) {
      if (action_) {
        try {
          action_();
        } catch (...) {
          break_locked();
          throw;  // the action's own exception, here; broken_barrier for the others
        }
      }
      release_all_locked();
      return index;
    }
    try {
      slot = list_of(*memory_, s).enter("mproc::barrier::wait");
    } catch (...) {
      --s.count;
      throw;
    }
  }
  list_of(*memory_, s).sleep(slot, until, holder_check_period, [this] { check_holder(); });
  lock_state("wait");
  state_guard unlock(s);
  const std::uint32_t outcome = list_of(*memory_, s).leave(slot);
  if (outcome == slot_woken) return index;
  if (outcome == slot_waiting) {
    // Timed out before the cycle completed: as in Python, that breaks it for everyone.
    break_locked();
    throw broken_barrier(
        "mproc::barrier::wait: timed out before every party arrived, so the barrier is now broken; reset() it to "
        "use it again");
  }
  throw broken_barrier("mproc::barrier::wait: the barrier was broken, aborted or reset while this thread waited");
}

void barrier_core::abort() {
  lock_state("abort");
  state_guard unlock(*state_);
  break_locked();
}

void barrier_core::reset() {
  state& s = *state_;
  lock_state("reset");
  state_guard unlock(s);
  // Current waiters get broken_barrier (Python's reset()); a new cycle starts, unbroken.
  list_of(*memory_, s).wake(UINT_MAX, slot_broken, false);
  s.count = 0;
  ++s.cycle;
  s.is_broken.store(0, std::memory_order_release);
}

bool barrier_core::broken() const noexcept { return state_->is_broken.load(std::memory_order_acquire) != 0; }

unsigned barrier_core::parties() const noexcept { return state_->parties; }

unsigned barrier_core::n_waiting() {
  lock_state("n_waiting");
  state_guard unlock(*state_);
  return state_->count;
}

std::uint64_t barrier_core::owner_deaths() const noexcept {
  return state_->owner_deaths.load(std::memory_order_relaxed);
}

sync_token barrier_core::token() const { return memory_->token(0); }

}  // namespace mproc::detail
