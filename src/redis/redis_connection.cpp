#include "redis/redis_connection.hpp"

#include <hiredis/sds.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <utility>

namespace mproc::detail {
namespace {

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

// hiredis writes with write(2): to a server that died, that raises SIGPIPE, whose default
// kills the process. While one lives, the calling thread has SIGPIPE blocked, and a SIGPIPE
// raised meanwhile is taken off the thread's pending set (as curl does): the failed write
// shows as an error, and the program's own SIGPIPE handling is left as it was.
class sigpipe_suppressed {
 public:
  sigpipe_suppressed() noexcept {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~sigpipe_suppressed() {
    sigset_t pending;
    sigpending(&pending);
    if (!was_pending_ && sigismember(&pending, SIGPIPE) == 1) {
      const timespec none{0, 0};
      while (sigtimedwait(&pipe_, nullptr, &none) == -1 && errno == EINTR) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  sigpipe_suppressed(const sigpipe_suppressed&) = delete;
  sigpipe_suppressed& operator=(const sigpipe_suppressed&) = delete;

 private:
  sigset_t pipe_{};
  sigset_t old_{};
  bool was_pending_ = false;
};

}  // namespace

std::int64_t integer_of(const redisReply* r) noexcept {
  if (r->type == REDIS_REPLY_INTEGER) return r->integer;
  if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS) return -1;
  std::int64_t value = -1;
  const auto [end, ec] = std::from_chars(r->str, r->str + r->len, value);
  return ec == std::errc{} && end == r->str + r->len ? value : -1;
}

std::int64_t time_ms_of(const redisReply* r) noexcept {
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) return -1;
  return integer_of(r->element[0]) * 1000 + integer_of(r->element[1]) / 1000;
}

std::string this_host() {
  char host[64] = {};
  if (::gethostname(host, sizeof host - 1) != 0) return "host";
  return host;
}

redis_connection::redis_connection(redis_url url, std::chrono::milliseconds io_timeout)
    : url_(std::move(url)), io_timeout_(io_timeout) {
  connect();
}

void redis_connection::connect() {
  context_.reset();
  const timeval tv = to_timeval(std::min(io_timeout_, std::chrono::milliseconds(5000)));
  redisContext* c = url_.socket_path.empty() ? redisConnectWithTimeout(url_.host.c_str(), url_.port, tv)
                                             : redisConnectUnixWithTimeout(url_.socket_path.c_str(), tv);
  if (c == nullptr) throw connection_lost("mproc::redis: cannot connect to " + url_.printable() + ": out of memory");
  context_.reset(c);
  if (c->err != 0) throw connection_lost("mproc::redis: cannot connect to " + url_.printable() + ": " + c->errstr);
  redisSetTimeout(c, to_timeval(io_timeout_));
  if (url_.socket_path.empty()) redisEnableKeepAlive(c);
  if (!url_.password.empty()) {
    std::vector<std::string_view> auth{"AUTH"};
    if (!url_.user.empty()) auth.emplace_back(url_.user);
    auth.emplace_back(url_.password);
    const auto r = command(auth);
    if (is_error(r.get()))
      throw error("mproc::redis: " + url_.printable() +
                  " refused the URL's credentials: " + std::string(text_of(r.get())));
  }
  if (url_.db != 0) checked("SELECT", {"SELECT", std::to_string(url_.db)});
}

void redis_connection::lost(const char* doing) {
  std::string why = context_ && context_->err != 0 ? context_->errstr : "connection closed";
  throw connection_lost("mproc::redis: lost the connection to " + url_.printable() + " (" + doing + "): " + why);
}

void redis_connection::append(const std::vector<std::string_view>& args) {
  if (broken()) lost("sending");
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  argv.reserve(args.size());
  lengths.reserve(args.size());
  for (std::string_view a : args) {
    argv.push_back(a.data());
    lengths.push_back(a.size());
  }
  if (redisAppendCommandArgv(context_.get(), static_cast<int>(argv.size()), argv.data(), lengths.data()) != REDIS_OK)
    lost("sending");
}

reply_ptr redis_connection::reply() {
  if (broken()) lost("reading");
  void* r = nullptr;
  int status = REDIS_OK;
  if (sdslen(context_->obuf) != 0) {  // the commands appended go out first
    const sigpipe_suppressed quiet;
    status = redisGetReply(context_.get(), &r);
  } else {
    status = redisGetReply(context_.get(), &r);
  }
  if (status != REDIS_OK || r == nullptr) lost("reading a reply");
  reply_ptr reply(static_cast<redisReply*>(r));
  // A Redis restarting answers LOADING until its data is back: as good as not there yet.
  // The connection goes (a pipeline's other replies are unread), for the caller's reconnect.
  if (is_error(reply.get()) && text_of(reply.get()).starts_with("LOADING")) {
    context_.reset();
    throw connection_lost("mproc::redis: " + url_.printable() + " is loading its data after a restart");
  }
  return reply;
}

reply_ptr redis_connection::command(const std::vector<std::string_view>& args) {
  append(args);
  return reply();
}

reply_ptr redis_connection::checked(const char* what, const std::vector<std::string_view>& args) {
  auto r = command(args);
  if (is_error(r.get()))
    throw error(std::string("mproc::redis: ") + what + " on " + url_.printable() + ": " +
                std::string(text_of(r.get())));
  return r;
}

void redis_connection::set_io_timeout(std::chrono::milliseconds timeout) {
  io_timeout_ = timeout;
  if (context_) redisSetTimeout(context_.get(), to_timeval(timeout));
}

void redis_connection::reconnect() { connect(); }

}  // namespace mproc::detail
