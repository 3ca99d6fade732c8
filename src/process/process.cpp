#include "mproc/process.hpp"

#include <cxxabi.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <exception>
#include <string>
#include <typeinfo>

#include "mproc/detail/os/type_name.hpp"
#include "os/syscall.hpp"
#include "process/child_main.hpp"
#include "process/child_record.hpp"
#include "process/runtime.hpp"

namespace mproc {
namespace {

std::string next_default_name() {
  return "process-" + std::to_string(detail::runtime::instance().next_process_number());
}

// Python prints the traceback of an exception escaping run(); mproc prints one line.
void report_uncaught(const std::string& process_name) noexcept {
  try {
    std::string line = "process " + process_name + " (pid " + std::to_string(detail::current_pid()) + "): ";
    try {
      throw;
    } catch (const std::exception& e) {
      line += detail::demangled_name(typeid(e)) + ": " + e.what();
    } catch (...) {
      const std::type_info* type = abi::__cxa_current_exception_type();
      line += (type != nullptr ? detail::demangled_name(*type) : std::string("unknown")) +
              ": (not derived from std::exception)";
    }
    line += '\n';
    detail::flush_std_streams();
    // One write(2), so that lines of processes sharing stderr do not interleave.
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, line.data(), line.size());
  } catch (...) {
  }
}

}  // namespace

namespace detail {

void run_child_main(const std::string& name, bool daemon, const process_info& parent,
                    function_ref<void()> body) noexcept {
  runtime& rt = runtime::instance();
  try {
    rt.become_child(name, daemon, parent);
  } catch (...) {
  }
  int code = 0;
  try {
    body();
  } catch (...) {
    report_uncaught(name);
    code = 1;
  }
  rt.shutdown_children();
  flush_std_streams();
  // _exit, not exit: the parent's atexit handlers and static destructors belong to it.
  ::_exit(code);
}

}  // namespace detail

struct process::impl {
  std::unique_ptr<detail::target_base> target;
  std::unique_ptr<detail::child_starter> starter;  // a forkserver child's; null for a fork of the caller
  std::string name = next_default_name();
  bool daemon = false;
  std::shared_ptr<detail::child_record> child;  // null before start()

  // The child of a started process, checked to belong to the calling process. `call`: the
  // member called ("join").
  detail::child_record& own_child(const char* call) const {
    if (!child) {
      throw error(std::string("mproc::process::") + call + ": process " + name +
                  " was never started; call start() first");
    }
    if (child->owner() != detail::current_pid()) {
      throw error(std::string("mproc::process::") + call + ": process " + name + " was started by process " +
                  std::to_string(child->owner()) + ", and only that process can call " + call + "()");
    }
    return *child;
  }
};

process::process() : process(std::unique_ptr<detail::target_base>{}) {}

process::process(std::unique_ptr<detail::target_base> target) : impl_(std::make_unique<impl>()) {
  impl_->target = std::move(target);
}

process::process(std::unique_ptr<detail::child_starter> starter) : impl_(std::make_unique<impl>()) {
  impl_->starter = std::move(starter);
}

process::process(process&&) noexcept = default;

process& process::operator=(process&& other) noexcept {
  if (this != &other) {
    process doomed(std::move(*this));  // hands a running child to the runtime
    impl_ = std::move(other.impl_);
  }
  return *this;
}

process::~process() {
  if (!impl_ || !impl_->child || impl_->child->owner() != detail::current_pid()) return;
  detail::runtime::instance().hand_off(std::move(impl_->child));
}

process::impl& process::state() const {
  if (!impl_) throw error("mproc::process: this object was moved from; use the one it was moved to");
  return *impl_;
}

void process::start() {
  impl& s = state();
  if (s.child) {
    throw error("mproc::process::start: process " + s.name +
                " was already started, and a process starts only once; make a new mproc::process");
  }
  detail::runtime& rt = detail::runtime::instance();
  rt.active_children();  // reap what ended meanwhile, as Python's start() does
  const process_info parent = current_process();
  if (s.starter) {
    start_elsewhere(parent);
    return;
  }
  auto child = std::make_shared<detail::child_record>(s.name, s.daemon);

  detail::flush_std_streams();
  const pid_t pid = ::fork();
  if (pid < 0) detail::throw_system_error(detail::last_error(), "mproc::process::start: fork");
  if (pid == 0) run_in_child(parent);

  std::error_code ec;
  detail::child_handle handle = detail::child_handle::open(pid, ec);
  if (!handle && ec == std::errc::no_such_process) {
    // A child not yet reaped has a pidfd, zombie or not: this one has already ended and
    // been reaped by someone else (SIGCHLD ignored, SA_NOCLDWAIT, or a SIGCHLD handler that
    // reaps every child). It did start and run, so start() succeeds; its exit code is
    // lost, as for any child reaped outside mproc. No kill(2): the pid is no longer ours.
    child->set_reaped_elsewhere(pid);
    s.child = std::move(child);
    s.target.reset();
    return;
  }
  if (!handle) {
    // Without a handle the child cannot be managed: end it now rather than leak it. Its
    // pid is still ours (unreaped), so kill(2) cannot hit another process.
    detail::kill_and_reap(pid);
    detail::throw_system_error(ec, "mproc::process::start: pidfd_open");
  }
  child->set_started(std::move(handle));
  try {
    rt.track(child);
  } catch (...) {
    ::kill(pid, SIGKILL);
    child->wait(detail::deadline::never());
    throw;
  }
  s.child = std::move(child);
  // As Python does: the parent has no use for the target and its arguments any more, and
  // keeping them would keep the child's ends of pipes and queues open here.
  s.target.reset();
}

void process::start_elsewhere(const process_info& parent) {
  impl& s = *impl_;
  std::shared_ptr<detail::child_record> child = s.starter->start(s.name, s.daemon, parent);
  try {
    detail::runtime::instance().track(child);
  } catch (...) {
    (void)child->signal(SIGKILL);
    child->wait(detail::deadline::never());
    throw;
  }
  s.child = std::move(child);
  s.starter.reset();  // as start() drops the target: the child has its own copies now
}

void process::run_in_child(const process_info& parent) noexcept {
  impl& s = *impl_;
  if (s.daemon) {
    // Die with the parent. If it died before prctl took effect, no signal will come:
    // die the same way by hand.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent.pid) ::kill(::getpid(), SIGKILL);
  }
  detail::run_child_main(s.name, s.daemon, parent, [this] { run(); });
}

void process::run() {
  impl& s = state();
  if (s.target) s.target->invoke();
}

void process::join() { state().own_child("join").wait(detail::deadline::never()); }

bool process::join_for(std::chrono::nanoseconds timeout) {
  detail::child_record& child = state().own_child("join");
  return child.wait(detail::deadline::in(timeout));
}

bool process::is_alive() {
  impl& s = state();
  if (!s.child) return false;
  if (s.child->pid() == detail::current_pid()) return true;  // asked from inside the child itself
  return !s.own_child("is_alive").try_reap();
}

void process::terminate() {
  if (auto ec = state().own_child("terminate").signal(SIGTERM)) {
    detail::throw_system_error(ec, "mproc::process::terminate: sending SIGTERM");
  }
}

void process::kill() {
  if (auto ec = state().own_child("kill").signal(SIGKILL)) {
    detail::throw_system_error(ec, "mproc::process::kill: sending SIGKILL");
  }
}

std::optional<int> process::exitcode() {
  impl& s = state();
  if (!s.child || s.child->pid() == detail::current_pid()) return std::nullopt;
  return s.own_child("exitcode").exitcode();
}

std::optional<pid_t> process::pid() const {
  const impl& s = state();
  if (!s.child) return std::nullopt;
  return s.child->pid();
}

const std::string& process::name() const { return state().name; }

void process::set_name(std::string name) { state().name = std::move(name); }

bool process::daemon() const { return state().daemon; }

void process::set_daemon(bool daemon) {
  impl& s = state();
  if (s.child) {
    throw error("mproc::process::set_daemon: process " + s.name +
                " was already started; call set_daemon() before start()");
  }
  s.daemon = daemon;
}

int process::sentinel() const {
  const impl& s = state();
  const int fd = s.own_child("sentinel").sentinel();
  if (fd < 0) {
    throw error("mproc::process::sentinel: process " + s.name +
                " ended and was reaped outside mproc (SIGCHLD set to SIG_IGN, or a handler that reaps) before "
                "start() returned, so it has no sentinel");
  }
  return fd;
}

process_info current_process() { return detail::runtime::instance().current(); }

std::optional<process_info> parent_process() { return detail::runtime::instance().parent(); }

std::vector<pid_t> active_children() { return detail::runtime::instance().active_children(); }

unsigned cpu_count() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return static_cast<unsigned>(n);
  }
  const long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<unsigned>(n) : 1U;
}

}  // namespace mproc
