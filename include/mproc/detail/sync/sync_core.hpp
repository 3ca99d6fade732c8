// The compiled cores under <mproc/sync.hpp> and <mproc/shared.hpp>: one non-template class
// per primitive, over state in shared memory (defined in src/). The public handles are thin
// shells that share one core per process through a std::shared_ptr.
//
// Contract:
// - Each core maps the memfd its object lives in; a core made from a sync_token maps the
//   memfd another process (or this one) described, and checks that the object there is of
//   the expected kind (mproc::error if not).
// - Deadlines are absolute CLOCK_MONOTONIC time points: null waits forever; one that has
//   passed (e.g. detail::no_wait) does not wait. Waits spin briefly, then sleep on a futex.
// - Thread safety: every member may be called from any thread of any process at once.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "mproc/detail/os/fd_token.hpp"
#include "mproc/detail/wait/deadline.hpp"
#include "mproc/detail/wait/wait_probe.hpp"

namespace mproc::detail {

class sync_memory;  // src/sync/sync_memory.hpp

// A sync object as it travels between processes: the memfd it lives in, and where in it.
struct sync_token {
  fd_token memory;
  std::uint64_t offset = 0;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(memory, offset);
  }
};

// mutex and recursive_mutex: a robust process-shared mutex plus its owner (process id and
// thread id) and recursion depth.
class lock_core {
 public:
  // A new lock in a memfd of its own.
  explicit lock_core(bool recursive);
  // The lock at `offset` of `memory`: made there when `create` (recursive or not as
  // asked), else opened, its kind read from it.
  lock_core(std::shared_ptr<sync_memory> memory, std::size_t offset, bool create, bool recursive);
  // The lock a token names, of either kind (mproc::error if it names no lock). `type`:
  // the public type loading it ("mproc::mutex"), which the errors name.
  static std::shared_ptr<lock_core> open(const sync_token& token, const char* type);
  // Releases the lock if this thread holds it (see the destructor's comment in src/).
  ~lock_core();
  lock_core(const lock_core&) = delete;
  lock_core& operator=(const lock_core&) = delete;

  // `type` below is the public type whose member was called ("mproc::mutex", or
  // "mproc::condition" for a condition's lock): the errors name it.

  // Blocks until acquired. The holder of a non-recursive lock: mproc::error, since it
  // would wait forever for itself.
  void lock(const char* type);
  // Acquires; false when the deadline passed first. The holder of a non-recursive lock:
  // false, whatever the deadline (a timed wait, even of hours::max(), is one that may
  // fail, as std::timed_mutex's is).
  bool try_lock(deadline until, const char* type);
  // Throws mproc::error unless this thread holds the lock.
  void unlock(const char* type);
  bool held_by_this_thread() const noexcept;
  // For condition::wait: releases every level this thread holds and returns how many;
  // reacquire() takes the lock back (blocking) with that many levels.
  unsigned release_all();
  void reacquire(unsigned levels);

  bool recursive() const noexcept { return recursive_; }
  const char* type_name() const noexcept { return recursive_ ? "mproc::recursive_mutex" : "mproc::mutex"; }
  std::uint64_t owner_deaths() const noexcept;
  sync_token token() const;
  const std::shared_ptr<sync_memory>& memory() const noexcept { return memory_; }

  struct state;

 private:
  // `timed`: a deadline was asked for, so holding the lock already is a false, not an error.
  // `type` and `call` name the public call, for errors.
  bool acquire(deadline until, bool timed, const char* type, const char* call);

  std::shared_ptr<sync_memory> memory_;
  state* state_;
  std::size_t offset_;
  bool recursive_;
};

// semaphore and bounded_semaphore: a counter that waiters take from.
class semaphore_core {
 public:
  semaphore_core(unsigned value, bool bounded);
  // `type`: the public type loading it, "mproc::semaphore" or "mproc::bounded_semaphore".
  semaphore_core(const sync_token& token, const char* type);

  bool acquire(deadline until);  // false when the deadline passed first
  void release(unsigned n);      // mproc::error above the bound
  int value() const noexcept;
  bool bounded() const noexcept;
  sync_token token() const;

  struct state;

 private:
  std::shared_ptr<sync_memory> memory_;
  state* state_;
};

// event: a flag, and a generation bumped by every set(), so that a waiter woken by a set()
// returns true even if clear() came before it ran.
class event_core {
 public:
  event_core();
  explicit event_core(const sync_token& token);

  void set() noexcept;
  void clear() noexcept;
  bool is_set() const noexcept;
  bool wait(deadline until);  // true when set, or set while waiting
  sync_token token() const;
  wait_probe probe() noexcept;  // for mproc::wait_ready: ready while set

  struct state;

 private:
  std::shared_ptr<sync_memory> memory_;
  state* state_;
};

// condition: a list of waiting threads in shared memory, guarded by a lock_core.
class condition_core {
 public:
  // Over `lock`; null: over a new recursive lock living in the condition's own memfd.
  explicit condition_core(std::shared_ptr<lock_core> lock);
  condition_core(const sync_token& lock, const sync_token& self);

  const std::shared_ptr<lock_core>& lock() const noexcept { return lock_; }
  // The lock must be held by this thread (mproc::error otherwise). True when notified,
  // false when the deadline passed first; holds the lock again on return either way.
  bool wait(deadline until);
  // The lock must be held by this thread. Wakes the `n` longest-waiting live waiters (or
  // all there are); returns how many it woke.
  unsigned notify(unsigned n);
  // Waiters found dead by notify, plus deaths of the lock's holders.
  std::uint64_t owner_deaths() const noexcept;
  sync_token token() const;

  struct state;

 private:
  std::shared_ptr<sync_memory> memory_;
  state* state_;
  std::shared_ptr<lock_core> lock_;
};

// barrier: arrivals counted under a robust mutex; waiters in a shared list.
class barrier_core {
 public:
  barrier_core(unsigned parties, std::function<void()> action);
  explicit barrier_core(const sync_token& token);

  std::size_t wait(deadline until);  // throws broken_barrier
  void abort();
  void reset();
  bool broken() const noexcept;
  unsigned parties() const noexcept;
  unsigned n_waiting();
  std::uint64_t owner_deaths() const noexcept;
  bool has_action() const noexcept { return static_cast<bool>(action_); }
  sync_token token() const;

  struct state;

 private:
  void lock_state(const char* call);
  void unlock_state() noexcept;
  void check_holder() noexcept;
  void recover() noexcept;
  void release_all_locked() noexcept;
  void break_locked() noexcept;

  std::shared_ptr<sync_memory> memory_;
  state* state_;
  std::function<void()> action_;  // process-local: a function cannot travel
};

// shared_value and shared_array: `count` elements of `element_size` bytes, aligned to
// `alignment`, beside a recursive lock, in one memfd. The bytes start zeroed.
class shared_block {
 public:
  // `type`: the public type it is for, "mproc::shared_value" or "mproc::shared_array",
  // which the errors name.
  shared_block(std::size_t element_size, std::size_t alignment, std::size_t count, const char* type);
  // Throws mproc::error if the token names no such block or one of another element type
  // (size or alignment).
  shared_block(const sync_token& token, std::size_t element_size, std::size_t alignment, const char* type);

  void* data() const noexcept { return data_; }
  std::size_t count() const noexcept { return count_; }
  const std::shared_ptr<lock_core>& lock() const noexcept { return lock_; }
  sync_token token() const;

  struct state;

 private:
  std::shared_ptr<sync_memory> memory_;
  std::shared_ptr<lock_core> lock_;
  void* data_ = nullptr;
  std::size_t count_ = 0;
};

}  // namespace mproc::detail
