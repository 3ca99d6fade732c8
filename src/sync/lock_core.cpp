// mproc::mutex and mproc::recursive_mutex: a robust process-shared pthread mutex, plus the
// owner's identity (process id, thread id) and recursion depth beside it.
//
// Why our own owner word beside glibc's: glibc keeps the owner's thread id inside the
// mutex, but not portably readable, and without the process id. Ours gives cheap answers to
// "does this thread hold it?" (re-entry, release by a non-owner, condition's checks), and a
// hint for spinning: a contended lock spins on it (a read) rather than on trylock (a write
// that bounces the cache line).
#include <pthread.h>

#include <cassert>
#include <cerrno>
#include <climits>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "mproc/detail/sync/sync_core.hpp"
#include "mproc/error.hpp"
#include "os/syscall.hpp"
#include "os/thread_identity.hpp"
#include "shm/shared_memory.hpp"
#include "sync/sync_memory.hpp"
#include "wait/cpu_relax.hpp"
#include "wait/robust_mutex.hpp"

namespace mproc::detail {

struct lock_core::state {
  object_header header;
  alignas(64) pthread_mutex_t mutex;
  // this_thread_id() of the holder; 0 when free. Written only by the holder (or by the
  // thread that recovers the lock from a dead holder), read by anyone: a thread that
  // reads its own id here is the holder, whatever others are doing.
  std::atomic<std::uint64_t> owner;
  std::uint32_t levels;  // recursion depth; touched by the holder only
  alignas(64) std::atomic<std::uint64_t> owner_deaths;
};
static_assert(sizeof(lock_core::state) <= lock_bytes);

namespace {

// A contended lock polls the owner word up to this many times, with pauses doubling from
// 1 to 64 between polls (a few microseconds in all), before sleeping in the kernel: a futex
// sleep and wake costs some 10 µs between processes, more than most critical sections
// last. The growing pauses keep the poller from pulling the lock's cache line away from the
// holder at every step: with back-to-back critical sections, polling at full speed halved
// the throughput of two contending processes in bench/lock_bench.cpp; with work between
// them, spinning doubled it.
constexpr int spin_limit = 16;

// 0, EOWNERDEAD or ETIMEDOUT, after the first trylock said EBUSY. `type` and `call` name
// the public call, for errors.
int lock_contended(lock_core::state& s, deadline until, const char* type, const char* call) {
  if (until == deadline::no_wait()) return ETIMEDOUT;
  for (int i = 0, pauses = 1; i < spin_limit; ++i, pauses = pauses < 64 ? 2 * pauses : pauses) {
    for (int k = 0; k < pauses; ++k) cpu_relax();
    if (s.owner.load(std::memory_order_relaxed) != 0) continue;
    const int r = ::pthread_mutex_trylock(&s.mutex);
    if (r != EBUSY) return r;
  }
  if (until.passed()) return ETIMEDOUT;
  switch (robust_mutex_lock_raw(s.mutex, until, type, call)) {  // throws on ENOTRECOVERABLE
    case 0:
      return 0;
    case 1:
      return EOWNERDEAD;
    default:
      return ETIMEDOUT;
  }
}

// Memory that must stay mapped until the process ends (see ~lock_core). Reachable from a
// static, so that leak checkers do not report it.
void keep_mapped_forever(std::shared_ptr<sync_memory> memory) {
  static std::mutex guard;
  static auto* const kept = new std::vector<std::shared_ptr<sync_memory>>;
  try {
    std::lock_guard lock(guard);
    kept->push_back(std::move(memory));
  } catch (...) {  // out of memory: leak it instead, which is what we want anyway
    new std::shared_ptr<sync_memory>(std::move(memory));
  }
}

}  // namespace

lock_core::lock_core(bool recursive)
    : lock_core(sync_memory::create(recursive ? "mproc-rlock" : "mproc-lock", lock_bytes,
                                    recursive ? "mproc::recursive_mutex" : "mproc::mutex"),
                0, true, recursive) {}

lock_core::lock_core(std::shared_ptr<sync_memory> memory, std::size_t offset, bool create, bool recursive)
    : memory_(std::move(memory)), state_(nullptr), offset_(offset), recursive_(recursive) {
  if (create) {
    std::byte* p =
        memory_->make_object(offset, recursive ? sync_kind::recursive_mutex : sync_kind::mutex, sizeof(state));
    state_ = reinterpret_cast<state*>(p);
    robust_mutex_init(state_->mutex, constructor_name(memory_->type()).c_str());
  } else {
    const sync_kind kind = memory_->kind_at(offset);
    if (kind != sync_kind::mutex && kind != sync_kind::recursive_mutex) {
      throw error(std::string(memory_->type()) + "::load: the handle received names an mproc::" + kind_name(kind) +
                  ", not a lock");
    }
    recursive_ = kind == sync_kind::recursive_mutex;
    state_ = reinterpret_cast<state*>(memory_->open_object(offset, kind, sizeof(state)));
  }
}

std::shared_ptr<lock_core> lock_core::open(const sync_token& token, const char* type) {
  return std::make_shared<lock_core>(sync_memory::open(token.memory, type), static_cast<std::size_t>(token.offset),
                                     false, false);
}

lock_core::~lock_core() {
  // glibc chains the robust mutexes a thread holds into a list that runs through the
  // mutexes themselves, and walks it on later locks and unlocks and at thread exit. A held
  // mutex whose memory is unmapped would leave a dangling link: so this thread gives back
  // a lock it still holds when its last handle here goes (nobody here could release it
  // any more), and a lock held by another thread of this process keeps its memory mapped
  // for as long as the process lives.
  const std::uint64_t owner = state_->owner.load(std::memory_order_relaxed);
  const std::uint64_t me = this_thread_id();
  if (owner == me) {
    state_->levels = 0;
    state_->owner.store(0, std::memory_order_relaxed);
    ::pthread_mutex_unlock(&state_->mutex);
  } else if (owner != 0 && process_of(owner) == process_of(me)) {
    keep_mapped_forever(memory_);
  }
}

bool lock_core::acquire(deadline until, bool timed, const char* type, const char* call) {
  state& s = *state_;
  const std::uint64_t me = this_thread_id();
  // Trylock first, our owner word only when that fails: when another process is using the
  // lock, reading the cache line before writing it would fetch it twice.
  int r = ::pthread_mutex_trylock(&s.mutex);
  if (r == EBUSY) {
    if (s.owner.load(std::memory_order_relaxed) == me) {
      if (recursive_) {
        if (s.levels == UINT_MAX) {
          throw error(std::string(type) + "::" + call + ": this thread already holds the lock " +
                      std::to_string(UINT_MAX) + " times, the most; unlock it first");
        }
        ++s.levels;
        return true;
      }
      // Only this thread could release it: waiting would be forever (Python's Lock would
      // hang here, a std::mutex has undefined behaviour).
      if (timed) return false;
      throw error(std::string(type) + "::" + call +
                  ": this thread already holds the lock, and would wait forever for itself; use an "
                  "mproc::recursive_mutex to lock it again");
    }
    r = lock_contended(s, until, type, call);
  }
  if (r == ETIMEDOUT) return false;
  if (r == EOWNERDEAD) {
    // Its holder died holding it: the lock is ours; the data it guarded may be half
    // updated, which is what owner_deaths() tells.
    s.owner_deaths.fetch_add(1, std::memory_order_relaxed);
    robust_mutex_mark_consistent(s.mutex);
  } else if (r != 0) {
    throw_system_error({r, std::system_category()}, std::string(type) + "::" + call + ": pthread_mutex_lock");
  }
  s.owner.store(me, std::memory_order_relaxed);
  s.levels = 1;
  return true;
}

// lock() and acquire() wait as long as it takes; try_lock, its timed forms, acquire(false)
// and acquire(true, timeout) may fail: the errors name those "lock" and "try_lock".
void lock_core::lock(const char* type) { acquire(deadline::never(), false, type, "lock"); }

bool lock_core::try_lock(deadline until, const char* type) { return acquire(until, true, type, "try_lock"); }

void lock_core::unlock(const char* type) {
  state& s = *state_;
  if (s.owner.load(std::memory_order_relaxed) != this_thread_id()) {
    throw error(std::string(type) +
                "::unlock: this thread does not hold the lock; only the thread that locked it can unlock it");
  }
  if (--s.levels > 0) return;
  s.owner.store(0, std::memory_order_relaxed);
  ::pthread_mutex_unlock(&s.mutex);
}

bool lock_core::held_by_this_thread() const noexcept {
  return state_->owner.load(std::memory_order_relaxed) == this_thread_id();
}

unsigned lock_core::release_all() {
  state& s = *state_;
  // condition::wait, its only caller, has checked that this thread holds the lock.
  assert(s.owner.load(std::memory_order_relaxed) == this_thread_id());
  const unsigned levels = s.levels;
  s.levels = 0;
  s.owner.store(0, std::memory_order_relaxed);
  ::pthread_mutex_unlock(&s.mutex);
  return levels;
}

void lock_core::reacquire(unsigned levels) {
  acquire(deadline::never(), false, "mproc::condition", "wait");
  state_->levels = levels;
}

std::uint64_t lock_core::owner_deaths() const noexcept { return state_->owner_deaths.load(std::memory_order_relaxed); }

sync_token lock_core::token() const { return memory_->token(offset_); }

}  // namespace mproc::detail
