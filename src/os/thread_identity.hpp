// Who "this thread" is to a lock shared between processes: its process id and its thread
// id, packed in one word that fits an atomic, cached per thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>

namespace mproc::detail {

// Bumped in the child of every fork(2) (a pthread_atfork handler), so that a forking
// thread's cached identity, copied into the child, is recomputed there.
inline std::atomic<std::uint32_t> fork_generation{1};

struct thread_identity_cache {
  std::uint32_t generation = 0;
  std::uint64_t id = 0;
};
inline thread_local thread_identity_cache this_thread_identity;

// Computes, caches and returns the identity (registers the fork handler first).
std::uint64_t refresh_thread_identity() noexcept;

// (process id << 32) | thread id of the calling thread; never 0. Thread ids are unique
// among the live threads of a pid namespace; the process id makes the owner of a lock
// readable in a debugger and keeps two processes' ids apart even if that ever fails.
// Cheap: gettid(2) and getpid(2) are real system calls (glibc caches neither), so the
// value is cached; a lock's fast path reads the cache only.
inline std::uint64_t this_thread_id() noexcept {
  const thread_identity_cache& c = this_thread_identity;
  if (c.generation == fork_generation.load(std::memory_order_relaxed)) [[likely]]
    return c.id;
  return refresh_thread_identity();
}

// The process id half of an identity.
constexpr std::uint32_t process_of(std::uint64_t id) noexcept { return static_cast<std::uint32_t>(id >> 32); }

// The calling process's id, from the cached identity: one load, right in a forked child.
inline pid_t this_process_id() noexcept { return static_cast<pid_t>(process_of(this_thread_id())); }

}  // namespace mproc::detail
