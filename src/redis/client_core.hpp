// mproc::redis::pool's core: a task_sink whose tasks go on a Redis stream that any number
// of workers (redis::serve, on any machine) read through one consumer group.
//
// Design:
// - A task is one stream entry: the client's id (where the reply goes), the remote
//   runner's task bytes (src/pool/remote_runner.hpp: its function as registry indices),
//   and the client's task_timeout, claim_idle and max_retries, which the worker applies.
// - Three threads, each with its own connection where it needs one: the sender (XADD of
//   what submit() queued, pipelined; the client's heartbeat; the watch for live workers),
//   the receiver (XREAD of the client's reply stream), and the callback thread, where
//   every state completes, in arrival order, as on mproc::pool's result thread.
// - Liveness: the client keeps a key with a TTL (workers drop the unstarted tasks of a
//   client whose key is gone) and its reply stream's expiry; workers list themselves in a
//   sorted set. With tasks pending and no live worker of this build for
//   no_worker_timeout, every pending task fails with mproc::error naming what is live.
// - A lost connection is retried for no_worker_timeout (Redis restarting keeps its streams
//   under AOF); after that every pending task fails with mproc::error, never a hang. A
//   batch sent again after a reconnect may run twice: delivery is at least once, and a
//   second result for a task is dropped.
// - A task counts as started once it is on the stream: cancel() succeeds only before.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mproc/detail/pool/registry.hpp"
#include "mproc/detail/redis/redis_backend.hpp"
#include "redis/callback_thread.hpp"
#include "redis/redis_connection.hpp"
#include "redis/redis_names.hpp"

namespace mproc::detail {

class client_core final : public task_sink, public std::enable_shared_from_this<client_core> {
 public:
  explicit client_core(const redis_client_settings& settings);
  ~client_core() override;  // terminate() and join() unless joined
  client_core(const client_core&) = delete;
  client_core& operator=(const client_core&) = delete;

  void start();  // the threads; after construction, as they hold weak_from_this

  unsigned size() const noexcept override;
  std::uint32_t function_id(task_invoker invoker, generic_function function) override;
  void submit(std::uint32_t function_id, std::span<std::byte> message, std::shared_ptr<task_state> state,
              bool fed = false) override;
  void submit(task_function_ref function, std::span<std::byte> message, std::shared_ptr<task_state> state) override;
  void begin_feed() override;
  void end_feed() noexcept override;
  bool cancel(std::uint64_t task) override;
  void cancel_pending() override;
  bool running(std::uint64_t task) const noexcept override;
  void post(std::function<void()> work) override { callbacks_.post(std::move(work)); }
  void pump_results(function_ref<bool()>, std::chrono::nanoseconds) override {}
  void close() override;
  void terminate() override;
  void join() override;

 private:
  static constexpr std::chrono::milliseconds receive_block{100};  // XREAD's wait: how soon join() ends
  static constexpr std::chrono::milliseconds heartbeat_period{1000};
  static constexpr std::size_t send_batch_limit = 256;  // XADDs in one pipeline

  enum class phase { running, closed, terminated, broken };
  struct entry {
    std::shared_ptr<task_state> state;
    bool sent = false;
  };
  struct outgoing {
    std::uint64_t id;
    std::vector<std::byte> bytes;
  };

  void send_loop() noexcept;
  void receive_loop() noexcept;
  bool send_batch(redis_connection& link);  // false when there was nothing to send
  void heartbeat(redis_connection& link);
  // Retries a lost connection until no_worker_timeout has passed; false then, with every
  // pending task failed.
  bool reconnect(redis_connection& link, const connection_lost& why);
  // Replies read: their states complete on the callback thread, in order.
  void deliver(std::vector<std::vector<std::byte>> replies);
  std::shared_ptr<task_state> settle(std::uint64_t id);
  // Every pending task fails with `error`; the pool takes no more (phase::broken).
  void break_down(const std::exception_ptr& error);
  void fail_all_locked(std::vector<std::shared_ptr<task_state>>& failed);
  void fail_each(std::vector<std::shared_ptr<task_state>>& failed, const std::exception_ptr& error);
  std::string no_worker_message(const std::vector<worker_listing>& others) const;

  redis_client_settings settings_;
  redis_url url_;
  std::shared_ptr<const function_table> table_;
  redis_names names_;
  std::string id_;  // this client's, unique among all clients of the server
  std::chrono::milliseconds liveness_ttl_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;  // an entry left, a feed ended, the threads stopped
  std::condition_variable wake_sender_;
  phase state_ = phase::running;
  std::exception_ptr broken_;  // why, in phase::broken
  unsigned feeds_ = 0;
  std::uint64_t next_id_ = 1;
  std::map<std::pair<std::uintptr_t, std::uintptr_t>, std::uint32_t> function_ids_;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> functions_;  // id → table indices
  std::unordered_map<std::uint64_t, entry> entries_;
  std::deque<outgoing> outbox_;
  bool stopping_ = false;  // join: the threads end
  bool joined_ = false;
  std::chrono::steady_clock::time_point waiting_since_;  // since tasks pend and no worker was seen
  std::atomic<unsigned> live_processes_{0};

  std::unique_ptr<redis_connection> send_link_;     // the sender's
  std::unique_ptr<redis_connection> receive_link_;  // the receiver's
  callback_thread callbacks_;
  std::thread sender_;
  std::thread receiver_;
};

}  // namespace mproc::detail
