// mproc's synchronisation primitives — Python's multiprocessing Lock, RLock, Semaphore,
// BoundedSemaphore, Event, Condition and Barrier — for processes, and safe when a process
// dies holding one.
//
// Contract:
// - Handles. Every type is a copyable handle to one object in shared memory (a memfd:
//   nothing is ever created in /dev/shm; the memory goes when the last process holding it
//   lets go, however it ends). Copies name the same object, and so does the copy a forked
//   child inherits. A handle is also serialisable (<mproc/serialize.hpp>), so it can be sent
//   to a process made at any time: inside a message on a queue or pipe, or to a pool task.
//   The sending process must still hold the handle when the receiver decodes it (see
//   detail/fd_token.hpp). Moving a handle copies it: a moved-from handle stays usable.
//   Making one costs a memfd: one descriptor and a page of memory per process holding it.
// - Thread safety: every member may be called from any thread of any process at once.
//   Assigning to a handle while another thread uses that same handle object is a race,
//   as for std::shared_ptr.
// - Ownership. A mutex or recursive_mutex is held by a thread, named by its process id and
//   thread id. Only the holder may release it: a release by another thread or process
//   throws mproc::error (Python's Lock lets anyone release it; a lock that recovers from
//   its holder's death must know who the holder is). Semaphores have no holder.
// - What blocks: lock(), acquire(), wait() and semaphore::acquire() until they succeed;
//   the timed forms at most their timeout. A timeout is any std::chrono::duration (zero or
//   negative: do not wait) and becomes one absolute CLOCK_MONOTONIC deadline: signals and
//   spurious wakes never stretch it. Waits spin for a few microseconds, then sleep on a
//   futex; a release wakes a sleeper with a system call only when one sleeps.
// - What a timeout does: try_lock_for/try_lock_until, acquire(block, timeout),
//   try_acquire_for, event::wait(timeout) and condition::wait_for return false;
//   barrier::wait(timeout) throws broken_barrier and breaks the barrier for every waiter,
//   as Python's does.
// - What throws: misuse is mproc::error — releasing a lock this thread does not hold,
//   lock() of a mutex this thread already holds (it would wait forever for itself),
//   over-releasing a bounded_semaphore, wait or notify on a condition whose lock this
//   thread does not hold, a handle received that names another kind of object. A broken
//   barrier is broken_barrier. Running out of memory or descriptors when making an
//   object is std::system_error. unlock() and release() never throw when used rightly.
// - Memory ordering: a release (unlock, semaphore release, event set, notify, a completed
//   barrier cycle) happens-before the acquire or wake it allows, in any process.
//
// Dead peers — a process that ends at any instant, even by SIGKILL:
// - mutex and recursive_mutex (and the locks of condition, shared_value, shared_array)
//   are robust: when the holder dies, the next acquirer — one already waiting included —
//   gets the lock at once, and owner_deaths() counts it. What the dead holder was changing
//   under the lock may be half done: owner_deaths() says when to check.
// - semaphore, bounded_semaphore: nobody holds a unit. A process that dies after
//   acquire() never gives its unit back (as in Python); a dead waiter changes nothing.
// - event: no lock. A process that dies before set() leaves the waiters waiting until
//   someone else sets it or their timeout passes.
// - condition: a waiter that dies is skipped: notify(n) wakes n live waiters. A notifier
//   that dies holding the lock leaves it to the next acquirer (robust, as above); one that
//   dies before notifying leaves the waiters waiting until a notify or their timeout.
// - barrier: a process that dies holding the barrier's internal lock (while arriving,
//   running the action, aborting or resetting) breaks the barrier: the others get
//   broken_barrier within about 100 ms, even with no timeout. A party that dies after
//   arriving was counted, and the cycle completes without it. A party that dies before
//   arriving cannot be told from a slow one: the others wait until their timeout (which
//   breaks the barrier for all), so give wait() a timeout when a party may die.
// owner_deaths() counts, on every type, the deaths it recovered from (0 for semaphores and
// events, which have nothing to recover).
#pragma once

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "mproc/detail/sync/sync_core.hpp"
#include "mproc/detail/wait/duration.hpp"
#include "mproc/error.hpp"

namespace mproc {

class condition;
template <class T>
class shared_value;
template <class T>
class shared_array;

namespace detail {

// What mutex and recursive_mutex share: everything but their kind.
class lock_handle {
 public:
  // Names memory of this machine: cannot go to another (mproc::mpi).
  using mproc_local_handle = void;
  lock_handle(const lock_handle&) = default;  // no move: a moved-from handle stays usable
  lock_handle& operator=(const lock_handle&) = default;
  ~lock_handle() = default;

  // TimedLockable, for std::lock_guard, std::unique_lock, std::scoped_lock.
  // Blocks until acquired.
  void lock() { core_->lock(core_->type_name()); }
  // Never waits.
  [[nodiscard]] bool try_lock() { return core_->try_lock(detail::deadline::no_wait(), core_->type_name()); }
  // Waits at most `timeout`; false when it passed.
  template <duration D>
  [[nodiscard]] bool try_lock_for(D timeout) {
    return core_->try_lock(detail::deadline::in(timeout), core_->type_name());
  }
  template <class Clock, class Duration>
  [[nodiscard]] bool try_lock_until(const std::chrono::time_point<Clock, Duration>& when) {
    return core_->try_lock(detail::deadline::at(when), core_->type_name());
  }
  // Throws mproc::error if this thread does not hold the lock.
  void unlock() { core_->unlock(core_->type_name()); }

  // Python: acquire(block=True) blocks and returns true; acquire(false) never waits.
  bool acquire(bool block = true) {
    if (!block) return try_lock();
    lock();
    return true;
  }
  // Python's acquire(block, timeout): with block, waits at most `timeout`; without, the
  // timeout is ignored and it never waits.
  template <duration D>
  bool acquire(bool block, D timeout) {
    return block ? try_lock_for(timeout) : try_lock();
  }
  template <duration D>
  bool acquire_for(D timeout) {
    return try_lock_for(timeout);
  }
  void release() { unlock(); }

  // Whether the calling thread holds it (a snapshot for any other thread's lock).
  bool held_by_this_thread() const noexcept { return core_->held_by_this_thread(); }
  // How many times a holder died holding it and the lock was recovered.
  std::uint64_t owner_deaths() const noexcept { return core_->owner_deaths(); }

  // cereal: a handle travels as a token its receiver turns into its own mapping.
  template <class Archive>
  void save(Archive& archive) const {
    archive(core_->token());
  }
  template <class Archive>
  void load(Archive& archive) {
    sync_token token;
    archive(token);
    auto core = lock_core::open(token, core_->type_name());
    if (core->recursive() != core_->recursive()) {
      throw error(std::string(core_->type_name()) + "::load: the handle received names an " + core->type_name() +
                  "; receive it into an " + core->type_name());
    }
    core_ = std::move(core);
  }

 protected:
  explicit lock_handle(bool recursive) : core_(std::make_shared<lock_core>(recursive)) {}
  explicit lock_handle(std::shared_ptr<lock_core> core) noexcept : core_(std::move(core)) {}

 private:
  friend class mproc::condition;
  std::shared_ptr<lock_core> core_;
};

}  // namespace detail

// Python's multiprocessing.Lock: held by one thread at a time, not re-entrant.
// By the thread that holds it: lock() throws mproc::error; try_lock() and the timed
// forms return false at once (only that thread could release it).
class mutex : public detail::lock_handle {
 public:
  mutex() : lock_handle(false) {}
};
using lock = mutex;

// Python's multiprocessing.RLock: the holder may acquire it again; it is free once released
// as many times as it was acquired.
class recursive_mutex : public detail::lock_handle {
 public:
  recursive_mutex() : lock_handle(true) {}

 private:
  template <class T>
  friend class shared_value;
  template <class T>
  friend class shared_array;
  explicit recursive_mutex(std::shared_ptr<detail::lock_core> core) noexcept : lock_handle(std::move(core)) {}
};
using rlock = recursive_mutex;

// Python's multiprocessing.Semaphore: a count; acquire() takes one (waiting while it is 0),
// release() gives one back — from any thread or process.
class semaphore {
 public:
  // Names memory of this machine: cannot go to another (mproc::mpi).
  using mproc_local_handle = void;
  // Throws mproc::error if n > INT_MAX.
  explicit semaphore(unsigned n = 1) : core_(std::make_shared<detail::semaphore_core>(n, false)) {}
  semaphore(const semaphore&) = default;  // no move: a moved-from handle stays usable
  semaphore& operator=(const semaphore&) = default;
  ~semaphore() = default;

  // Blocks until a unit is there, then takes it.
  void acquire() { core_->acquire(detail::deadline::never()); }
  [[nodiscard]] bool try_acquire() { return core_->acquire(detail::deadline::no_wait()); }
  // Waits at most `timeout`; false when it passed.
  template <detail::duration D>
  [[nodiscard]] bool try_acquire_for(D timeout) {
    return core_->acquire(detail::deadline::in(timeout));
  }
  template <class Clock, class Duration>
  [[nodiscard]] bool try_acquire_until(const std::chrono::time_point<Clock, Duration>& when) {
    return core_->acquire(detail::deadline::at(when));
  }
  // Gives back one unit (n units), waking as many waiters. Throws mproc::error above the
  // bound: a bounded_semaphore's initial value, INT_MAX for a semaphore.
  void release() { core_->release(1); }
  void release(unsigned n) { core_->release(n); }
  // The units there now (a snapshot).
  int get_value() const noexcept { return core_->value(); }
  // Always 0: nobody holds a unit, so no death is ever recovered from (see the contract).
  std::uint64_t owner_deaths() const noexcept { return 0; }

  template <class Archive>
  void save(Archive& archive) const {
    archive(core_->token());
  }
  template <class Archive>
  void load(Archive& archive) {
    detail::sync_token token;
    archive(token);
    auto core = std::make_shared<detail::semaphore_core>(
        token, core_->bounded() ? "mproc::bounded_semaphore" : "mproc::semaphore");
    if (core_->bounded() && !core->bounded()) {
      throw error(
          "mproc::bounded_semaphore::load: the handle received names an mproc::semaphore, which has no bound; "
          "receive it into an mproc::semaphore");
    }
    core_ = std::move(core);
  }

 protected:
  struct bounded_tag {};
  semaphore(bounded_tag, unsigned n) : core_(std::make_shared<detail::semaphore_core>(n, true)) {}

 private:
  std::shared_ptr<detail::semaphore_core> core_;
};

// Python's multiprocessing.BoundedSemaphore: release() above the initial value throws
// mproc::error. Usable wherever a semaphore is.
class bounded_semaphore : public semaphore {
 public:
  explicit bounded_semaphore(unsigned n = 1) : semaphore(bounded_tag{}, n) {}
};

// Python's multiprocessing.Event: a flag that wait() waits for.
class event {
 public:
  // Names memory of this machine: cannot go to another (mproc::mpi).
  using mproc_local_handle = void;
  event() : core_(std::make_shared<detail::event_core>()) {}
  event(const event&) = default;  // no move: a moved-from handle stays usable
  event& operator=(const event&) = default;
  ~event() = default;

  // Sets the flag and wakes every waiter.
  void set() noexcept { core_->set(); }
  void clear() noexcept { core_->clear(); }
  bool is_set() const noexcept { return core_->is_set(); }
  // Blocks until the flag is set.
  void wait() { core_->wait(detail::deadline::never()); }
  // Waits at most `timeout`. True when the flag was set, or was set while waiting (even if
  // cleared since, as threading.Event); false when the timeout passed first.
  template <detail::duration D>
  bool wait(D timeout) {
    return core_->wait(detail::deadline::in(timeout));
  }
  // Always 0: an event has no lock, so no death is ever recovered from.
  std::uint64_t owner_deaths() const noexcept { return 0; }

  template <class Archive>
  void save(Archive& archive) const {
    archive(core_->token());
  }
  template <class Archive>
  void load(Archive& archive) {
    detail::sync_token token;
    archive(token);
    core_ = std::make_shared<detail::event_core>(token);
  }

 private:
  // For mproc::wait_ready: ready while set.
  friend detail::wait_probe mproc_wait_probe(event& e) { return e.core_->probe(); }

  std::shared_ptr<detail::event_core> core_;
};

// Python's multiprocessing.Condition: waiters sleep until notified; wait and notify need
// the condition's lock held by the calling thread (mproc::error otherwise). The condition
// is itself Lockable, through that lock.
class condition {
 public:
  // Names memory of this machine: cannot go to another (mproc::mpi).
  using mproc_local_handle = void;
  // Over a recursive_mutex of its own (Python's default).
  condition() : core_(std::make_shared<detail::condition_core>(nullptr)) {}
  // Over `lock`, shared with whoever else holds a handle to it.
  explicit condition(const mutex& with) : core_(std::make_shared<detail::condition_core>(with.core_)) {}
  explicit condition(const recursive_mutex& with) : core_(std::make_shared<detail::condition_core>(with.core_)) {}
  condition(const condition&) = default;  // no move: a moved-from handle stays usable
  condition& operator=(const condition&) = default;
  ~condition() = default;

  // The lock, as for mutex / recursive_mutex.
  void lock() { core_->lock()->lock("mproc::condition"); }
  [[nodiscard]] bool try_lock() { return core_->lock()->try_lock(detail::deadline::no_wait(), "mproc::condition"); }
  template <detail::duration D>
  [[nodiscard]] bool try_lock_for(D timeout) {
    return core_->lock()->try_lock(detail::deadline::in(timeout), "mproc::condition");
  }
  template <class Clock, class Duration>
  [[nodiscard]] bool try_lock_until(const std::chrono::time_point<Clock, Duration>& when) {
    return core_->lock()->try_lock(detail::deadline::at(when), "mproc::condition");
  }
  void unlock() { core_->lock()->unlock("mproc::condition"); }
  bool acquire(bool block = true) {
    if (!block) return try_lock();
    lock();
    return true;
  }
  template <detail::duration D>
  bool acquire(bool block, D timeout) {
    return block ? try_lock_for(timeout) : try_lock();
  }
  void release() { unlock(); }

  // Releases the lock (every level of a recursive one), sleeps until notified, then takes
  // the lock back as it was. No spurious wakeups: it returns when notified (or, for the
  // timed forms, when the timeout passed). Throws mproc::error without the lock.
  void wait() { core_->wait(detail::deadline::never()); }
  // As wait(), at most `timeout`: true when notified, false when the timeout passed. The
  // lock is held again on return either way.
  template <detail::duration D>
  bool wait_for(D timeout) {
    return core_->wait(detail::deadline::in(timeout));
  }
  template <class Clock, class Duration>
  bool wait_until(const std::chrono::time_point<Clock, Duration>& when) {
    return core_->wait(detail::deadline::at(when));
  }
  // Waits until `pred()` holds (checked under the lock, first before any wait).
  template <std::predicate P>
  void wait(P pred) {
    while (!pred()) core_->wait(detail::deadline::never());
  }
  // Python's wait_for(predicate, timeout): waits until `pred()` holds or `timeout` passed,
  // then returns pred()'s last value.
  template <detail::duration D, std::predicate P>
  bool wait_for(D timeout, P pred) {
    const auto until = detail::deadline::in(timeout);
    while (!pred()) {
      if (!core_->wait(until)) return static_cast<bool>(pred());
    }
    return true;
  }

  // Wake the `n` threads that have waited longest (fewer if fewer wait), in any process;
  // waiters that died are skipped. Throws mproc::error without the lock.
  void notify(unsigned n = 1) { core_->notify(n); }
  void notify_all() { core_->notify(~0U); }

  // Waiters found dead by notify, plus holders of the lock that died holding it.
  std::uint64_t owner_deaths() const noexcept { return core_->owner_deaths(); }

  template <class Archive>
  void save(Archive& archive) const {
    archive(core_->lock()->token(), core_->token());
  }
  template <class Archive>
  void load(Archive& archive) {
    detail::sync_token lock_token, self_token;
    archive(lock_token, self_token);
    core_ = std::make_shared<detail::condition_core>(lock_token, self_token);
  }

 private:
  std::shared_ptr<detail::condition_core> core_;
};

// Python's multiprocessing.Barrier: `parties` waits release each other; each returns its
// arrival index (0 .. parties-1) in that cycle, and the barrier starts over.
class barrier {
 public:
  // Names memory of this machine: cannot go to another (mproc::mpi).
  using mproc_local_handle = void;
  // Throws mproc::error if parties is 0. (The default makes a barrier of 1: it exists for
  // decoding a handle into.)
  explicit barrier(unsigned parties = 1) : core_(std::make_shared<detail::barrier_core>(parties, nullptr)) {}
  // `action` runs in the last process to arrive, before any party is released, while the
  // barrier's lock is held (so it must not use this barrier). If it throws, the barrier
  // breaks, the others get broken_barrier and that wait() rethrows the action's exception.
  // A function cannot cross processes: a barrier with an action travels only by fork;
  // serialising it throws serialization_error.
  barrier(unsigned parties, std::function<void()> action)
      : core_(std::make_shared<detail::barrier_core>(parties, std::move(action))) {}
  barrier(const barrier&) = default;  // no move: a moved-from handle stays usable
  barrier& operator=(const barrier&) = default;
  ~barrier() = default;

  // Blocks until `parties` waits have arrived. Throws broken_barrier if the barrier is or
  // becomes broken, aborted or reset meanwhile.
  std::size_t wait() { return core_->wait(detail::deadline::never()); }
  // As wait(), at most `timeout`: then the barrier breaks, for every waiter, and this
  // throws broken_barrier.
  template <detail::duration D>
  std::size_t wait(D timeout) {
    return core_->wait(detail::deadline::in(timeout));
  }
  // Breaks the barrier: waiters and later waits get broken_barrier until reset().
  void abort() { core_->abort(); }
  // Back to empty and unbroken; threads waiting now get broken_barrier.
  void reset() { core_->reset(); }
  bool broken() const noexcept { return core_->broken(); }
  unsigned parties() const noexcept { return core_->parties(); }
  // Parties waiting in the current cycle.
  unsigned n_waiting() { return core_->n_waiting(); }
  // How many times a process died holding the barrier's lock (each broke it, or finished
  // a release it had begun).
  std::uint64_t owner_deaths() const noexcept { return core_->owner_deaths(); }

  template <class Archive>
  void save(Archive& archive) const {
    if (core_->has_action()) {
      throw serialization_error(
          "mproc::barrier::save: a barrier with an action cannot be sent, since a function cannot cross "
          "processes; let the processes that use it inherit it by fork");
    }
    archive(core_->token());
  }
  template <class Archive>
  void load(Archive& archive) {
    detail::sync_token token;
    archive(token);
    core_ = std::make_shared<detail::barrier_core>(token);
  }

 private:
  std::shared_ptr<detail::barrier_core> core_;
};

}  // namespace mproc
