#include "sync/wait_list.hpp"

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <climits>
#include <string>
#include <utility>
#include <vector>

#include "mproc/error.hpp"
#include "wait/robust_mutex.hpp"

namespace mproc::detail {

void wait_list::init(wait_list_header& header, std::size_t slots_offset, std::size_t file_bytes) noexcept {
  header.next_ticket = 1;
  header.capacity =
      static_cast<std::uint32_t>(file_bytes > slots_offset ? (file_bytes - slots_offset) / slot_bytes : 0);
  header.used = 0;
  header.dead_waiters.store(0, std::memory_order_relaxed);
}

wait_list::slot& wait_list::at(std::uint32_t index) {
  // Another process may have grown the memfd: at() maps what this one has not yet.
  return *reinterpret_cast<slot*>(memory_->at(slots_offset_ + std::size_t{index} * slot_bytes, slot_bytes));
}

bool wait_list::waiter_alive(slot& s) noexcept {
  const int r = ::pthread_mutex_trylock(&s.alive);
  if (r == EBUSY) return true;
  if (r == EOWNERDEAD) {
    // Its waiter died (killed while waiting, or before it could leave).
    ::pthread_mutex_consistent(&s.alive);
    header_->dead_waiters.fetch_add(1, std::memory_order_relaxed);
  }
  // Free (also a slot whose waiter died between its last two stores): reclaim it.
  s.state.store(slot_free, std::memory_order_release);
  if (r == 0 || r == EOWNERDEAD) ::pthread_mutex_unlock(&s.alive);
  return false;
}

std::uint32_t wait_list::enter(const char* who) {
  wait_list_header& h = *header_;
  std::uint32_t index = h.used;
  for (std::uint32_t i = 0; i < h.used; ++i) {
    if (at(i).state.load(std::memory_order_relaxed) == slot_free) {
      index = i;
      break;
    }
  }
  if (index == h.used) {
    // None free: reclaim the slots of waiters that died, before growing.
    for (std::uint32_t i = 0; i < h.used; ++i) {
      slot& s = at(i);
      if (s.state.load(std::memory_order_relaxed) != slot_free && !waiter_alive(s)) {
        index = i;
        break;
      }
    }
  }
  if (index == h.used) {
    if (h.used == max_slots) {
      throw error(std::string(who) + ": " + std::to_string(max_slots) + " threads wait on it already, the most");
    }
    if (h.used == h.capacity) {
      const std::uint32_t capacity = std::min(max_slots, std::max<std::uint32_t>(h.capacity * 2, 64));
      memory_->grow(slots_offset_ + std::size_t{capacity} * slot_bytes);
      h.capacity = capacity;
    }
    slot& s = at(index);
    robust_mutex_init(s.alive, who);
    s.state.store(slot_free, std::memory_order_relaxed);
    s.wake.event.store(0, std::memory_order_relaxed);
    s.wake.sleepers.store(0, std::memory_order_relaxed);
    s.wake.awake_by_ns.store(0, std::memory_order_relaxed);
    h.used = index + 1;  // only now: a slot is counted once it is initialised
  }
  slot& s = at(index);
  const int r = ::pthread_mutex_trylock(&s.alive);
  // A free slot's mutex is free, or held by a waiter that died between freeing the slot
  // and unlocking it: leave() and enter() run under the owner's lock, and a slot found
  // dead was unlocked by waiter_alive().
  assert(r == 0 || r == EOWNERDEAD);
  if (r == EOWNERDEAD) ::pthread_mutex_consistent(&s.alive);  // its last waiter died after freeing it
  // A waiter killed while asleep never took itself off the sleepers count.
  s.wake.sleepers.store(0, std::memory_order_relaxed);
  s.ticket = h.next_ticket++;
  s.state.store(slot_waiting, std::memory_order_release);  // last: the slot is live
  return index;
}

std::uint32_t wait_list::leave(std::uint32_t index) {
  slot& s = at(index);  // mapped since enter(): cannot fail
  const std::uint32_t last = s.state.load(std::memory_order_acquire);
  s.state.store(slot_free, std::memory_order_release);
  ::pthread_mutex_unlock(&s.alive);
  return last;
}

unsigned wait_list::wake(unsigned n, slot_state how, bool skip_dead) {
  if (n == 0) return 0;
  wait_list_header& h = *header_;
  std::vector<std::pair<std::uint64_t, std::uint32_t>> waiting;  // (ticket, index)
  for (std::uint32_t i = 0; i < h.used; ++i) {
    slot& s = at(i);
    if (s.state.load(std::memory_order_relaxed) == slot_waiting) waiting.emplace_back(s.ticket, i);
  }
  std::sort(waiting.begin(), waiting.end());
  unsigned woken = 0;
  for (const auto& [ticket, index] : waiting) {
    if (woken == n) break;
    slot& s = at(index);
    if (skip_dead && !waiter_alive(s)) continue;
    s.state.store(how, std::memory_order_release);
    s.wake.announce(1);
    ++woken;
  }
  return woken;
}

}  // namespace mproc::detail
