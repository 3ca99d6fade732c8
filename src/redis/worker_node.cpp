#include "redis/worker_node.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>
#include <string_view>
#include <thread>
#include <utility>

#include "mproc/error.hpp"
#include "os/quiet_thread.hpp"

namespace mproc::detail {
namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

std::atomic<int> stop_signals{0};  // SIGTERM and SIGINT received while serving

extern "C" void on_stop_signal(int) { stop_signals.fetch_add(1, std::memory_order_relaxed); }

// SIGTERM and SIGINT count in stop_signals while serving; the old handlers come back after.
class stop_signal_scope {
 public:
  stop_signal_scope() {
    stop_signals = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;  // a blocking read goes on; the loop looks at the count within read_block
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGTERM, &sa, &old_term_);
    ::sigaction(SIGINT, &sa, &old_int_);
  }
  ~stop_signal_scope() {
    ::sigaction(SIGTERM, &old_term_, nullptr);
    ::sigaction(SIGINT, &old_int_, nullptr);
  }
  stop_signal_scope(const stop_signal_scope&) = delete;
  stop_signal_scope& operator=(const stop_signal_scope&) = delete;

 private:
  struct sigaction old_term_ {};
  struct sigaction old_int_ {};
};

long long number_or(std::string_view text, long long fallback) {
  long long value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  return ec == std::errc{} && end == text.data() + text.size() && value >= 0 ? value : fallback;
}

unsigned automatic_processes(unsigned processes) {
  if (processes != 0) return processes;
  const long online = ::sysconf(_SC_NPROCESSORS_ONLN);
  return online > 0 ? static_cast<unsigned>(online) : 1;
}

}  // namespace

// What a task entry carries (see client_core.hpp), as read: views into the reply.
struct worker_node::task_fields {
  std::string_view client;
  std::string_view task;
  long long time_limit_ms = 0;
  long long claim_idle_ms = 5000;
  long long max_retries = 3;
  bool has_client = false;
  bool has_task = false;

  explicit task_fields(const redisReply* fields) {
    if (fields->type != REDIS_REPLY_ARRAY) return;
    for (std::size_t f = 0; f + 1 < fields->elements; f += 2) {
      const std::string_view key = text_of(fields->element[f]);
      const std::string_view value = text_of(fields->element[f + 1]);
      if (key == "c") {
        client = value;
        has_client = !value.empty() && value.size() <= 200 && value.find_first_of(" \r\n") == std::string_view::npos;
      } else if (key == "t") {
        task = value;
        has_task = value.size() >= sizeof(remote_task_header);
      } else if (key == "l") {
        time_limit_ms = number_or(value, 0);
      } else if (key == "i") {
        claim_idle_ms = number_or(value, claim_idle_ms);
      } else if (key == "r") {
        max_retries = number_or(value, max_retries);
      }
    }
  }
};

worker_node::worker_node(const redis_worker_settings& settings)
    : settings_(settings),
      url_(redis_url::parse(settings.url)),
      table_(registry_table()),
      names_(settings.name, table_->hash()),
      listing_{names_.hash, automatic_processes(settings.processes), this_host(), static_cast<long>(::getpid())},
      prefetch_(settings.prefetch != 0 ? settings.prefetch : 128 * listing_.processes + 128),
      // The pool first, so that its zygote forks before this process has other threads.
      local_(std::make_shared<pool_core>(pool_config{listing_.processes, {}, 0, 0ms})),
      runner_(*local_, *table_),
      read_link_(url_, read_block + 10s),
      write_link_(url_) {
  std::random_device random;
  char nonce[20];
  std::snprintf(nonce, sizeof nonce, "%08x", static_cast<unsigned>(random()));
  consumer_ = listing_.host + ":" + std::to_string(listing_.pid) + ":" + nonce;
  ensure_group();
}

worker_node::~worker_node() {
  try {
    local_->terminate();
    local_->join();
  } catch (...) {
  }
}

void worker_node::ensure_group() {
  const auto made = read_link_.command({"XGROUP", "CREATE", names_.tasks(), redis_names::group, "0", "MKSTREAM"});
  if (is_error(made.get()) && !text_of(made.get()).starts_with("BUSYGROUP"))
    throw error("mproc::redis::serve: cannot make the task stream's group on " + url_.printable() + ": " +
                std::string(text_of(made.get())));
}

void worker_node::run() {
  const stop_signal_scope signals;
  std::thread writer = start_quiet_thread([this] { write_loop(); });
  auto next_recovery = clock_type::now();
  while (stop_signals.load() == 0) {
    try {
      if (clock_type::now() >= next_recovery) {
        recover();
        next_recovery = clock_type::now() + recover_period;
      }
      read_tasks();
    } catch (const connection_lost& lost) {
      if (!reconnect(read_link_, lost)) break;
    } catch (const std::exception& e) {  // an error reply: said, and tried again, as systemd would
      std::fprintf(stderr, "mproc::redis::serve: %s\n", e.what());
      std::this_thread::sleep_for(read_block);
    }
  }
  // Stopping: what is held finishes and is answered, unless a second signal comes.
  {
    std::unique_lock lock(mutex_);
    while (!held_.empty() && !writer_done_ && stop_signals.load() < 2) room_.wait_for(lock, 100ms);
    writer_stop_ = true;
    outbox_ready_.notify_one();
  }
  if (stop_signals.load() >= 2) local_->terminate();
  writer.join();
  try {
    read_link_.command({"ZREM", names_.workers(), listing_.member()});
  } catch (...) {
  }
}

void worker_node::read_tasks() {
  std::size_t room = 0;
  {
    std::unique_lock lock(mutex_);
    if (!has_room()) {
      room_.wait_for(lock, read_block, [&] { return has_room(); });
      return;
    }
    room = prefetch_ - held_.size();
  }
  const auto r =
      read_link_.command({"XREADGROUP", "GROUP", redis_names::group, consumer_, "COUNT", std::to_string(room), "BLOCK",
                          std::to_string(read_block.count()), "STREAMS", names_.tasks(), ">"});
  if (is_error(r.get())) {
    if (text_of(r.get()).starts_with("NOGROUP")) {  // Redis restarted without its data
      ensure_group();
      return;
    }
    throw error("mproc::redis::serve: reading tasks: " + std::string(text_of(r.get())));
  }
  if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) return;
  const redisReply* stream = r->element[0];
  if (stream->type != REDIS_REPLY_ARRAY || stream->elements != 2) return;
  const redisReply* entries = stream->element[1];
  for (std::size_t k = 0; k < entries->elements; ++k) take(entries->element[k], 1);
}

void worker_node::recover() {
  const auto pending = read_link_.command(
      {"XPENDING", names_.tasks(), redis_names::group, "IDLE", std::to_string(recover_period.count()), "-", "+", "64"});
  if (pending->type != REDIS_REPLY_ARRAY) return;
  for (std::size_t k = 0; k < pending->elements; ++k) {
    const redisReply* p = pending->element[k];
    if (p->type != REDIS_REPLY_ARRAY || p->elements != 4) continue;
    const std::string id(text_of(p->element[0]));
    if (text_of(p->element[1]) == consumer_) {
      // Ours and held: renewed meanwhile. Ours and not held: an XREADGROUP whose reply
      // was lost with the connection (Redis delivered it, then died), to run like any other.
      std::lock_guard lock(mutex_);
      if (held_.contains(id)) continue;
    }
    const std::int64_t idle = integer_of(p->element[2]);
    const std::int64_t delivered = integer_of(p->element[3]);
    const auto found = read_link_.command({"XRANGE", names_.tasks(), id, id});
    if (found->type != REDIS_REPLY_ARRAY || found->elements == 0) {
      // Pending but gone from the stream: nothing to run; let it leave the group's list.
      read_link_.command({"XACK", names_.tasks(), redis_names::group, id});
      continue;
    }
    const task_fields fields(found->element[0]->element[1]);
    if (idle < fields.claim_idle_ms) continue;
    // Atomic among workers: only one claim succeeds while the entry stays this idle.
    const auto claimed = read_link_.command(
        {"XCLAIM", names_.tasks(), redis_names::group, consumer_, std::to_string(fields.claim_idle_ms), id});
    if (claimed->type != REDIS_REPLY_ARRAY || claimed->elements == 0) continue;
    const redisReply* entry = claimed->element[0];
    if (entry->type != REDIS_REPLY_ARRAY) continue;
    take(entry, delivered + 1);
  }
}

void worker_node::take(const redisReply* entry, long long deliveries) {
  if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2) return;
  std::string id(text_of(entry->element[0]));
  const task_fields fields(entry->element[1]);
  {
    std::lock_guard lock(mutex_);
    held_.insert(id);
  }
  if (!fields.has_client || !fields.has_task) {
    std::string client = fields.has_client ? std::string(fields.client) : std::string();
    std::vector<std::byte> reply;
    if (!client.empty() && fields.task.size() >= sizeof(std::uint64_t)) {
      std::uint64_t task_id = 0;
      std::memcpy(&task_id, fields.task.data(), sizeof task_id);
      reply = remote_failure_reply(task_id, std::make_exception_ptr(serialization_error(
                                                "mproc::redis::serve: the task's entry on the stream is malformed")));
    } else {
      std::fprintf(stderr, "mproc::redis::serve: skipped stream entry %s: not an mproc task\n", id.c_str());
      client.clear();
    }
    finish({std::move(id), std::move(client), std::move(reply)});
    return;
  }
  std::string client(fields.client);
  if (!client_alive(client)) {  // its client is gone: nobody waits for the outcome
    finish({std::move(id), {}, {}});
    return;
  }
  std::vector<std::byte> message(reinterpret_cast<const std::byte*>(fields.task.data()),
                                 reinterpret_cast<const std::byte*>(fields.task.data()) + fields.task.size());
  if (deliveries > fields.max_retries) {
    remote_task_header h{};
    std::memcpy(&h, message.data(), sizeof h);
    finish({std::move(id), std::move(client),
            remote_failure_reply(
                h.id, std::make_exception_ptr(worker_lost(
                          "mproc::redis: the task was delivered " + std::to_string(deliveries - 1) +
                          " times and each time the worker holding it died (its process or machine) before it "
                          "finished; max_retries is " +
                          std::to_string(fields.max_retries))))});
    return;
  }
  runner_.run(
      std::span(message),
      [this, id, client](std::vector<std::byte> reply) mutable {
        finish({std::move(id), std::move(client), std::move(reply)});
      },
      std::chrono::milliseconds(fields.time_limit_ms));
}

bool worker_node::client_alive(const std::string& client) {
  const auto now = clock_type::now();
  if (auto it = clients_seen_.find(client); it != clients_seen_.end() && now - it->second < client_check_ttl)
    return true;
  const auto r = read_link_.command({"EXISTS", names_.client(client)});
  if (integer_of(r.get()) != 1) {
    clients_seen_.erase(client);
    return false;
  }
  if (clients_seen_.size() > 4096) clients_seen_.clear();
  clients_seen_[client] = now;
  return true;
}

void worker_node::finish(outcome o) {
  std::lock_guard lock(mutex_);
  outbox_.push_back(std::move(o));
  outbox_ready_.notify_one();
}

void worker_node::write_loop() noexcept {
  write_outcomes();
  std::lock_guard lock(mutex_);
  writer_done_ = true;
  room_.notify_all();
}

void worker_node::write_outcomes() noexcept {
  auto next_renewal = clock_type::now();
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      outbox_ready_.wait_until(lock, next_renewal, [&] { return !outbox_.empty() || writer_stop_; });
      if (writer_stop_ && (outbox_.empty() || stop_signals.load() >= 2)) return;
    }
    try {
      send_outcomes();
      if (clock_type::now() >= next_renewal) {
        renew();
        next_renewal = clock_type::now() + renew_period;
      }
    } catch (const connection_lost& lost) {
      if (!reconnect(write_link_, lost)) return;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mproc::redis::serve: %s\n", e.what());
      std::this_thread::sleep_for(renew_period);
    }
  }
}

void worker_node::send_outcomes() {
  std::vector<outcome> batch;
  {
    std::lock_guard lock(mutex_);
    while (!outbox_.empty() && batch.size() < 256) {
      batch.push_back(std::move(outbox_.front()));
      outbox_.pop_front();
    }
  }
  if (batch.empty()) return;
  // One transaction for the batch: each client's results in one entry of its reply
  // stream, then every task acknowledged and deleted.
  std::map<std::string_view, std::vector<std::string_view>> replies;  // client → XADD's arguments
  const std::string tasks = names_.tasks();
  std::vector<std::string_view> ack{"XACK", tasks, redis_names::group};
  std::vector<std::string_view> del{"XDEL", tasks};
  std::vector<std::string> streams;
  streams.reserve(batch.size());
  for (const outcome& o : batch) {
    ack.emplace_back(o.entry);
    del.emplace_back(o.entry);
    if (o.client.empty()) continue;
    auto& xadd = replies[o.client];
    if (xadd.empty()) {
      streams.push_back(names_.replies(o.client));
      xadd = {"XADD", streams.back(), "*"};
    }
    xadd.insert(xadd.end(), {"r", bytes_view(o.reply)});
  }
  const std::string ttl = std::to_string(reply_ttl.count());
  try {
    std::size_t sent = 0;
    write_link_.append({"MULTI"});
    for (const auto& [client, xadd] : replies) {
      write_link_.append(xadd);
      write_link_.append({"PEXPIRE", xadd[1], ttl});
      sent += 2;
    }
    write_link_.append(ack);
    write_link_.append(del);
    write_link_.append({"EXEC"});
    sent += 4;
    for (std::size_t k = 0; k < sent; ++k) write_link_.reply();
  } catch (const connection_lost&) {
    std::lock_guard lock(mutex_);  // sent again once Redis is back
    for (auto it = batch.rbegin(); it != batch.rend(); ++it) outbox_.push_front(std::move(*it));
    throw;
  }
  std::lock_guard lock(mutex_);
  for (const outcome& o : batch) held_.erase(o.entry);
  room_.notify_all();
}

void worker_node::renew() {
  std::vector<std::string> held;
  {
    std::lock_guard lock(mutex_);
    held.assign(held_.begin(), held_.end());
  }
  const auto time = write_link_.command({"TIME"});
  if (const std::int64_t now_ms = time_ms_of(time.get()); now_ms >= 0) {
    write_link_.append({"ZADD", names_.workers(), std::to_string(now_ms + listing_ttl.count()), listing_.member()});
    write_link_.append({"ZREMRANGEBYSCORE", names_.workers(), "-inf", std::to_string(now_ms)});
    write_link_.reply();
    write_link_.reply();
  }
  if (held.empty()) return;
  // Idle time back to zero without counting a delivery: a live worker's tasks stay its own.
  const std::string tasks = names_.tasks();
  std::vector<std::string_view> claim{"XCLAIM", tasks, redis_names::group, consumer_, "0"};
  for (const std::string& id : held) claim.emplace_back(id);
  claim.emplace_back("JUSTID");
  write_link_.command(claim);
}

bool worker_node::reconnect(redis_connection& link, const connection_lost& why) {
  {
    std::lock_guard lock(mutex_);
    if (!warned_) std::fprintf(stderr, "mproc::redis::serve: %s; retrying until it is back\n", why.what());
    warned_ = true;
  }
  auto pause = 50ms;
  std::optional<clock_type::time_point> stopping_since;
  while (stop_signals.load() < 2) {
    // Stopping with Redis gone: a few seconds more, then the tasks held are left to the
    // other workers (claimed after claim_idle), rather than a stop that never ends.
    if (stop_signals.load() != 0) {
      if (!stopping_since) stopping_since = clock_type::now();
      if (clock_type::now() - *stopping_since > stop_patience) return false;
    }
    std::this_thread::sleep_for(pause);
    try {
      link.reconnect();
      std::lock_guard lock(mutex_);
      if (warned_) std::fprintf(stderr, "mproc::redis::serve: connected to %s again\n", url_.printable().c_str());
      warned_ = false;
      return true;
    } catch (const connection_lost&) {
      pause = std::min(pause * 2, std::chrono::milliseconds(2000));
    }
  }
  return false;
}

void serve_redis(const redis_worker_settings& settings) { worker_node(settings).run(); }

}  // namespace mproc::detail
