// The forkserver: this binary re-executed, taken over before main, single-threaded. It
// forks one child per request, reaps it and reports its end on the child's status socket,
// and ends when its parent (the client) dies or closes the control socket. Its ideas are
// the zygote's (zygote.cpp): no thread, pidfds or a SIGCHLD signalfd for the children's
// ends, a pidfd (or getppid) for the parent's death.
#include "pool/forkserver_server.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "mproc/detail/pool/forkserver_call.hpp"
#include "mproc/detail/pool/registry.hpp"
#include "mproc/error.hpp"
#include "os/fd.hpp"
#include "os/syscall.hpp"
#include "os/unix_socket.hpp"
#include "pool/forkserver_wire.hpp"
#include "process/child_handle.hpp"
#include "process/child_main.hpp"
#include "process/server_watch.hpp"

namespace mproc::detail {
namespace {

// In the server's child: its status socket until it has said `ready`.
int child_status_fd = -1;

class forkserver {
 public:
  explicit forkserver(int control) noexcept : control_(control), self_(::getpid()), watch_(::getppid()) {
    // Ctrl-C reaches the whole foreground group: it is for the program, not its server.
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    ::sigaction(SIGINT, &ignore, &interrupt_);
    const forkserver_hello hello{forkserver_hello::expected_magic, self_};
    send_message(control_.get(), &hello, sizeof hello);
  }

  [[noreturn]] void run() noexcept {
    for (;;) {
      const server_watch::events seen = watch_.wait(control_.get(), children_, [](child& c, int code) {
        const status_record r{status_record::exited, code};
        retry_on_eintr([&] { return ::send(c.status.get(), &r, sizeof r, MSG_DONTWAIT | MSG_NOSIGNAL); });
        c.status.reset();
      });
      if (seen.parent_died) ::_exit(0);
      if (seen.control_ready) serve_request();
    }
  }

 private:
  struct child {
    child_handle handle;  // an unreaped child of the server
    unique_fd status;     // where its end is reported
  };

  void serve_request() noexcept {
    std::vector<std::byte> buffer(forkserver_max_request);
    int received = -1;
    const ssize_t got = receive_message(control_.get(), buffer.data(), buffer.size(), &received);
    if (got <= 0) ::_exit(0);  // the client closed the socket: the program is exiting
    unique_fd status(received);
    if (!status) return;  // malformed: no status socket, nobody to report to
    buffer.resize(static_cast<std::size_t>(got));
    forkserver_request request;
    task_invoker invoker = nullptr;
    generic_function function = nullptr;
    try {
      request = from_bytes<forkserver_request>(buffer);
      const auto table = registry_table();
      invoker = table->invoker_at(table->invoker_named(request.invoker));
      if (!request.function.empty()) function = table->function_at(table->function_named(request.function));
    } catch (const std::exception& e) {
      refuse(std::string("mproc::process::start (forkserver): the server cannot run this target: ") + e.what() +
             " (a target registered by a static initialiser that runs after mproc's, or in a library loaded "
             "later, is unknown to the server)");
      return;
    }
    const pid_t pid = ::fork();
    if (pid == 0) become_child(request, std::move(status), invoker, function);
    if (pid < 0) {
      const forkserver_reply reply{0, errno};
      send_message(control_.get(), &reply, sizeof reply);
      return;
    }
    std::error_code ec;
    child_handle handle = child_handle::open(pid, ec, without_pidfd::pid_only);
    if (!handle) {
      kill_and_reap(pid);
      const forkserver_reply reply{0, ec.value()};
      send_message(control_.get(), &reply, sizeof reply);
      return;
    }
    const forkserver_reply reply{pid, 0};
    send_message(control_.get(), &reply, sizeof reply, handle.pidfd());
    children_.push_back({std::move(handle), std::move(status)});
  }

  void refuse(const std::string& why) noexcept {
    std::string message(sizeof(forkserver_reply), '\0');
    const forkserver_reply reply{0, -1};
    std::memcpy(message.data(), &reply, sizeof reply);
    message += why.substr(0, 3000);
    send_message(control_.get(), message.data(), message.size());
  }

  [[noreturn]] void become_child(const forkserver_request& request, unique_fd status, task_invoker invoker,
                                 generic_function function) noexcept {
    control_.reset();
    watch_.forget_in_child();
    for (child& c : children_) {
      c.handle.reset();
      c.status.reset();
    }
    ::sigaction(SIGINT, &interrupt_, nullptr);
    if (request.daemon) {
      // Dies with the server, which dies with the caller. If the server died before
      // prctl took effect, no signal will come: die the same way by hand.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != self_) ::kill(::getpid(), SIGKILL);
    }
    child_status_fd = status.release();
    const process_info parent{request.parent_name, static_cast<pid_t>(request.parent_pid), request.parent_daemon};
    run_child_main(request.name, request.daemon, parent, [&] {
      const std::vector<std::byte> arguments = receive_arguments();
      std::vector<std::byte> unused;
      invoker(function, arguments, unused);
    });
  }

  // The caller's u64 length, then chunks, on the status socket.
  static std::vector<std::byte> receive_arguments() {
    std::uint64_t length = 0;
    const auto lost = [] {
      throw error(
          "mproc::process (forkserver): the child did not receive its arguments: the process that started it ended "
          "first");
    };
    if (retry_on_eintr([&] { return ::recv(child_status_fd, &length, sizeof length, 0); }) !=
        static_cast<ssize_t>(sizeof length)) {
      lost();
    }
    std::vector<std::byte> arguments(length);
    std::size_t got = 0;
    while (got < length) {
      const ssize_t n =
          retry_on_eintr([&] { return ::recv(child_status_fd, arguments.data() + got, length - got, 0); });
      if (n <= 0) lost();
      got += static_cast<std::size_t>(n);
    }
    return arguments;
  }

  unique_fd control_;
  pid_t self_;
  server_watch watch_;
  struct sigaction interrupt_ {};  // SIGINT as the program had it, for the children
  std::vector<child> children_;
};

}  // namespace

void forkserver_arguments_received() noexcept {
  if (child_status_fd < 0) return;
  const status_record ready{status_record::ready, 0};
  retry_on_eintr([&] { return ::send(child_status_fd, &ready, sizeof ready, MSG_NOSIGNAL); });
  ::close(child_status_fd);
  child_status_fd = -1;
}

[[noreturn]] void serve_as_forkserver(const char* fd_text) noexcept {
  char* end = nullptr;
  const long fd = std::strtol(fd_text, &end, 10);
  ::unsetenv(forkserver_fd_variable);  // NOLINT(concurrency-mt-unsafe): before main; children must not serve
  if (end == fd_text || *end != '\0' || fd < 0 || fd > 1'000'000) ::_exit(1);
  ::fcntl(static_cast<int>(fd), F_SETFD, FD_CLOEXEC);
  forkserver(static_cast<int>(fd)).run();
}

}  // namespace mproc::detail
