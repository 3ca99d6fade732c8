// Threads that mproc starts for itself (the pool's result and monitor threads, the reaper,
// the pid fallback's watchers) must not take the program's signals: SIGINT and SIGTERM go
// to the program's own handlers, on the program's own threads.
#pragma once

#include <signal.h>

#include <thread>
#include <utility>

namespace mproc::detail {

// While it lives, the calling thread blocks every signal; a thread started meanwhile
// inherits that mask for good.
class all_signals_blocked {
 public:
  all_signals_blocked() noexcept {
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old_);
  }
  ~all_signals_blocked() { ::pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  all_signals_blocked(const all_signals_blocked&) = delete;
  all_signals_blocked& operator=(const all_signals_blocked&) = delete;

 private:
  sigset_t old_;
};

template <class Body>
std::thread start_quiet_thread(Body body) {
  const all_signals_blocked quiet;
  return std::thread(std::move(body));
}

}  // namespace mproc::detail
