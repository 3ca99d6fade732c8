// mproc::redis — the pool and a queue on Redis (>= 6; Debian redis-server, client
// libhiredis-dev), for fleets where workers come and go: Celery's and RQ's job, with
// mproc's API. Target mproc::redis.
//
// Contract:
// - redis::serve(worker_options) is a worker's main: it takes tasks of pool `name` from
//   Redis and runs them in a local mproc::pool of `processes` workers, until SIGTERM or
//   SIGINT (then the tasks it holds finish and are answered; a second signal leaves them
//   to other workers). Start any number, on any machines, at any time.
// - redis::pool(pool_options) is the client, with mproc::pool's API: apply, apply_async,
//   map, map_async, starmap, starmap_async, imap, imap_unordered, cancel_pending, close,
//   terminate, join; async_result with callbacks, exceptions by type, wait/as_completed.
//   Differences: a task sent to Redis counts as started (cancel() is false for it, running()
//   true); terminate() cannot stop a task a worker runs, only drop the unstarted ones;
//   worker_lost keeps its message, not its exitcode().
// - Functions cross by name (the registry): a lambda without captures or a function object
//   registers itself; a function pointer needs MPROC_REMOTE(f). Clients and workers meet
//   only when built from the same sources: the function table's hash is part of every key,
//   so a mismatched worker never sees the tasks; a client whose tasks no live worker of its
//   build serves for no_worker_timeout fails them with mproc::error naming the builds that
//   are live. Arguments holding a queue, lock, pipe or shared value fail to compile.
// - At least once: a task whose worker (its process or machine) died is taken over by
//   another worker after claim_idle and run again; after max_retries deliveries it fails
//   with worker_lost. A task that crashes its worker process under a live serve() fails at
//   once with worker_lost, as in mproc::pool. task_timeout kills a task's worker process
//   and fails it with timeout_error.
// - A client that dies leaves no work behind: workers drop its unstarted tasks once its
//   liveness key (TTL no_worker_timeout + 2 s) is gone, and its reply stream expires.
// - Redis lost: the client retries for no_worker_timeout, then fails every pending task
//   with mproc::error (never a hang); a worker retries until Redis is back. Durability is
//   Redis's own: with `appendonly yes` and `appendfsync always` a Redis killed and
//   restarted loses no task.
// - Trust: whoever can write to the Redis server can make workers run any registered
//   function of their build with arguments of its choice. Keep Redis on a private network
//   or a unix socket, with a password (redis://user:password@host) — never open to the
//   world.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mproc/detail/ipc/queue_calls.hpp"
#include "mproc/detail/pool/remote_pool_api.hpp"
#include "mproc/detail/redis/redis_backend.hpp"
#include "mproc/detail/wait/deadline.hpp"
#include "mproc/detail/wait/duration.hpp"
#include "mproc/error.hpp"
#include "mproc/pool.hpp"
#include "mproc/serialize.hpp"

namespace mproc::redis {

struct pool_options {
  std::string url = "redis://127.0.0.1:6379";  // or unix:///path/redis.sock; redis://user:password@host:port/db
  std::string name = "mproc";                  // clients and workers of one name share its task stream
  unsigned max_retries = 3;                    // deliveries of a task before it fails with worker_lost
  std::chrono::milliseconds claim_idle{5000};  // a task unacknowledged this long is taken over by another worker
  std::chrono::milliseconds task_timeout{0};   // 0: none
  std::chrono::milliseconds no_worker_timeout{10000};  // no live worker with this table hash: mproc::error
};

class pool : public detail::remote_pool_api<pool> {
 public:
  // Connects (mproc::error for a bad URL, an unreachable server or refused credentials).
  explicit pool(pool_options options = {})
      : pool_(detail::pool_over{detail::make_redis_client(
            detail::redis_client_settings{std::move(options.url), std::move(options.name), options.max_retries,
                                          options.claim_idle, options.task_timeout, options.no_worker_timeout})}) {}
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;

  // Worker processes of live workers of this build, as last seen (at least 1).
  unsigned size() const noexcept { return pool_.size(); }
  // apply, apply_async, map, map_async, starmap, starmap_async, imap, imap_unordered,
  // cancel_pending, close, terminate, join: remote_pool_api.

 private:
  friend class detail::remote_pool_api<pool>;
  mproc::pool& target(const char*) { return pool_; }

  mproc::pool pool_;
};

struct worker_options {
  std::string url = "redis://127.0.0.1:6379";
  std::string name = "mproc";
  unsigned processes = 0;  // of the local pool; 0: cpu_count()
  unsigned prefetch = 0;   // tasks held at once; 0: 128 per process, plus 128 (short tasks);
                           // for long ones, `processes`: what a worker holds, no other runs
};

// A worker's main: takes tasks until SIGTERM or SIGINT, in a local pool. mproc::error for
// a bad URL, an unreachable server or refused credentials at start.
inline void serve(worker_options options = {}) {
  detail::serve_redis(detail::redis_worker_settings{std::move(options.url), std::move(options.name), options.processes,
                                                    options.prefetch});
}

// Python's remote-manager queue: a named FIFO in Redis, shared by every process on every
// machine that names it, bounded (maxsize > 0) or not. Values travel serialised. A handle
// is copyable and may be used after fork (each process connects on its own). A value
// taken by a get() whose process then dies is gone, as with Python's queues.
template <class T>
class queue : public detail::queue_calls<queue<T>, T> {
 public:
  static constexpr const char* api_name = "mproc::redis::queue";
  queue(std::string url, std::string name, std::size_t maxsize = 0)
      : list_(std::make_shared<detail::redis_list>(url, name, maxsize)) {}

  std::size_t qsize() const { return list_->size(); }
  std::size_t maxsize() const noexcept { return list_->maxsize(); }

 private:
  friend detail::queue_calls<queue, T>;  // put, get and the rest, over put_until and get_until

  bool put_until(const T& value, detail::deadline until) {
    std::vector<std::byte> bytes;
    detail::encode_message(value, bytes);
    return list_->push(bytes, until);
  }
  std::optional<T> get_until(detail::deadline until) {
    auto bytes = list_->pop(until);
    if (!bytes) return std::nullopt;
    return detail::decode_message<T>(*bytes, "mproc::redis::queue::get");
  }

  std::shared_ptr<detail::redis_list> list_;
};

}  // namespace mproc::redis
