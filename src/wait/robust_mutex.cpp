#include "wait/robust_mutex.hpp"

#include <cerrno>
#include <ctime>
#include <string>

#include "mproc/error.hpp"
#include "os/syscall.hpp"

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

namespace mproc::detail {
namespace {

// pthread_mutex_clocklock, announced to ThreadSanitizer by hand: GCC 12's TSan does not
// intercept it (only pthread_mutex_timedlock, which takes CLOCK_REALTIME), and would
// otherwise see the later unlock of a mutex it never saw locked. The annotations match
// what TSan's own interceptor of a timed lock records (a try lock that may fail).
int clocklock(pthread_mutex_t& m, const timespec& until) {
#if defined(__SANITIZE_THREAD__)
  __tsan_mutex_pre_lock(&m, __tsan_mutex_try_lock);
  const int r = ::pthread_mutex_clocklock(&m, CLOCK_MONOTONIC, &until);
  const bool locked = r == 0 || r == EOWNERDEAD;
  __tsan_mutex_post_lock(&m, __tsan_mutex_try_lock | (locked ? 0U : __tsan_mutex_try_lock_failed), 0);
  return r;
#else
  return ::pthread_mutex_clocklock(&m, CLOCK_MONOTONIC, &until);
#endif
}

// A locker sleeps at most this long before it tries again. An unlock wakes one sleeper;
// if that one is SIGKILLed before it takes the lock, the wake dies with it and the others
// would sleep beside a free lock until the next contended unlock, or forever (a pool
// whose monitor thread waited so could no longer replace its dead workers).
constexpr std::chrono::milliseconds recheck_interval{100};

timespec to_timespec(deadline::clock::time_point t) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  timespec ts{};
  if (ns > 0) {
    ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  }
  return ts;
}

std::string name_of(const char* type, const char* call) {
  return call != nullptr ? std::string(type) + "::" + call : std::string(type);
}

[[noreturn]] void throw_unrecoverable(const char* type, const char* call) {
  throw error(name_of(type, call) +
              ": a process died holding its lock and the repair failed: the lock is unrecoverable");
}

}  // namespace

void robust_mutex_init(pthread_mutex_t& m, const char* who) {
  pthread_mutexattr_t attr;
  ::pthread_mutexattr_init(&attr);
  ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  ::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  const int r = ::pthread_mutex_init(&m, &attr);
  ::pthread_mutexattr_destroy(&attr);
  if (r != 0) throw_system_error({r, std::system_category()}, std::string(who) + ": pthread_mutex_init");
}

int robust_mutex_lock_raw(pthread_mutex_t& m, deadline until, const char* type, const char* call) {
  int r = ::pthread_mutex_trylock(&m);
  while (r == EBUSY) {
    const auto now = deadline::clock::now();
    if (until.passed(now)) {
      r = ETIMEDOUT;
      break;
    }
    const auto slice_end = std::min(until.when(), now + recheck_interval);
    r = clocklock(m, to_timespec(slice_end));
    if (r == ETIMEDOUT) r = EBUSY;  // the slice passed: look again
  }
  switch (r) {
    case 0:
      return 0;
    case EOWNERDEAD:
      return 1;
    case ETIMEDOUT:
      return -1;
    case ENOTRECOVERABLE:
      throw_unrecoverable(type, call);
    case EDEADLK:
      throw error(name_of(type, call) + ": this thread already holds its lock");
    default:
      throw_system_error({r, std::system_category()}, name_of(type, call) + ": pthread_mutex_lock");
  }
}

void robust_mutex_mark_consistent(pthread_mutex_t& m) { ::pthread_mutex_consistent(&m); }

int robust_mutex_try_lock_raw(pthread_mutex_t& m, const char* type, const char* call) {
  const int r = ::pthread_mutex_trylock(&m);
  switch (r) {
    case 0:
      return 0;
    case EOWNERDEAD:
      return 1;
    case EBUSY:
      return -1;
    case ENOTRECOVERABLE:
      throw_unrecoverable(type, call);
    default:
      throw_system_error({r, std::system_category()}, name_of(type, call) + ": pthread_mutex_trylock");
  }
}

}  // namespace mproc::detail
