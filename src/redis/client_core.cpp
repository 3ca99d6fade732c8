#include "redis/client_core.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string_view>

#include "mproc/error.hpp"
#include "pool/remote_runner.hpp"

namespace mproc::detail {
namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

// Unique among the server's clients: host, pid and 64 random bits (a pid is reused).
std::string make_client_id() {
  std::random_device random;
  const std::uint64_t nonce = (std::uint64_t{random()} << 32) ^ random();
  char text[32];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(nonce));
  return this_host() + ":" + std::to_string(::getpid()) + ":" + text;
}

std::exception_ptr cancelled(const char* how) {
  return std::make_exception_ptr(cancelled_error(
      std::string("mproc::async_result::get: the task was cancelled before it was sent to Redis (") + how + ")"));
}

}  // namespace

client_core::client_core(const redis_client_settings& settings)
    : settings_(settings),
      url_(redis_url::parse(settings.url)),
      table_(registry_table()),
      names_(settings.name, table_->hash()),
      id_(make_client_id()),
      liveness_ttl_(std::max<std::chrono::milliseconds>(settings.no_worker_timeout + 2s, 5s)) {
  if (settings.claim_idle < 1s)
    throw error("mproc::redis::pool: claim_idle must be at least 1 s (workers renew their claims every 0.5 s)");
  if (settings.max_retries == 0) throw error("mproc::redis::pool: max_retries must be at least 1 (a delivery)");
  if (settings.no_worker_timeout <= 0ms) throw error("mproc::redis::pool: no_worker_timeout must be positive");
  // Connected here, so that a wrong URL or password throws from the constructor.
  send_link_ = std::make_unique<redis_connection>(url_);
  receive_link_ = std::make_unique<redis_connection>(url_, receive_block + 10s);
  auto made = send_link_->command({"XGROUP", "CREATE", names_.tasks(), redis_names::group, "0", "MKSTREAM"});
  if (is_error(made.get()) && !text_of(made.get()).starts_with("BUSYGROUP"))
    throw error("mproc::redis::pool: cannot make the task stream's group on " + url_.printable() + ": " +
                std::string(text_of(made.get())));
  waiting_since_ = clock_type::now();
  heartbeat(*send_link_);
}

client_core::~client_core() {
  try {
    if (!joined_) {
      terminate();
      join();
    }
  } catch (...) {
  }
}

void client_core::start() {
  sender_ = std::thread([this] { send_loop(); });
  receiver_ = std::thread([this] { receive_loop(); });
}

unsigned client_core::size() const noexcept { return std::max(1U, live_processes_.load()); }

std::uint32_t client_core::function_id(task_invoker invoker, generic_function function) {
  const std::pair key{reinterpret_cast<std::uintptr_t>(invoker), reinterpret_cast<std::uintptr_t>(function)};
  {
    std::lock_guard lock(mutex_);
    if (auto it = function_ids_.find(key); it != function_ids_.end()) return it->second;
  }
  // Registered before main, unless a function pointer lacks MPROC_REMOTE (which throws).
  const std::pair indices{table_->invoker_index(invoker), table_->function_index(function)};
  std::lock_guard lock(mutex_);
  if (auto it = function_ids_.find(key); it != function_ids_.end()) return it->second;
  const auto id = static_cast<std::uint32_t>(functions_.size());
  functions_.push_back(indices);
  function_ids_.emplace(key, id);
  return id;
}

void client_core::submit(std::uint32_t function_id, std::span<std::byte> message, std::shared_ptr<task_state> state,
                         bool fed) {
  std::lock_guard lock(mutex_);
  if (function_id >= functions_.size())
    throw error("mproc::redis::pool: a task names a function id it was never given");
  const bool admitted = state_ == phase::running || (fed && state_ == phase::closed && feeds_ != 0);
  if (!admitted) {
    if (state_ == phase::broken) std::rethrow_exception(broken_);
    throw closed_error(
        state_ == phase::closed
            ? "mproc::redis::pool::apply: the pool is closed and takes no new tasks; submit before close()"
            : "mproc::redis::pool::apply: the pool was terminated and takes no new tasks");
  }
  const std::uint64_t id = next_id_++;
  state->set_task_id(id);
  const remote_task_header h{id, functions_[function_id].first, functions_[function_id].second};
  std::memcpy(message.data(), &h, sizeof h);
  if (entries_.empty()) waiting_since_ = clock_type::now();
  entries_[id] = entry{std::move(state), false};
  outbox_.push_back({id, std::vector<std::byte>(message.begin(), message.end())});
  wake_sender_.notify_one();
}

void client_core::submit(task_function_ref function, std::span<std::byte> message, std::shared_ptr<task_state> state) {
  submit(function_id(function.invoker, function.function), message, std::move(state), false);
}

void client_core::begin_feed() {
  std::lock_guard lock(mutex_);
  if (state_ == phase::broken) std::rethrow_exception(broken_);
  if (state_ != phase::running)
    throw closed_error("mproc::redis::pool::map: the pool is closed or terminated and takes no new tasks");
  ++feeds_;
}

void client_core::end_feed() noexcept {
  std::lock_guard lock(mutex_);
  --feeds_;
  changed_.notify_all();
}

bool client_core::cancel(std::uint64_t task) {
  std::shared_ptr<task_state> state;
  {
    std::lock_guard lock(mutex_);
    const auto it = entries_.find(task);
    if (it == entries_.end() || it->second.sent) return false;
    const auto queued = std::find_if(outbox_.begin(), outbox_.end(), [&](const outgoing& o) { return o.id == task; });
    if (queued == outbox_.end()) return false;  // in the sender's hands: on its way
    outbox_.erase(queued);
    state = std::move(it->second.state);
    entries_.erase(it);
    changed_.notify_all();
  }
  state->fail(cancelled("async_result::cancel"));
  return true;
}

void client_core::cancel_pending() {
  std::vector<std::shared_ptr<task_state>> dropped;
  {
    std::lock_guard lock(mutex_);
    for (const outgoing& o : outbox_) {
      if (auto it = entries_.find(o.id); it != entries_.end()) {
        dropped.push_back(std::move(it->second.state));
        entries_.erase(it);
      }
    }
    outbox_.clear();
    changed_.notify_all();
  }
  for (auto& state : dropped) state->fail(cancelled("pool::cancel_pending"));
}

bool client_core::running(std::uint64_t task) const noexcept {
  std::lock_guard lock(mutex_);
  const auto it = entries_.find(task);
  return it != entries_.end() && it->second.sent;
}

void client_core::close() {
  std::lock_guard lock(mutex_);
  if (state_ == phase::running) state_ = phase::closed;
}

void client_core::terminate() {
  std::vector<std::shared_ptr<task_state>> failed;
  {
    std::lock_guard lock(mutex_);
    if (state_ == phase::terminated || state_ == phase::broken) return;
    state_ = phase::terminated;
    fail_all_locked(failed);
    wake_sender_.notify_all();  // which drops the liveness key: workers drop what is left
  }
  fail_each(failed, std::make_exception_ptr(closed_error("mproc::redis::pool: the pool was terminated")));
}

void client_core::join() {
  {
    std::unique_lock lock(mutex_);
    if (joined_) return;
    if (state_ == phase::running)
      throw error("mproc::redis::pool::join: call close() or terminate() first, as with multiprocessing.Pool");
    changed_.wait(lock, [&] {
      return state_ == phase::terminated || state_ == phase::broken || (feeds_ == 0 && entries_.empty());
    });
    stopping_ = true;
    wake_sender_.notify_all();
  }
  if (sender_.joinable()) sender_.join();
  if (receiver_.joinable()) receiver_.join();
  callbacks_.stop();
  std::lock_guard lock(mutex_);
  joined_ = true;
}

void client_core::send_loop() noexcept {
  redis_connection& link = *send_link_;
  auto next_beat = clock_type::now() + heartbeat_period;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_sender_.wait_until(lock, next_beat, [&] { return !outbox_.empty() || stopping_; });
      if (stopping_ && outbox_.empty()) break;
      if (state_ == phase::broken) return;
    }
    try {
      while (send_batch(link)) {
      }
      if (clock_type::now() >= next_beat) {
        heartbeat(link);
        next_beat = clock_type::now() + heartbeat_period;
      }
    } catch (const connection_lost& lost) {
      if (!reconnect(link, lost)) return;
    } catch (...) {
      break_down(std::current_exception());
      return;
    }
  }
  try {  // leaving: workers drop whatever of ours is left, and our replies go
    link.command({"DEL", names_.client(id_), names_.replies(id_)});
  } catch (...) {
  }
}

bool client_core::send_batch(redis_connection& link) {
  std::vector<outgoing> batch;
  {
    std::lock_guard lock(mutex_);
    const std::size_t n = std::min<std::size_t>(outbox_.size(), send_batch_limit);
    for (std::size_t k = 0; k < n; ++k) {
      batch.push_back(std::move(outbox_.front()));
      outbox_.pop_front();
    }
  }
  if (batch.empty()) return false;
  const std::string tasks = names_.tasks();
  const std::string limit = std::to_string(settings_.task_timeout.count());
  const std::string claim_idle = std::to_string(settings_.claim_idle.count());
  const std::string retries = std::to_string(settings_.max_retries);
  std::vector<std::pair<std::uint64_t, std::string>> refused;
  try {
    for (const outgoing& o : batch)
      link.append({"XADD", tasks, "*", "c", id_, "t", bytes_view(o.bytes), "l", limit, "i", claim_idle, "r", retries});
    for (const outgoing& o : batch) {
      const auto r = link.reply();
      if (is_error(r.get())) refused.emplace_back(o.id, std::string(text_of(r.get())));
    }
  } catch (const connection_lost&) {
    // Sent again after the reconnect: some may then run twice (at least once).
    std::lock_guard lock(mutex_);
    for (auto it = batch.rbegin(); it != batch.rend(); ++it) outbox_.push_front(std::move(*it));
    throw;
  }
  std::vector<std::pair<std::shared_ptr<task_state>, std::string>> failed;
  {
    std::lock_guard lock(mutex_);
    for (const outgoing& o : batch)
      if (auto it = entries_.find(o.id); it != entries_.end()) it->second.sent = true;
    for (auto& [id, why] : refused) {
      if (auto it = entries_.find(id); it != entries_.end()) {
        failed.emplace_back(std::move(it->second.state), std::move(why));
        entries_.erase(it);
      }
    }
    if (!failed.empty()) changed_.notify_all();
  }
  for (auto& refusal : failed)
    callbacks_.post([state = std::move(refusal.first), why = std::move(refusal.second)] {
      state->fail(std::make_exception_ptr(error("mproc::redis::pool: Redis refused the task: " + why)));
    });
  return true;
}

void client_core::heartbeat(redis_connection& link) {
  bool terminated = false;
  {
    std::lock_guard lock(mutex_);
    terminated = state_ == phase::terminated;
  }
  const std::string ttl = std::to_string(liveness_ttl_.count());
  if (terminated) {
    link.append({"DEL", names_.client(id_)});
  } else {
    link.append({"SET", names_.client(id_), "1", "PX", ttl});
  }
  link.append({"PEXPIRE", names_.replies(id_), ttl});
  link.append({"TIME"});
  link.reply();
  link.reply();
  const auto time = link.reply();
  const std::int64_t now_ms = time_ms_of(time.get());
  if (now_ms < 0) return;
  const auto listed = link.command({"ZRANGEBYSCORE", names_.workers(), std::to_string(now_ms), "+inf"});
  unsigned processes = 0;
  std::vector<worker_listing> others;
  if (listed->type == REDIS_REPLY_ARRAY) {
    for (std::size_t k = 0; k < listed->elements; ++k) {
      worker_listing w;
      if (!worker_listing::parse(std::string(text_of(listed->element[k])), w)) continue;
      if (w.hash == names_.hash) {
        processes += w.processes;
      } else {
        others.push_back(std::move(w));
      }
    }
  }
  live_processes_ = processes;
  std::vector<std::shared_ptr<task_state>> failed;
  {
    std::lock_guard lock(mutex_);
    const auto now = clock_type::now();
    if (processes > 0 || entries_.empty()) {
      waiting_since_ = now;
      return;
    }
    if (now - waiting_since_ < settings_.no_worker_timeout) return;
    for (auto& [id, e] : entries_) failed.push_back(std::move(e.state));
    entries_.clear();
    outbox_.clear();
    waiting_since_ = now;
    changed_.notify_all();
  }
  fail_each(failed, std::make_exception_ptr(error(no_worker_message(others))));
}

std::string client_core::no_worker_message(const std::vector<worker_listing>& others) const {
  std::string text = "mproc::redis::pool: no live worker of this build served pool \"" + names_.name + "\" on " +
                     url_.printable() + " for no_worker_timeout (" +
                     std::to_string(settings_.no_worker_timeout.count()) +
                     " ms), so its pending tasks failed; start workers (mproc::redis::serve) built from the same "
                     "sources as this client (function table " +
                     names_.hash + ")";
  if (!others.empty()) {
    text += "; live workers of other builds:";
    for (const worker_listing& w : others)
      text += " " + w.host + " pid " + std::to_string(w.pid) + " (table " + w.hash + ")";
  }
  return text;
}

void client_core::receive_loop() noexcept {
  redis_connection& link = *receive_link_;
  const std::string replies = names_.replies(id_);
  const std::string block = std::to_string(receive_block.count());
  std::string last = "0";
  bool read_some = false;  // since the last trim
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_ || state_ == phase::broken) return;
    }
    try {
      // What was read leaves the stream (only the newest stays, as our place), in the same
      // round trip as the next read.
      if (read_some) link.append({"XTRIM", replies, "MINID", last});
      link.append({"XREAD", "COUNT", "1024", "BLOCK", block, "STREAMS", replies, last});
      if (read_some) link.reply();
      read_some = false;
      const auto r = link.reply();
      if (is_error(r.get())) throw error("mproc::redis::pool: reading the results: " + std::string(text_of(r.get())));
      if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) continue;  // nothing within the block
      const redisReply* stream = r->element[0];
      if (stream->type != REDIS_REPLY_ARRAY || stream->elements != 2) continue;
      const redisReply* entries = stream->element[1];
      std::vector<std::vector<std::byte>> batch;
      for (std::size_t k = 0; k < entries->elements; ++k) {
        const redisReply* e = entries->element[k];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2) continue;
        last = text_of(e->element[0]);
        const redisReply* fields = e->element[1];
        for (std::size_t f = 0; f + 1 < fields->elements; f += 2) {
          if (text_of(fields->element[f]) != "r") continue;
          const auto value = text_of(fields->element[f + 1]);
          const auto* bytes = reinterpret_cast<const std::byte*>(value.data());
          batch.emplace_back(bytes, bytes + value.size());
        }
      }
      if (!batch.empty()) deliver(std::move(batch));
      read_some = true;
    } catch (const connection_lost& lost) {
      if (!reconnect(link, lost)) return;
    } catch (...) {
      break_down(std::current_exception());
      return;
    }
  }
}

void client_core::deliver(std::vector<std::vector<std::byte>> replies) {
  // One hand-off to the callback thread per read, not per result: a wake costs microseconds.
  callbacks_.post([this, replies = std::move(replies)] {
    for (const auto& reply : replies) {
      remote_result_header h{};
      if (!read_remote_result(reply, h)) continue;  // not a worker's: ignored
      if (auto state = settle(h.id)) deliver_remote_reply(*state, h, reply);
      // else settled already: a second run's result (at least once), or cancelled
    }
  });
}

std::shared_ptr<task_state> client_core::settle(std::uint64_t id) {
  std::lock_guard lock(mutex_);
  const auto it = entries_.find(id);
  if (it == entries_.end()) return nullptr;
  auto state = std::move(it->second.state);
  entries_.erase(it);
  changed_.notify_all();
  return state;
}

bool client_core::reconnect(redis_connection& link, const connection_lost& why) {
  const auto give_up = clock_type::now() + settings_.no_worker_timeout;
  auto pause = 50ms;
  while (clock_type::now() < give_up) {
    {
      std::unique_lock lock(mutex_);
      if (state_ == phase::broken) return false;
      wake_sender_.wait_for(lock, pause, [&] { return stopping_; });
      if (stopping_) return false;
    }
    try {
      link.reconnect();
      return true;
    } catch (const connection_lost&) {
      pause = std::min(pause * 2, std::chrono::milliseconds(1000));
    } catch (...) {
      break_down(std::current_exception());
      return false;
    }
  }
  break_down(std::make_exception_ptr(error(std::string(why.what()) + "; not back within no_worker_timeout (" +
                                           std::to_string(settings_.no_worker_timeout.count()) +
                                           " ms), so every pending task failed")));
  return false;
}

void client_core::break_down(const std::exception_ptr& error) {
  std::vector<std::shared_ptr<task_state>> failed;
  {
    std::lock_guard lock(mutex_);
    if (state_ == phase::broken) return;
    state_ = phase::broken;
    broken_ = error;
    fail_all_locked(failed);
    wake_sender_.notify_all();
  }
  fail_each(failed, error);
}

void client_core::fail_all_locked(std::vector<std::shared_ptr<task_state>>& failed) {
  for (auto& [id, e] : entries_) failed.push_back(std::move(e.state));
  entries_.clear();
  outbox_.clear();
  changed_.notify_all();
}

void client_core::fail_each(std::vector<std::shared_ptr<task_state>>& failed, const std::exception_ptr& error) {
  for (auto& state : failed)
    if (state) state->fail(error);
}

std::shared_ptr<task_sink> make_redis_client(const redis_client_settings& settings) {
  auto core = std::make_shared<client_core>(settings);
  core->start();
  return core;
}

}  // namespace mproc::detail
