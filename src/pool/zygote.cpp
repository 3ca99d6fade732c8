// The zygote: a single-threaded process forked by the pool before the pool's threads
// exist, which forks every worker (the first ones and each replacement), so that no
// worker is forked from the multi-threaded parent. It reports each worker's start and end
// to the parent, and takes its workers down when the parent dies, however it dies.
#include "pool/zygote.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <optional>
#include <system_error>
#include <vector>

#include "os/syscall.hpp"
#include "os/unix_socket.hpp"
#include "pool/pool_impl.hpp"
#include "pool/worker.hpp"

namespace mproc::detail {
namespace {

class zygote {
 public:
  zygote(pool_core::impl& p, int sock, pid_t parent) noexcept : p_(p), sock_(sock), parent_(parent) {
    ::signal(SIGINT, SIG_IGN);  // workers inherit it: Ctrl-C is for the parent
    // The parent's alone: workers keep only the channels' descriptors (to map them as they grow).
    p.monitor_wake.reset();
    p.control_memory->forget_descriptor();
    watch_parent();
    watch_children();
  }

  [[noreturn]] void run() noexcept {
    std::vector<pollfd> fds;
    for (;;) {
      if (quitting_ && children_.empty()) ::_exit(0);
      fds.assign({{sock_, POLLIN, 0}, {parent_fd_, POLLIN, 0}, {child_ended_.get(), POLLIN, 0}});
      for (const child& c : children_) fds.push_back({c.handle.fd(), POLLIN, 0});
      if (::poll(fds.data(), fds.size(), parent_check_ms_) < 0) continue;
      if (fds[1].revents != 0 || (parent_fd_ < 0 && ::getppid() != parent_)) reap_all_and_exit();  // the parent died
      reap_ended(fds);
      if (fds[0].revents != 0) obey_the_parent();
    }
  }

 private:
  struct child {
    std::uint32_t slot;
    child_handle handle;  // an unreaped child of the zygote: signals never hit a reused pid
  };

  // The parent's pidfd becomes readable when it dies. Without pidfd support (valgrind,
  // Linux < 5.3) getppid() changes instead (the zygote is re-parented): checked every
  // 100 ms.
  void watch_parent() noexcept {
    std::error_code ec;
    parent_fd_ = pidfd_open(parent_, ec);
    if ((parent_fd_ < 0 && ec != std::errc::function_not_supported) || ::getppid() != parent_) ::_exit(1);
    parent_check_ms_ = parent_fd_ < 0 ? 100 : -1;
  }

  // The zygote reaps its workers itself: SIGCHLD ignored (or SA_NOCLDWAIT) inherited from
  // the program would make the kernel reap them first, and their ends go unnoticed.
  // Without pidfds it hears of their ends through a SIGCHLD signalfd, not through
  // child_handle's watcher threads: it must stay single-threaded, or a worker forked while
  // a watcher thread held a lock (an allocator's, as ASan's does as the thread exits)
  // would inherit it held, and deadlock on it.
  void watch_children() noexcept {
    struct sigaction default_chld {};
    default_chld.sa_handler = SIG_DFL;
    ::sigaction(SIGCHLD, &default_chld, nullptr);
    sigemptyset(&old_mask_);
    if (pidfds_supported()) return;
    sigset_t chld_only;
    sigemptyset(&chld_only);
    sigaddset(&chld_only, SIGCHLD);
    // The zygote is single-threaded: sigprocmask is its thread's mask.
    ::sigprocmask(SIG_BLOCK, &chld_only, &old_mask_);  // NOLINT(concurrency-mt-unsafe): queued for the signalfd
    child_ended_.reset(::signalfd(-1, &chld_only, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!child_ended_) ::_exit(1);
  }

  // Reports and forgets every child that ended. `fds` is the poll set of run().
  void reap_ended(const std::vector<pollfd>& fds) noexcept {
    const bool some_child_ended = fds[2].revents != 0;
    if (some_child_ended) {
      signalfd_siginfo info;
      while (::read(child_ended_.get(), &info, sizeof info) > 0) {
      }
    }
    for (std::size_t i = 3; i < fds.size(); ++i) {
      if (fds[i].revents == 0 && !some_child_ended) continue;
      child& c = children_[i - 3];
      std::error_code ec;
      const std::optional<int> code = c.handle.try_reap(ec);
      if (!code) continue;
      const report r{report_kind::exited, c.slot, c.handle.pid(), *code};
      send_message(sock_, &r, sizeof r);
      c.handle.reset();
    }
    std::erase_if(children_, [](const child& c) { return !c.handle; });
  }

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
    ::close(parent_fd_);
    if (child_ended_) {
      child_ended_.reset();
      ::sigprocmask(SIG_SETMASK, &old_mask_, nullptr);  // NOLINT(concurrency-mt-unsafe): one thread
    }
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
  pid_t parent_;
  int parent_fd_ = -1;
  int parent_check_ms_ = -1;
  unique_fd child_ended_;  // the SIGCHLD signalfd, without pidfds
  sigset_t old_mask_;
  std::vector<child> children_;
  bool quitting_ = false;
};

}  // namespace

[[noreturn]] void zygote_main(pool_core::impl& p, int sock, pid_t parent) noexcept { zygote(p, sock, parent).run(); }

}  // namespace mproc::detail
