// One connection to Redis: hiredis's blocking context, owned, with its replies owned too.
// Commands go as argument vectors (binary-safe, never formatted), singly or pipelined.
//
// A connection that fails (refused, reset, a read timed out, or a Redis still loading its
// data after a restart) throws connection_lost and is dead from then on; reconnect()
// makes a new one. Redis's error replies come back as
// replies (is_error), for the caller to judge: "BUSYGROUP" is no error to a group's maker.
#pragma once

#include <hiredis/hiredis.h>

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mproc/error.hpp"
#include "redis/redis_url.hpp"

namespace mproc::detail {

// The server cannot be reached, or the connection broke.
class connection_lost : public error {
 public:
  using error::error;
};

struct reply_deleter {
  void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

inline bool is_error(const redisReply* r) noexcept { return r->type == REDIS_REPLY_ERROR; }
inline std::string_view text_of(const redisReply* r) noexcept { return {r->str, r->len}; }
// An integer reply's value, or a string one's as a number; -1 for anything else.
std::int64_t integer_of(const redisReply* r) noexcept;
// A TIME reply as milliseconds since the epoch (the server's clock, the same for every
// client and worker); -1 for another reply.
std::int64_t time_ms_of(const redisReply* r) noexcept;
// Bytes as a command argument.
inline std::string_view bytes_view(const std::vector<std::byte>& bytes) noexcept {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}
// This machine's name, for ids and messages.
std::string this_host();

class redis_connection {
 public:
  // Connects, then AUTH and SELECT as the URL says. A failure throws connection_lost (for
  // a refused or unreachable server) or mproc::error (a refused AUTH), naming the URL.
  explicit redis_connection(redis_url url, std::chrono::milliseconds io_timeout = std::chrono::seconds(10));
  redis_connection(const redis_connection&) = delete;
  redis_connection& operator=(const redis_connection&) = delete;

  // One command and its reply. connection_lost when the connection fails.
  reply_ptr command(const std::vector<std::string_view>& args);
  reply_ptr command(std::initializer_list<std::string_view> args) { return command(std::vector(args)); }
  // The same, and mproc::error (saying what `what` was doing) for an error reply.
  reply_ptr checked(const char* what, const std::vector<std::string_view>& args);
  reply_ptr checked(const char* what, std::initializer_list<std::string_view> args) {
    return checked(what, std::vector(args));
  }

  // Pipelining: append commands, then read their replies in order.
  void append(const std::vector<std::string_view>& args);
  reply_ptr reply();

  // The read timeout: a blocking command's own wait plus this must stay below it.
  void set_io_timeout(std::chrono::milliseconds timeout);
  // A new connection to the same server, after a failure.
  void reconnect();
  bool broken() const noexcept { return !context_ || context_->err != 0; }
  const redis_url& url() const noexcept { return url_; }

 private:
  struct context_deleter {
    void operator()(redisContext* c) const noexcept { redisFree(c); }
  };
  [[noreturn]] void lost(const char* doing);
  void connect();

  redis_url url_;
  std::chrono::milliseconds io_timeout_;
  std::unique_ptr<redisContext, context_deleter> context_;
};

}  // namespace mproc::detail
