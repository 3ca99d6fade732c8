#include "os/thread_identity.hpp"

#include <pthread.h>
#include <unistd.h>

namespace mproc::detail {
namespace {

void register_fork_handler() noexcept {
  // Only the thread that called fork(2) exists in the child, and its cache holds the
  // parent's ids: a new generation makes it look again.
  static const bool registered = [] {
    ::pthread_atfork(nullptr, nullptr, [] { fork_generation.fetch_add(1, std::memory_order_relaxed); });
    return true;
  }();
  (void)registered;
}

}  // namespace

std::uint64_t refresh_thread_identity() noexcept {
  register_fork_handler();
  thread_identity_cache& c = this_thread_identity;
  // Only this thread writes its cache, and it cannot fork while it is in here.
  c.generation = fork_generation.load(std::memory_order_relaxed);
  c.id = std::uint64_t{static_cast<std::uint32_t>(::getpid())} << 32 | static_cast<std::uint32_t>(::gettid());
  return c.id;
}

}  // namespace mproc::detail
