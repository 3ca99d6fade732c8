#include "process/runtime.hpp"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio_ext.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <new>
#include <thread>

#include "os/page_size.hpp"
#include "os/quiet_thread.hpp"
#include "os/syscall.hpp"
#include "process/child_record.hpp"

namespace mproc::detail {
namespace {

// How long daemon children get to end after SIGTERM before SIGKILL.
constexpr std::chrono::milliseconds daemon_grace{1000};

}  // namespace

namespace {

// Whether a stream buffer holds output not yet handed to the OS. Synchronised with stdio
// (the default), the standard streams keep no buffer of their own and this is false, so
// a fresh child need not touch their code or data pages (each first touch after fork is
// a page fault: flushing them unconditionally made start+join ~15% slower).
struct put_area_probe : std::streambuf {
  static bool pending(std::streambuf* buffer) {
    return buffer != nullptr && (buffer->*(&put_area_probe::pptr))() != (buffer->*(&put_area_probe::pbase))();
  }
};

void flush_if_pending(std::ostream& stream) {
  if (put_area_probe::pending(stream.rdbuf())) stream.flush();
}

}  // namespace

void flush_std_streams() noexcept {
  try {
    flush_if_pending(std::cout);
    flush_if_pending(std::cerr);
    flush_if_pending(std::clog);
  } catch (...) {  // a stream set to throw must not stop a fork or an exit
  }
  std::fflush(nullptr);
}

void flush_std_output() noexcept {
  try {
    flush_if_pending(std::cout);
    flush_if_pending(std::cerr);
    flush_if_pending(std::clog);
  } catch (...) {
  }
  if (__fpending(stdout) != 0) std::fflush(stdout);
  if (__fpending(stderr) != 0) std::fflush(stderr);
}

namespace {

const std::string& main_process_name() {
  static const std::string name = "MainProcess";
  return name;
}

}  // namespace

static_assert(sizeof(runtime) <= page_size, "the runtime must fit the page instance() gives it");

runtime& runtime::instance() {
  // A page of its own (see pid_); never freed.
  static runtime* const the = new (std::align_val_t(page_size)) runtime;
  return *the;
}

pid_t current_pid() noexcept { return runtime::instance().pid(); }

runtime::runtime() : pid_(::getpid()), name_(&main_process_name()) {
  // The registry's mutex is held across fork(2), so the child never inherits it locked
  // by a thread that does not exist there.
  ::pthread_atfork([] { instance().mutex_.lock(); }, [] { instance().mutex_.unlock(); },
                   [] { instance().after_fork_in_child(); });
  std::atexit([] { instance().shutdown_children(); });
}

void runtime::after_fork_in_child() noexcept {
  pid_ = ::getpid();
  // The parent's children and pools are not ours: drop their descriptors without
  // touching their mutexes (another parent thread may have held one at the fork).
  fork_locals_.for_each([](fork_local& local) { local.forget_in_fork_child(); });
  if (reaper_wake_fd_ >= 0) {
    ::close(reaper_wake_fd_);
    reaper_wake_fd_ = -1;
  }
  if (reaper_running_) reaper_running_ = false;  // threads do not survive fork
  std::vector<std::shared_ptr<child_record>> running, handed_off;
  if (!running_.empty()) running.swap(running_);
  if (!handed_off_.empty()) handed_off.swap(handed_off_);
  mutex_.unlock();
  // `running` and `handed_off` release their records here, after the unlock, because a
  // record's destructor takes mutex_.
}

void runtime::register_fork_local(fork_local* local) {
  std::lock_guard lock(mutex_);
  fork_locals_.link(local);
}

void runtime::unregister_fork_local(fork_local* local) noexcept {
  std::lock_guard lock(mutex_);
  fork_locals_.unlink(local);
}

void runtime::track(std::shared_ptr<child_record> child) {
  std::lock_guard lock(mutex_);
  running_.push_back(std::move(child));
}

void runtime::untrack(const child_record* child) noexcept {
  std::lock_guard lock(mutex_);
  auto same = [child](const std::shared_ptr<child_record>& c) { return c.get() == child; };
  std::erase_if(running_, same);
  std::erase_if(handed_off_, same);
}

void runtime::hand_off(std::shared_ptr<child_record> child) noexcept {
  try {
    if (child->try_reap()) return;
    std::lock_guard lock(mutex_);
    handed_off_.push_back(std::move(child));
    if (reaper_running_) {
      const std::uint64_t one = 1;
      [[maybe_unused]] auto n = ::write(reaper_wake_fd_, &one, sizeof one);
    } else {
      start_reaper();
    }
  } catch (...) {
    // No thread could be made: the child stays in running_, where active_children(),
    // the next start() and the exit rule still reap it.
  }
}

void runtime::start_reaper() {
  if (reaper_wake_fd_ < 0) {
    reaper_wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    // Never seen by a user: hand_off(), from ~process and process::operator=, catches it.
    if (reaper_wake_fd_ < 0) throw_system_error(last_error(), "mproc::process: eventfd");
  }
  start_quiet_thread([this] { reaper_loop(); }).detach();
  reaper_running_ = true;
}

void runtime::reaper_loop() noexcept {
  std::vector<std::shared_ptr<child_record>> watched;
  std::vector<pollfd> fds;
  for (;;) {
    int wake_fd;
    {
      std::lock_guard lock(mutex_);
      if (handed_off_.empty()) {
        reaper_running_ = false;
        return;
      }
      watched = handed_off_;
      wake_fd = reaper_wake_fd_;
    }
    fds.assign(1, pollfd{wake_fd, POLLIN, 0});
    for (const auto& c : watched) fds.push_back(pollfd{c->sentinel(), POLLIN, 0});
    if (::poll(fds.data(), fds.size(), -1) < 0) continue;  // EINTR
    if (fds[0].revents != 0) {
      std::uint64_t count;
      [[maybe_unused]] auto n = ::read(wake_fd, &count, sizeof count);
    }
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      try {
        watched[i - 1]->try_reap();
      } catch (...) {  // waitid cannot fail on our own child; never let the thread die
      }
    }
    watched.clear();
  }
}

std::vector<pid_t> runtime::active_children() {
  std::vector<std::shared_ptr<child_record>> snapshot;
  {
    std::lock_guard lock(mutex_);
    snapshot = running_;
  }
  std::vector<pid_t> alive;
  for (const auto& c : snapshot) {
    if (!c->try_reap()) alive.push_back(c->pid());
  }
  return alive;
}

void runtime::shutdown_children() noexcept {
  try {
    std::vector<std::shared_ptr<child_record>> snapshot;
    {
      std::lock_guard lock(mutex_);
      if (running_.empty()) return;
      snapshot = running_;
    }
    for (const auto& c : snapshot) {
      if (c->daemon()) (void)c->signal(SIGTERM);
    }
    const deadline grace_ends = deadline::in(daemon_grace);
    for (const auto& c : snapshot) {
      if (!c->daemon()) continue;
      if (!c->wait(grace_ends)) {
        (void)c->signal(SIGKILL);
        c->wait(deadline::never());
      }
    }
    for (const auto& c : snapshot) {
      if (!c->daemon()) c->wait(deadline::never());
    }
  } catch (...) {  // at exit there is no one left to report to
  }
}

process_info runtime::current() const { return {*name_, pid_, daemon_}; }

std::optional<process_info> runtime::parent() const {
  if (parent_ == nullptr) return std::nullopt;
  return *parent_;
}

void runtime::become_child(const std::string& name, bool daemon, const process_info& parent) {
  name_ = &name;
  daemon_ = daemon;
  parent_ = &parent;
}

}  // namespace mproc::detail
