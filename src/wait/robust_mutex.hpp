// A process-shared robust mutex living in shared memory: when its owner dies, the next
// locker gets it, repairs what the owner left half done, and goes on.
#pragma once

#include <pthread.h>

#include "mproc/detail/wait/deadline.hpp"

namespace mproc::detail {

// The errors below begin with the public call that uses the mutex: `who` in full
// ("mproc::queue::queue"), or `type` and `call` ("mproc::queue", "put"; null when no one
// call of the type's reaches it), joined only when there is an error to report.

// Initialises `m` in place (once, by the process that creates the shared memory).
void robust_mutex_init(pthread_mutex_t& m, const char* who);

// Locks `m`, waiting at most until `until`; false if it passed. When
// the previous owner died holding it, calls `recover()` before marking it consistent.
// `recover` must not throw.
template <class Recover>
bool robust_mutex_lock(pthread_mutex_t& m, deadline until, const char* type, const char* call, Recover recover);

// The non-template part: 0 locked, 1 locked after owner death (recover, then call
// robust_mutex_mark_consistent), -1 deadline passed. Other failures throw.
int robust_mutex_lock_raw(pthread_mutex_t& m, deadline until, const char* type, const char* call);
void robust_mutex_mark_consistent(pthread_mutex_t& m);
// Never waits: 0 locked, 1 locked after owner death (as above), -1 held by someone else.
int robust_mutex_try_lock_raw(pthread_mutex_t& m, const char* type, const char* call);

template <class Recover>
bool robust_mutex_lock(pthread_mutex_t& m, deadline until, const char* type, const char* call, Recover recover) {
  const int r = robust_mutex_lock_raw(m, until, type, call);
  if (r < 0) return false;
  if (r == 1) {
    recover();
    robust_mutex_mark_consistent(m);
  }
  return true;
}

class robust_unlock_guard {
 public:
  explicit robust_unlock_guard(pthread_mutex_t& m) noexcept : m_(&m) {}
  ~robust_unlock_guard() { ::pthread_mutex_unlock(m_); }
  robust_unlock_guard(const robust_unlock_guard&) = delete;
  robust_unlock_guard& operator=(const robust_unlock_guard&) = delete;

 private:
  pthread_mutex_t* m_;
};

}  // namespace mproc::detail
