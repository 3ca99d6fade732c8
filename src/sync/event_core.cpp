// mproc::event: a flag in shared memory, and a generation that every set() bumps, packed in
// one word: (generation << 1) | flag. A waiter returns when the flag is up or the
// generation moved since it began, so that set() followed at once by clear() still wakes
// everyone who was waiting (as threading.Event does). No lock: nothing to recover when a
// process dies, whatever it was doing.
#include <climits>

#include "mproc/detail/sync/sync_core.hpp"
#include "sync/sync_memory.hpp"
#include "wait/futex.hpp"

namespace mproc::detail {

struct event_core::state {
  object_header header;
  alignas(64) std::atomic<std::uint32_t> word;
  alignas(64) wakeup changed;
};

event_core::event_core() : memory_(sync_memory::create("mproc-event", sizeof(state), "mproc::event")) {
  state_ = reinterpret_cast<state*>(memory_->make_object(0, sync_kind::event, sizeof(state)));
}

event_core::event_core(const sync_token& token) : memory_(sync_memory::open(token.memory, "mproc::event")) {
  state_ = reinterpret_cast<state*>(
      memory_->open_object(static_cast<std::size_t>(token.offset), sync_kind::event, sizeof(state)));
}

void event_core::set() noexcept {
  state& s = *state_;
  std::uint32_t w = s.word.load(std::memory_order_relaxed);
  do {
    if ((w & 1) != 0) return;  // already set: nobody is waiting for this one
  } while (!s.word.compare_exchange_weak(w, (w + 2) | 1, std::memory_order_release, std::memory_order_relaxed));
  s.changed.announce(INT_MAX);
}

void event_core::clear() noexcept { state_->word.fetch_and(~std::uint32_t{1}, std::memory_order_relaxed); }

bool event_core::is_set() const noexcept { return (state_->word.load(std::memory_order_acquire) & 1) != 0; }

bool event_core::wait(deadline until) {
  state& s = *state_;
  const std::uint32_t start = s.word.load(std::memory_order_acquire);
  if ((start & 1) != 0) return true;
  // A set() since `start` changes the generation bits, even if a clear() followed.
  return wait_for_condition(
      s.changed, [&s, start] { return s.word.load(std::memory_order_acquire) != start; }, until);
}

wait_probe event_core::probe() noexcept {
  return {
      .object = state_,
      .ready = [](void* s) noexcept { return (static_cast<state*>(s)->word.load(std::memory_order_acquire) & 1) != 0; },
      .announced = &state_->changed};
}

sync_token event_core::token() const { return memory_->token(0); }

}  // namespace mproc::detail
