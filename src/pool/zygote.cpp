// The zygote: a single-threaded process forked by the pool before the pool's threads
// exist, which forks every worker (the first ones and each replacement), so that no
// worker is forked from the multi-threaded parent. It reports each worker's start and end
// to the parent, and takes its workers down when the parent dies, however it dies.
#include "pool/zygote.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <optional>
#include <system_error>
#include <vector>

#include "os/syscall.hpp"
#include "os/unix_socket.hpp"
#include "pool/pool_impl.hpp"
#include "pool/worker.hpp"
#include "process/server_watch.hpp"

namespace mproc::detail {
namespace {

class zygote {
 public:
  zygote(pool_core::impl& p, int sock, pid_t parent) noexcept : p_(p), sock_(sock), watch_(parent) {
    ::signal(SIGINT, SIG_IGN);  // workers inherit it: Ctrl-C is for the parent
    // The parent's alone: workers keep only the channels' descriptors (to map them as they grow).
    p.monitor_wake.reset();
    p.control_memory->forget_descriptor();
  }

  [[noreturn]] void run() noexcept {
    for (;;) {
      if (quitting_ && children_.empty()) ::_exit(0);
      const server_watch::events seen = watch_.wait(sock_, children_, [&](const child& c, int code) {
        const report r{report_kind::exited, c.slot, c.handle.pid(), code};
        send_message(sock_, &r, sizeof r);
      });
      if (seen.parent_died) reap_all_and_exit();
      if (seen.control_ready) obey_the_parent();
    }
  }

 private:
  struct child {
    std::uint32_t slot;
    child_handle handle;  // an unreaped child of the zygote: signals never hit a reused pid
  };

  void obey_the_parent() noexcept {
    command cmd{};
    const ssize_t got = receive_message(sock_, &cmd, sizeof cmd, nullptr);
    if (got <= 0) reap_all_and_exit();  // the parent closed the socket: the pool is gone
    if (got != static_cast<ssize_t>(sizeof cmd)) return;
    switch (cmd.kind) {
      case command_kind::spawn:
        if (!quitting_) spawn(cmd.slot);
        break;
      case command_kind::kill_all:
        kill_all();
        quitting_ = true;
        break;
      case command_kind::quit:
        quitting_ = true;
        break;
    }
  }

  void spawn(std::uint32_t slot) noexcept {
    const pid_t self = ::getpid();
    const pid_t pid = ::fork();
    if (pid == 0) become_worker(slot, self);
    if (pid < 0) {
      spawn_failed(slot, errno);
      return;
    }
    std::error_code ec;
    child_handle handle = child_handle::open(pid, ec, without_pidfd::pid_only);
    if (!handle) {  // a worker we could not watch would never be reported
      kill_and_reap(pid);
      spawn_failed(slot, ec.value());
      return;
    }
    const report r{report_kind::spawned, slot, pid, 0};
    send_message(sock_, &r, sizeof r, handle.pidfd());  // -1 without pidfds: no fd passed
    children_.push_back({slot, std::move(handle)});
  }

  [[noreturn]] void become_worker(std::uint32_t slot, pid_t zygote_pid) noexcept {
    ::close(sock_);
    watch_.forget_in_child();
    for (child& c : children_) c.handle.reset();
    worker_main(p_, slot, zygote_pid);
  }

  // Out of processes (RLIMIT_NPROC, memory) or descriptors: report it, after a pause, so
  // that the parent's retry does not spin.
  void spawn_failed(std::uint32_t slot, int err) noexcept {
    ::usleep(100'000);
    const report r{report_kind::spawn_failed, slot, 0, err};
    send_message(sock_, &r, sizeof r);
  }

  void kill_all() noexcept {
    for (const child& c : children_) (void)c.handle.signal(SIGKILL);
  }

  [[noreturn]] void reap_all_and_exit() noexcept {
    kill_all();
    std::error_code ec;
    for (child& c : children_) (void)c.handle.reap(ec);
    ::_exit(0);
  }

  pool_core::impl& p_;
  int sock_;
  server_watch watch_;
  std::vector<child> children_;
  bool quitting_ = false;
};

}  // namespace

[[noreturn]] void zygote_main(pool_core::impl& p, int sock, pid_t parent) noexcept { zygote(p, sock, parent).run(); }

}  // namespace mproc::detail
