// A Redis worker (mproc::redis::serve): takes tasks from the pool name's stream through
// its consumer group and runs them in this machine's mproc pool.
//
// Design:
// - The main thread reads (XREADGROUP, up to `prefetch` tasks held at once) and every
//   second takes over tasks of dead workers: an entry pending on another consumer for
//   longer than the client's claim_idle is claimed (XCLAIM, atomic among workers) and run
//   again, unless that delivery would pass the client's max_retries, when it fails with
//   worker_lost. So a worker or machine that dies loses no task: at least once.
// - The writer thread sends each outcome as one transaction (MULTI: XADD to the client's
//   reply stream, its expiry, XACK, XDEL: acknowledged entries leave the stream), and every
//   0.5 s renews the worker's listing and the idle time of every task it holds (XCLAIM
//   JUSTID), so that a long task is not taken over while its worker lives.
// - A task whose client's liveness key is gone is dropped unstarted; a malformed entry is
//   acknowledged, answered with serialization_error when it names a client, and skipped.
// - Redis lost: both threads retry until it is back (its streams survive under AOF), the
//   outcomes wait in memory meanwhile; once stopping, for stop_patience only.
// - SIGTERM or SIGINT: no more reads; the held tasks finish and their outcomes are sent;
//   a second signal abandons them to other workers (claimed after claim_idle).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "mproc/detail/pool/pool_core.hpp"
#include "mproc/detail/redis/redis_backend.hpp"
#include "pool/remote_runner.hpp"
#include "redis/redis_connection.hpp"
#include "redis/redis_names.hpp"

namespace mproc::detail {

class worker_node {
 public:
  explicit worker_node(const redis_worker_settings& settings);
  ~worker_node();
  worker_node(const worker_node&) = delete;
  worker_node& operator=(const worker_node&) = delete;

  // Until SIGTERM or SIGINT.
  void run();

 private:
  static constexpr std::chrono::milliseconds read_block{200};
  static constexpr std::chrono::milliseconds renew_period{500};
  static constexpr std::chrono::milliseconds recover_period{1000};
  static constexpr std::chrono::milliseconds listing_ttl{3000};
  static constexpr std::chrono::milliseconds reply_ttl{60000};
  static constexpr std::chrono::milliseconds client_check_ttl{1000};  // how long a live client is believed
  static constexpr std::chrono::milliseconds stop_patience{5000};     // stopping, for Redis to come back

  struct outcome {
    std::string entry;   // the task's stream id, to acknowledge
    std::string client;  // empty: acknowledge only (dropped or unanswerable)
    std::vector<std::byte> reply;
  };
  struct task_fields;

  void read_tasks();
  void recover();
  void take(const redisReply* entry, long long deliveries);
  bool client_alive(const std::string& client);
  void finish(outcome o);
  void write_loop() noexcept;  // write_outcomes, then writer_done_
  void write_outcomes() noexcept;
  void send_outcomes();
  void renew();
  void ensure_group();
  // After connection_lost: reconnects `link`, retrying until it works or the worker stops.
  bool reconnect(redis_connection& link, const connection_lost& why);

  redis_worker_settings settings_;
  redis_url url_;
  std::shared_ptr<const function_table> table_;
  redis_names names_;
  std::string consumer_;  // this worker's name in the group
  worker_listing listing_;
  unsigned prefetch_;

  std::shared_ptr<pool_core> local_;
  remote_runner runner_;
  redis_connection read_link_;
  redis_connection write_link_;
  std::map<std::string, std::chrono::steady_clock::time_point> clients_seen_;

  std::mutex mutex_;
  // Apart, so that an outcome wakes only the writer, and a batch sent only the reader.
  std::condition_variable outbox_ready_;  // an outcome to send, or stop
  std::condition_variable room_;          // held tasks answered, or the writer ended
  std::deque<outcome> outbox_;
  std::set<std::string> held_;  // read and not yet acknowledged
  // Whether the reader may take more: tasks stay held until Redis has their outcomes.
  bool has_room() const noexcept { return held_.size() < prefetch_; }
  bool writer_stop_ = false;
  bool writer_done_ = false;  // the writer ended: nothing held will be answered any more
  bool warned_ = false;       // about a lost connection, once until it is back
};

}  // namespace mproc::detail
