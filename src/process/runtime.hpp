// The process runtime: the registry of every child mproc started in this process, the
// reaper that keeps them from becoming zombies, Python's exit rule, and this process's own
// identity (current_process / parent_process).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "mproc/process.hpp"
#include "os/fork_local.hpp"

namespace mproc::detail {

// Flushes C stdio and the standard C++ streams, so that fork(2) does not duplicate
// buffered output and _exit(2) does not lose it.
void flush_std_streams() noexcept;
// The same for the standard streams only, and only those holding output: cheap enough to
// call after every pool task.
void flush_std_output() noexcept;

// getpid(2) of the calling process.
pid_t current_pid() noexcept;

class child_record;

class runtime {
 public:
  // Never destroyed: children may outlive static destruction and the reaper thread may
  // still run while the program exits.
  static runtime& instance();

  // getpid(2), cached: it is asked on every call that checks who owns a child.
  pid_t pid() const noexcept { return pid_; }

  // 1, 2, 3...: the number in a new process's default name ("process-N").
  unsigned next_process_number() noexcept { return ++processes_made_; }

  // Every live fork_local (child records, pools), so that a forked child drops them.
  void register_fork_local(fork_local* local);
  void unregister_fork_local(fork_local* local) noexcept;

  // A child has started: keep it until it is reaped.
  void track(std::shared_ptr<child_record> child);
  // Its `process` object is gone while it runs: the runtime reaps it when it ends.
  void hand_off(std::shared_ptr<child_record> child) noexcept;
  // It has been reaped.
  void untrack(const child_record* child) noexcept;

  // Reaps the children that ended; returns the pids of those still running.
  std::vector<pid_t> active_children();

  // Python's exit rule: terminate the daemon children (SIGTERM, then SIGKILL after a
  // short grace), then join the others. Runs at normal exit and when a child's run() ends.
  void shutdown_children() noexcept;

  process_info current() const;
  std::optional<process_info> parent() const;
  // In the child of process::start(): take the new identity. `name` and `parent` must live
  // as long as the child (start() keeps them: the child never returns from it), so that a
  // child copies nothing.
  void become_child(const std::string& name, bool daemon, const process_info& parent);

 private:
  runtime();
  void after_fork_in_child() noexcept;
  void start_reaper();  // mutex_ held
  void reaper_loop() noexcept;

  // What start() and a forked child write sit together, and the runtime is allocated on a
  // page of its own (instance()): each page first written after a fork is a page fault.
  pid_t pid_;  // refreshed in a forked child
  std::atomic<unsigned> processes_made_{0};
  mutable std::mutex mutex_;
  fork_local_list fork_locals_;                            // guarded by mutex_
  std::vector<std::shared_ptr<child_record>> running_;     // guarded by mutex_
  std::vector<std::shared_ptr<child_record>> handed_off_;  // guarded by mutex_
  bool reaper_running_ = false;                            // guarded by mutex_
  int reaper_wake_fd_ = -1;                                // eventfd, guarded by mutex_

  const std::string* name_;  // "MainProcess", or the name in the child's process object
  bool daemon_ = false;
  const process_info* parent_ = nullptr;
};

}  // namespace mproc::detail
