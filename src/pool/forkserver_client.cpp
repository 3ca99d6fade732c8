// The caller's side of the forkserver: starting the server (this binary re-executed),
// asking it for a child, handing the child its arguments; and, in every process of the
// program, the check before main that turns a re-executed binary into the server.
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "mproc/detail/pool/forkserver_call.hpp"
#include "mproc/detail/pool/registry.hpp"
#include "mproc/error.hpp"
#include "os/fd.hpp"
#include "os/fork_local.hpp"
#include "os/syscall.hpp"
#include "os/unix_socket.hpp"
#include "pool/forkserver_server.hpp"
#include "pool/forkserver_wire.hpp"
#include "process/child_handle.hpp"
#include "process/child_record.hpp"
#include "process/runtime.hpp"

extern char** environ;  // NOLINT(readability-redundant-declaration): unistd.h declares it only with _GNU_SOURCE

namespace mproc::detail {
namespace {

// How long a new server may take to say hello: the program's own static initialisers run
// first in it (under a sanitizer, or on a loaded machine, that can take seconds).
constexpr int hello_timeout_ms = 30'000;

[[noreturn]] void throw_start_error(const std::string& what) {
  throw error("mproc::process::start (forkserver): " + what);
}

// The one server of this process, and the socket to it. Requests are serialised: the
// server is single-threaded, and a request and its reply are one round trip.
class forkserver_client final : public fork_local {
 public:
  static forkserver_client& instance() {
    static forkserver_client* const the = new forkserver_client;  // never destroyed: used at exit
    return *the;
  }

  // Asks the server for a child running `request`, whose status socket is `status` (the
  // server's end); returns its pid and its pidfd (-1 without pidfds). Throws
  // std::system_error when the server's fork fails, mproc::error when the server cannot
  // run the target or cannot be started.
  std::pair<pid_t, int> start_child(const std::vector<std::byte>& request, int status) {
    std::lock_guard lock(mutex_);
    // A server that died (killed) is replaced once: its end of the socket is closed, so
    // the request is never read and no child is started by it.
    for (int attempt = 0;; ++attempt) {
      if (!control_) start_server();
      if (auto reply = round_trip(request, status)) return *reply;
      stop_server();
      if (attempt == 1) throw_start_error("the forkserver ended before answering, twice; see its stderr");
    }
  }

  void forget_in_fork_child() noexcept override {
    // The parent's server is not ours: a child that uses the forkserver starts its own.
    // Another thread may have held the mutex at the fork: make a fresh one.
    if (control_) control_.reset();
    server_pid_ = 0;
    owner_ = ::getpid();
    new (&mutex_) std::mutex;
  }

 private:
  forkserver_client() : owner_(::getpid()) { runtime::instance().register_fork_local(this); }

  // nullopt when the server is gone (end of file or a failed send).
  std::optional<std::pair<pid_t, int>> round_trip(const std::vector<std::byte>& request, int status) {
    if (send_message(control_.get(), request.data(), request.size(), status) < 0) {
      if (errno == EPIPE || errno == ECONNRESET) return std::nullopt;
      throw_system_error(last_error(), "mproc::process::start (forkserver): sending the request");
    }
    char buffer[4096];
    int pidfd = -1;
    const ssize_t n = receive_message(control_.get(), buffer, sizeof buffer, &pidfd);
    if (n <= 0) return std::nullopt;
    unique_fd owned_pidfd(pidfd);
    forkserver_reply reply;
    if (static_cast<std::size_t>(n) < sizeof reply) throw_start_error("a malformed reply from the forkserver");
    std::memcpy(&reply, buffer, sizeof reply);
    if (reply.pid > 0) return std::pair{static_cast<pid_t>(reply.pid), owned_pidfd.release()};
    if (reply.error > 0) {
      throw_system_error({reply.error, std::system_category()}, "mproc::process::start: fork (in the forkserver)");
    }
    throw error(std::string(buffer + sizeof reply, static_cast<std::size_t>(n) - sizeof reply));
  }

  // The environment of the server: ours, with the marker that puts it in server mode.
  static std::vector<std::string> server_environment(int fd) {
    std::vector<std::string> env;
    const std::string marker = std::string(forkserver_fd_variable) + "=";
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      if (std::strncmp(*e, marker.c_str(), marker.size()) != 0) env.emplace_back(*e);
    }
    env.push_back(marker + std::to_string(fd));
    return env;
  }

  void start_server() {
    int ends[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ends) != 0) {
      throw_system_error(last_error(), "mproc::process::start (forkserver): socketpair");
    }
    unique_fd mine(ends[0]);
    unique_fd theirs(ends[1]);
    std::vector<std::string> env = server_environment(theirs.get());
    std::vector<char*> envp;
    envp.reserve(env.size() + 1);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    char name[] = "mproc-forkserver";
    char* argv[] = {name, nullptr};

    // posix_spawn (a vfork, then exec) copies no lock of this multi-threaded process. The
    // dup2 onto itself clears O_CLOEXEC on the server's end in the child only.
    posix_spawn_file_actions_t actions;
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawn_file_actions_adddup2(&actions, theirs.get(), theirs.get());
    posix_spawnattr_t attributes;
    ::posix_spawnattr_init(&attributes);
    sigset_t none;
    sigemptyset(&none);
    ::posix_spawnattr_setsigmask(&attributes, &none);
    ::posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK);
    pid_t pid = 0;
    const int err = ::posix_spawn(&pid, "/proc/self/exe", &actions, &attributes, argv, envp.data());
    ::posix_spawn_file_actions_destroy(&actions);
    ::posix_spawnattr_destroy(&attributes);
    if (err != 0) throw_system_error({err, std::system_category()}, "mproc::process::start: starting the forkserver");
    theirs.reset();

    pollfd p{mine.get(), POLLIN, 0};
    forkserver_hello hello;
    hello.magic = 0;
    if (retry_on_eintr([&] { return ::poll(&p, 1, hello_timeout_ms); }) == 1) {
      if (receive_message(mine.get(), &hello, sizeof hello, nullptr) != static_cast<ssize_t>(sizeof hello)) {
        hello.magic = 0;
      }
    }
    if (hello.magic != forkserver_hello::expected_magic || hello.pid != pid) {
      kill_and_reap(pid);
      throw_start_error("the forkserver (this program, /proc/self/exe, re-executed) did not start; see its stderr");
    }
    control_ = std::move(mine);
    server_pid_ = pid;
    if (!exit_hook_installed_) {
      // After the runtime's own (atexit runs the last registered first): the exit rule
      // must join forkserver children while the server still reports their ends.
      runtime::instance();
      std::atexit([] { instance().stop_at_exit(); });
      exit_hook_installed_ = true;
    }
  }

  // The server ends when its socket closes; it is our child: reap it.
  void stop_server() noexcept {
    control_.reset();
    if (server_pid_ > 0) {
      retry_on_eintr([&] { return ::waitpid(server_pid_, nullptr, 0); });
      server_pid_ = 0;
    }
  }

  void stop_at_exit() noexcept {
    if (owner_ != ::getpid()) return;  // a forked copy calling exit(): not its server
    runtime::instance().shutdown_children();
    std::lock_guard lock(mutex_);
    stop_server();
  }

  pid_t owner_;  // the process whose server this is (renewed in a forked child)
  std::mutex mutex_;
  unique_fd control_;
  pid_t server_pid_ = 0;
  bool exit_hook_installed_ = false;
};

// Sends the arguments to the child: a u64 length, then chunks. Never throws: a child that
// does not get them all (it ended, or this fails) reports its failure itself. Stops early
// when the status socket turns readable: the child ended before reading them.
void send_arguments(int status, std::span<const std::byte> arguments) noexcept {
  std::vector<std::byte> first(sizeof(std::uint64_t));
  const std::uint64_t length = arguments.size();
  std::memcpy(first.data(), &length, sizeof length);
  std::size_t sent = 0;
  bool header_sent = false;
  while (!header_sent || sent < arguments.size()) {
    pollfd p{status, POLLOUT | POLLIN, 0};
    if (retry_on_eintr([&] { return ::poll(&p, 1, -1); }) < 0) return;
    if ((p.revents & (POLLIN | POLLHUP | POLLERR)) != 0) return;
    const void* data = first.data();
    std::size_t size = first.size();
    if (header_sent) {
      data = arguments.data() + sent;
      size = std::min(forkserver_argument_chunk, arguments.size() - sent);
    }
    const ssize_t n = retry_on_eintr([&] { return ::send(status, data, size, MSG_DONTWAIT | MSG_NOSIGNAL); });
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return;
    }
    if (header_sent) {
      sent += size;
    } else {
      header_sent = true;
    }
  }
}

// Waits until the child has its arguments (its `ready`, consumed here) or has ended (its
// `exited`, left for the handle to read, or end of file).
void wait_until_ready(int status) noexcept {
  for (;;) {
    pollfd p{status, POLLIN, 0};
    if (retry_on_eintr([&] { return ::poll(&p, 1, -1); }) < 0) return;
    status_record record;
    const ssize_t n = retry_on_eintr([&] { return ::recv(status, &record, sizeof record, MSG_PEEK | MSG_DONTWAIT); });
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n != static_cast<ssize_t>(sizeof record) || record.kind != status_record::ready) return;
    retry_on_eintr([&] { return ::recv(status, &record, sizeof record, MSG_DONTWAIT); });
    return;
  }
}

// Before main in every process of the program: in the server (this binary re-executed by
// start_server, with the marker set) take over and never return. The check sits in this
// file, which every program that can start a server links.
const bool server_mode_checked = [] {
  const char* fd = std::getenv(forkserver_fd_variable);  // NOLINT(concurrency-mt-unsafe): before main, one thread
  if (fd != nullptr) serve_as_forkserver(fd);
  return true;
}();

}  // namespace

forkserver_call forkserver_call_of(task_invoker invoker, generic_function function) {
  const auto table = registry_table();
  forkserver_call call;
  call.invoker = table->invoker_name_at(table->invoker_index(invoker));
  if (function != nullptr) call.function = function_name(function);
  return call;
}

std::shared_ptr<child_record> start_forkserver_child(const forkserver_call& call, std::span<const std::byte> arguments,
                                                     const std::string& name, bool daemon, const process_info& parent) {
  static_cast<void>(server_mode_checked);
  forkserver_request request;
  request.invoker = call.invoker;
  request.function = call.function;
  request.name = name;
  request.daemon = daemon;
  request.parent_name = parent.name;
  request.parent_pid = parent.pid;
  request.parent_daemon = parent.daemon;
  const std::vector<std::byte> bytes = to_bytes(request);
  if (bytes.size() > forkserver_max_request) throw_start_error("the process name is too long");

  int ends[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ends) != 0) {
    throw_system_error(last_error(), "mproc::process::start (forkserver): socketpair");
  }
  unique_fd mine(ends[0]);
  unique_fd theirs(ends[1]);
  auto record = std::make_shared<child_record>(name, daemon);  // before the child: nothing throws after it
  const auto [pid, pidfd] = forkserver_client::instance().start_child(bytes, theirs.get());
  theirs.reset();
  const int status = mine.get();
  record->set_started(child_handle::reported(pid, mine.release(), pidfd));
  send_arguments(status, arguments);
  wait_until_ready(status);
  return record;
}

}  // namespace mproc::detail
