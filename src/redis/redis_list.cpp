// mproc::redis::queue's bytes: a Redis list under mproc:queue:<name>. A put is one RPUSH,
// or for a bounded queue one script that pushes only below maxsize (atomic on the server);
// a get is LPOP, or BLPOP to wait. A full queue is polled (from 1 to 20 ms apart): Redis
// has no blocking "push when there is room".
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <thread>

#include "mproc/detail/redis/redis_backend.hpp"
#include "redis/redis_connection.hpp"

namespace mproc::detail {
namespace {

using namespace std::chrono_literals;

constexpr const char* bounded_push =
    "if redis.call('LLEN', KEYS[1]) < tonumber(ARGV[2]) then return redis.call('RPUSH', KEYS[1], ARGV[1]) end "
    "return -1";

}  // namespace

struct redis_list::impl {
  redis_url url;
  std::string key;
  std::mutex mutex;  // one command at a time on the connection
  pid_t owner = 0;   // the process the connection belongs to
  std::unique_ptr<redis_connection> link;

  // The connection, made again in a forked child (a socket shared with the parent would
  // interleave both processes' commands) and after a failure.
  redis_connection& connection() {
    if (!link || owner != ::getpid() || link->broken()) {
      if (owner != ::getpid()) (void)link.release();  // the parent's: leave it to the parent
      link = std::make_unique<redis_connection>(url);
      owner = ::getpid();
    }
    return *link;
  }
};

redis_list::redis_list(const std::string& url, const std::string& name, std::size_t maxsize)
    : name_(name), maxsize_(maxsize), impl_(std::make_unique<impl>()) {
  if (name.empty() || name.size() > 200)
    throw error("mproc::redis::queue: the name must be 1 to 200 characters (it is part of a Redis key)");
  impl_->url = redis_url::parse(url);
  impl_->key = "mproc:queue:" + name;
  std::lock_guard lock(impl_->mutex);
  impl_->connection();  // a wrong URL or password throws here
}

redis_list::~redis_list() {
  if (impl_->owner != ::getpid()) (void)impl_->link.release();
}

bool redis_list::push(std::span<const std::byte> bytes, deadline until) {
  const std::string_view value(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  auto pause = 1ms;
  std::lock_guard lock(impl_->mutex);
  for (;;) {
    redis_connection& link = impl_->connection();
    if (maxsize_ == 0) {
      link.checked("mproc::redis::queue::put", {"RPUSH", impl_->key, value});
      return true;
    }
    const auto r = link.checked("mproc::redis::queue::put",
                                {"EVAL", bounded_push, "1", impl_->key, value, std::to_string(maxsize_)});
    if (integer_of(r.get()) >= 0) return true;
    if (until.passed()) return false;
    std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(pause, until.left()));
    pause = std::min(pause * 2, std::chrono::milliseconds(20));
  }
}

std::optional<std::vector<std::byte>> redis_list::pop(deadline until) {
  std::lock_guard lock(impl_->mutex);
  for (;;) {
    redis_connection& link = impl_->connection();
    reply_ptr r;
    const auto left = until.left();
    if (until.passed()) {
      r = link.checked("mproc::redis::queue::get", {"LPOP", impl_->key});
    } else {
      // In slices of at most a second, so that a dead server shows within the io timeout.
      const auto slice = std::min<std::chrono::nanoseconds>(left, 1s);
      const double seconds = std::max(0.001, std::chrono::duration<double>(slice).count());
      r = link.checked("mproc::redis::queue::get", {"BLPOP", impl_->key, std::to_string(seconds)});
      if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        const auto v = text_of(r->element[1]);
        const auto* b = reinterpret_cast<const std::byte*>(v.data());
        return std::vector<std::byte>(b, b + v.size());
      }
      if (!until.passed()) continue;
      return std::nullopt;
    }
    if (r->type != REDIS_REPLY_STRING) return std::nullopt;
    const auto v = text_of(r.get());
    const auto* b = reinterpret_cast<const std::byte*>(v.data());
    return std::vector<std::byte>(b, b + v.size());
  }
}

std::size_t redis_list::size() {
  std::lock_guard lock(impl_->mutex);
  const auto r = impl_->connection().checked("mproc::redis::queue::qsize", {"LLEN", impl_->key});
  return static_cast<std::size_t>(std::max<std::int64_t>(0, integer_of(r.get())));
}

}  // namespace mproc::detail
