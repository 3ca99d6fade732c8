// mproc::semaphore and bounded_semaphore: a counter in shared memory. No process owns a
// unit it took, so there is no lock to recover: a process that dies after acquire() never
// gives its unit back (as in Python). Waiters sleep on a futex and are woken only when one
// sleeps.
#include <algorithm>
#include <climits>
#include <string>

#include "mproc/detail/sync/sync_core.hpp"
#include "mproc/error.hpp"
#include "sync/sync_memory.hpp"
#include "wait/futex.hpp"

namespace mproc::detail {

struct semaphore_core::state {
  object_header header;
  alignas(64) std::atomic<std::uint32_t> value;
  std::uint32_t bound;    // release() never takes value above it
  std::uint32_t bounded;  // 1: bounded_semaphore (bound = the initial value)
  alignas(64) wakeup released;
};

namespace {
// Python's SEM_VALUE_MAX on Linux; get_value() returns an int.
constexpr std::uint32_t max_value = INT_MAX;
}  // namespace

semaphore_core::semaphore_core(unsigned value, bool bounded) {
  if (value > max_value) {
    throw error(std::string(bounded ? "mproc::bounded_semaphore::bounded_semaphore" : "mproc::semaphore::semaphore") +
                ": the initial value " + std::to_string(value) + " is above INT_MAX");
  }
  memory_ = sync_memory::create(bounded ? "mproc-bounded-semaphore" : "mproc-semaphore", sizeof(state),
                                bounded ? "mproc::bounded_semaphore" : "mproc::semaphore");
  state_ = reinterpret_cast<state*>(memory_->make_object(0, sync_kind::semaphore, sizeof(state)));
  state_->value.store(value, std::memory_order_relaxed);
  state_->bound = bounded ? value : max_value;
  state_->bounded = bounded ? 1 : 0;
}

semaphore_core::semaphore_core(const sync_token& token, const char* type)
    : memory_(sync_memory::open(token.memory, type)) {
  state_ = reinterpret_cast<state*>(
      memory_->open_object(static_cast<std::size_t>(token.offset), sync_kind::semaphore, sizeof(state)));
}

bool semaphore_core::acquire(deadline until) {
  state& s = *state_;
  const auto take = [&s] {
    std::uint32_t v = s.value.load(std::memory_order_relaxed);
    while (v != 0) {
      if (s.value.compare_exchange_weak(v, v - 1, std::memory_order_acquire, std::memory_order_relaxed)) return true;
    }
    return false;
  };
  // wait_for_condition wants a predicate without side effects: it waits until a unit is
  // there, then we try to take it; another process may have been faster, then wait again.
  for (;;) {
    if (take()) return true;
    const bool available = wait_for_condition(
        s.released, [&s] { return s.value.load(std::memory_order_relaxed) != 0; }, until);
    if (!available) return take();
  }
}

void semaphore_core::release(unsigned n) {
  if (n == 0) return;
  state& s = *state_;
  std::uint32_t v = s.value.load(std::memory_order_relaxed);
  do {
    if (n > s.bound - std::min(v, s.bound)) {
      if (s.bounded == 0) throw error("mproc::semaphore::release: the value would exceed INT_MAX");
      throw error(
          "mproc::bounded_semaphore::release: released more times than acquired (the value would exceed "
          "its initial value, " +
          std::to_string(s.bound) + ")");
    }
  } while (!s.value.compare_exchange_weak(v, v + n, std::memory_order_release, std::memory_order_relaxed));
  s.released.announce(n == 1 ? 1 : INT_MAX);
}

int semaphore_core::value() const noexcept { return static_cast<int>(state_->value.load(std::memory_order_relaxed)); }

bool semaphore_core::bounded() const noexcept { return state_->bounded != 0; }

sync_token semaphore_core::token() const { return memory_->token(0); }

}  // namespace mproc::detail
