// What the Redis tests share: a real redis-server of their own (on a unix socket in a
// fresh directory, or a free TCP port), killed with SIGKILL and restarted on demand, and
// worker processes: this test binary (or its other build) re-run as `--serve`.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "redis/redis_connection.hpp"

extern char** environ;

namespace mproc_test {

// Starts `args` as a child that dies with the test (PR_SET_PDEATHSIG), so a test killed by
// its ctest TIMEOUT leaves no redis-server behind. Linux sends that signal when the thread
// that forked ends: call it from the test's own thread. The child makes only
// async-signal-safe calls before exec.
inline pid_t spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("cannot start " + args[0] + ": fork failed");
  if (pid == 0) {
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(127);
    ::execve(argv[0], argv.data(), environ);
    ::_exit(127);
  }
  return pid;
}

// SIGKILL (unless gone) and reap.
inline void kill_and_reap(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

inline int free_tcp_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

class redis_server {
 public:
  struct options {
    bool tcp = false;          // else a unix socket
    bool append_only = false;  // AOF with appendfsync always
    std::string password;      // requirepass, or with `user` that user's password
    // An ACL user that alone may log in (the default user is off), limited as the README
    // advises: keys under mproc:, no @dangerous commands.
    std::string user;
  };
  explicit redis_server(options o) : options_(std::move(o)) {
    char dir[] = "/tmp/mproc-redis-test-XXXXXX";
    if (::mkdtemp(dir) == nullptr) throw std::runtime_error("mkdtemp");
    dir_ = dir;
    if (options_.tcp) port_ = free_tcp_port();
    start();
  }
  redis_server() : redis_server(options{}) {}
  ~redis_server() {
    kill_now();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;

  std::string url(const std::string& credentials = "") const {
    const std::string who = credentials.empty() ? "" : credentials + "@";
    if (options_.tcp) return "redis://" + who + "127.0.0.1:" + std::to_string(port_);
    return "unix://" + who + dir_ + "/redis.sock";
  }
  // The server's URL with its password.
  std::string client_url() const {
    return url(options_.password.empty() && options_.user.empty() ? "" : options_.user + ":" + options_.password);
  }

  void start() {
    std::vector<std::string> args{MPROC_TEST_REDIS_SERVER, "--dir", dir_,         "--save",  "",
                                  "--daemonize",           "no",    "--loglevel", "warning", "--logfile",
                                  dir_ + "/redis.log"};
    if (options_.tcp) {
      args.insert(args.end(), {"--port", std::to_string(port_), "--bind", "127.0.0.1"});
    } else {
      args.insert(args.end(), {"--port", "0", "--unixsocket", dir_ + "/redis.sock", "--unixsocketperm", "700"});
    }
    if (options_.append_only) args.insert(args.end(), {"--appendonly", "yes", "--appendfsync", "always"});
    if (!options_.user.empty()) {
      args.insert(args.end(), {"--user", "default", "off", "--user", options_.user, "on", ">" + options_.password,
                               "~mproc:*", "&*", "+@all", "-@dangerous"});
    } else if (!options_.password.empty()) {
      args.insert(args.end(), {"--requirepass", options_.password});
    }
    pid_ = spawn(args);
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (;;) {
      try {
        auto c = connect();
        if (c->command({"PING"})->type == REDIS_REPLY_STATUS) return;
      } catch (const std::exception&) {
      }
      if (std::chrono::steady_clock::now() > give_up) {
        std::ifstream log(dir_ + "/redis.log");
        const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
        throw std::runtime_error("redis-server did not start; its log:\n" + text);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  void kill_now() {
    kill_and_reap(pid_);
    pid_ = 0;
  }
  // A connection of the test's own, for looking into Redis.
  std::unique_ptr<mproc::detail::redis_connection> connect() const {
    return std::make_unique<mproc::detail::redis_connection>(mproc::detail::redis_url::parse(client_url()),
                                                             std::chrono::seconds(5));
  }

 private:
  options options_;
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = 0;
};

// A worker: `exe --serve URL NAME PROCESSES PREFETCH`, SIGTERMed and reaped at the end.
class worker_process {
 public:
  worker_process(const std::string& url, const std::string& name, unsigned processes = 1, unsigned prefetch = 0,
                 const std::string& exe = "/proc/self/exe")
      : pid_(spawn({exe == "/proc/self/exe" ? std::filesystem::read_symlink(exe).string() : exe, "--serve", url, name,
                    std::to_string(processes), std::to_string(prefetch)})) {}
  ~worker_process() { stop(); }
  worker_process(const worker_process&) = delete;
  worker_process& operator=(const worker_process&) = delete;

  pid_t pid() const { return pid_; }
  // SIGTERM, then the exit status (SIGKILL after 30 s).
  int stop() {
    if (pid_ <= 0) return status_;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 3000; ++i) {
      if (::waitpid(pid_, &status_, WNOHANG) == pid_) {
        pid_ = 0;
        return status_;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill_and_reap(pid_);
    pid_ = 0;
    return status_;
  }
  void kill_now() {
    kill_and_reap(pid_);
    pid_ = 0;
  }
  // Whether it exited (reaped here).
  bool exited() {
    if (pid_ <= 0) return true;
    if (::waitpid(pid_, &status_, WNOHANG) == pid_) {
      pid_ = 0;
      return true;
    }
    return false;
  }

 private:
  pid_t pid_;
  int status_ = 0;
};

// The pool name of one test: fresh, so that tests never share streams.
inline std::string fresh_name() {
  static int n = 0;
  return "t" + std::to_string(::getpid()) + "-" + std::to_string(++n);
}

}  // namespace mproc_test
