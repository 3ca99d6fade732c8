// How mproc::wait_ready learns whether an object is ready and sleeps until it may be: the
// object's own wake-up, described once, so that one wait covers descriptors (pipes,
// processes) and futex-based objects (queues, events, async results) alike.
//
// Each waitable type provides it through a hidden friend, `mproc_wait_probe(object&)`,
// found by argument-dependent lookup: mproc::waitable converts from any type that has one,
// and <mproc/wait.hpp> needs none of their headers.
#pragma once

#include <atomic>
#include <cstdint>

namespace mproc::detail {

struct wakeup;  // src/wait/futex.hpp: a condition's futex word and its count of sleepers

struct wait_probe {
  // A descriptor that poll(2) reports readable (or hung up) once the object is ready.
  int fd = -1;
  // Otherwise a futex-based object, in memory that may be shared between processes.
  // `ready(object)` says whether it is ready now, without blocking.
  void* object = nullptr;
  bool (*ready)(void* object) noexcept = nullptr;
  // How it wakes its sleepers, one of:
  // - a wakeup its changes announce: a waiter counts itself among its sleepers, so that the
  //   object's fast path makes no wake syscall while nobody waits this way. With
  //   `wakes_one`, a change wakes one sleeper only (a queue's put): a waiter that took such
  //   a wake passes it on, since the wake may have been meant for a get() asleep beside it;
  wakeup* announced = nullptr;
  bool wakes_one = false;
  // - or a word that its change wakes once `arm(object, expected)` has marked a sleeper:
  //   arm returns false when the object is ready already, else the value to sleep on.
  std::atomic<std::uint32_t>* word = nullptr;
  bool (*arm)(void* object, std::uint32_t& expected) noexcept = nullptr;
};

}  // namespace mproc::detail
