// The monitor thread: hears the zygote's reports (a worker spawned, exited, or could not
// start), settles a dead worker's claim so that its task fails alone, replaces the
// worker, and kills workers whose task ran past task_timeout.
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <system_error>

#include "mproc/detail/wait/duration.hpp"
#include "mproc/error.hpp"
#include "os/syscall.hpp"
#include "os/unix_socket.hpp"
#include "pool/pool_impl.hpp"
#include "wait/futex.hpp"

namespace mproc::detail {

void pool_core::impl::request(command_kind kind, std::uint32_t slot) {
  const command c{kind, slot};
  send_message(zygote_socket.get(), &c, sizeof c);
}

void pool_core::impl::monitor_loop() {
  for (;;) {
    pollfd fds[2] = {{zygote_socket.get(), POLLIN, 0}, {monitor_wake.get(), POLLIN, 0}};
    const int timeout_ms = enforce_timeouts();
    const int n = ::poll(fds, 2, timeout_ms);
    if (n < 0) continue;  // EINTR
    if (fds[1].revents != 0) {
      std::uint64_t count;
      [[maybe_unused]] auto r = ::read(monitor_wake.get(), &count, sizeof count);
      std::lock_guard lock(mutex);
      if (monitor_stop) return;
    }
    if (fds[0].revents != 0) {
      report r{};
      int passed = -1;
      const ssize_t got = receive_message(zygote_socket.get(), &r, sizeof r, &passed);
      if (got == static_cast<ssize_t>(sizeof r)) {
        on_report(r, passed);
      } else {
        if (passed >= 0) ::close(passed);
        if (got <= 0) {
          zygote_lost();
          return;
        }
      }
    }
  }
}

void pool_core::impl::on_report(const report& r, int passed_fd) {
  unique_fd pidfd(passed_fd);
  if (r.slot >= processes) return;
  if (r.kind == report_kind::spawned) {
    std::lock_guard lock(mutex);
    worker_info& w = workers[r.slot];
    w.pid = r.pid;
    w.pidfd = std::move(pidfd);
    if (state == phase::terminated) kill_worker(w);
    return;
  }
  if (r.kind == report_kind::spawn_failed) {
    on_spawn_failed(r.slot, r.exitcode);
    return;
  }
  on_worker_exit(r);
}

// A worker ended: its task (if it had taken one) fails alone, and it is replaced unless
// it retired after close() or the pool was terminated.
void pool_core::impl::on_worker_exit(const report& r) {
  {
    std::lock_guard lock(mutex);
    if (workers[r.slot].pid != r.pid) return;
  }
  const bool took_sentinel = settle_dead_worker(r.slot, r.exitcode);
  bool respawn;
  {
    std::lock_guard lock(mutex);
    worker_info& w = workers[r.slot];
    // A worker killed once its take of a sentinel committed was retiring anyway.
    const bool retires = took_sentinel && state == phase::closed;
    w.pid = 0;
    w.pidfd.reset();
    if (retires) {
      ++retired;
      in_flight_changed.notify_all();
    }
    respawn = !retires && state != phase::terminated;
  }
  if (respawn) request(command_kind::spawn, r.slot);
}

// Settles the claim of slot `slot`'s dead worker, which ended with `exitcode`: the task
// whose take it committed fails (timeout_error when the parent condemned it, else
// worker_lost). Returns whether the claim was on a sentinel. Call it without `mutex`: it
// waits for a worker taking a task, if one is.
bool pool_core::impl::settle_dead_worker(std::uint32_t slot, std::int32_t exitcode) {
  const std::uint64_t claim = claims->settle_dead(slot);
  const std::uint64_t task = claim & ~task_claims::condemned;
  if (task == retire_claim) return true;
  if (task != 0) put_result({task, claim == task ? result_kind::lost : result_kind::timed_out, exitcode});
  return false;
}

// The zygote could not start a worker for `slot` (fork or pidfd_open failed with `err`:
// RLIMIT_NPROC, no memory, no descriptor). While the pool runs it retries (the zygote
// paused before reporting); after close() the slot counts as retired, so join() ends. With
// no worker alive, the queued tasks could only wait: they fail now with the error, and
// the tasks submitted later are served again once a worker can start.
void pool_core::impl::on_spawn_failed(std::uint32_t slot, int err) {
  {
    std::lock_guard lock(mutex);
    if (workers[slot].pid != 0) return;
  }
  // A worker forked but not watchable was killed and reaped by the zygote at once; it may
  // have taken a task already. (A sentinel claim changes nothing: the slot retires below
  // after close().)
  (void)settle_dead_worker(slot, -SIGKILL);
  bool respawn;
  bool none_alive;
  {
    std::lock_guard lock(mutex);
    respawn = state == phase::running;
    if (state == phase::closed) {
      ++retired;
      in_flight_changed.notify_all();
    }
    none_alive = std::none_of(workers.begin(), workers.end(), [](const worker_info& w) { return w.pid != 0; });
  }
  if (none_alive) {
    fail_queued_tasks(std::make_exception_ptr(std::system_error(
        err, std::system_category(),
        "mproc::async_result::get: no worker process could be started to run the task; the pool retries, "
        "so raise the limit that stopped fork (RLIMIT_NPROC, memory, descriptors)")));
  }
  if (respawn) request(command_kind::spawn, slot);
}

// Takes every task still queued out of the task channel: their states, no longer pending
// (close()'s sentinels go back in).
std::vector<std::shared_ptr<task_state>> pool_core::impl::take_queued_tasks() {
  std::vector<std::uint64_t> ids;
  unsigned sentinels = 0;
  const auto take = [&](std::span<const std::byte> bytes) {
    claims->void_abandoned();  // a dead worker's claim on this task is void
    const auto h = read_header<task_header>(bytes);
    if (!h) return;
    if (h->is_sentinel()) {
      ++sentinels;
    } else {
      ids.push_back(h->task);
      if ((h->flags & task_header::on_board) != 0) board->forget(h->task);
    }
  };
  while (tasks->get(take, 64, deadline::no_wait()) != 0) {
  }
  for (unsigned k = 0; k < sentinels; ++k) put_sentinel();
  std::vector<std::shared_ptr<task_state>> taken;
  std::lock_guard lock(mutex);
  for (const std::uint64_t id : ids) {
    if (auto task = pending_locked().take(id)) taken.push_back(std::move(task));
  }
  return taken;
}

// Fails every task still queued with `error`, on the result thread.
void pool_core::impl::fail_queued_tasks(std::exception_ptr error) { fail_all(take_queued_tasks(), std::move(error)); }

void pool_core::impl::put_sentinel() {
  const task_header h{0, 0, task_header::sentinel};
  tasks->put_one(std::as_bytes(std::span(&h, 1)), deadline::never());
}

// Kills workers whose task ran past its time limit (its own, else task_timeout); returns
// ms until the next deadline.
int pool_core::impl::enforce_timeouts() {
  std::lock_guard lock(mutex);
  // Saturated, and compared with the time a task has run (never with start + limit), so
  // that a timeout of months or milliseconds::max() neither overflows nor kills at once.
  const std::int64_t pool_limit = config.task_timeout.count() > 0 ? to_nanoseconds(config.task_timeout).count() : 0;
  const std::int64_t shortest_own = shortest_task_limit_ns.load(std::memory_order_relaxed);
  if (pool_limit == 0 && shortest_own == 0) return -1;
  const std::int64_t now = monotonic_ns();
  std::int64_t next = std::max(pool_limit, shortest_own);
  if (shortest_own != 0) next = std::min(next, shortest_own);
  for (unsigned k = 0; k < processes; ++k) {
    const std::uint64_t task = claims->task(k);
    if (task == 0 || task == retire_claim || (task & task_claims::condemned) != 0) continue;
    const std::int64_t started = claims->started_ns(k);
    if (claims->task(k) != task) continue;
    const task_state* task_state_of = pending_locked().find(task);
    const std::int64_t own = task_state_of ? task_state_of->time_limit().count() : 0;
    const std::int64_t limit = own > 0 ? own : pool_limit;
    if (limit == 0) continue;
    worker_info& w = workers[k];
    const std::int64_t left = limit - (now - started);
    if (left <= 0) {
      // Only while the worker still holds this very task: one that just finished it
      // must not be killed in its next task.
      if (w.pid != 0 && claims->condemn(k, task)) kill_worker(w);
    } else {
      next = std::min(next, left);
    }
  }
  return static_cast<int>(std::min<std::int64_t>(next / 1'000'000 + 1, INT_MAX));  // poll(2)'s timeout
}

// The zygote died (killed by someone): no worker can be replaced any more.
void pool_core::impl::zygote_lost() {
  std::vector<std::shared_ptr<task_state>> failed;
  {
    std::lock_guard submit_lock(submit_mutex);  // first, as everywhere
    std::lock_guard lock(mutex);
    if (state != phase::terminated) state = phase::terminated;
    pending_locked().take_all([&](std::shared_ptr<task_state> s) { failed.push_back(std::move(s)); });
    for (auto& w : workers) kill_worker(w);
  }
  fail_all(std::move(failed),
           "mproc::async_result::get: the pool's zygote process was killed, so the pool cannot run tasks any "
           "more; make a new pool");
}

void pool_core::impl::wake_monitor() {
  const std::uint64_t one = 1;
  [[maybe_unused]] auto r = ::write(monitor_wake.get(), &one, sizeof one);
}

// Stops both threads and reaps the zygote. Idempotent.
void pool_core::impl::shut_down_threads() {
  {
    std::lock_guard lock(mutex);
    if (shut_down) return;
    shut_down = true;
    monitor_stop = true;
  }
  wake_monitor();
  if (monitor_thread.joinable()) monitor_thread.join();
  {
    std::lock_guard lock(mutex);
    result_stop = true;
  }
  result_thread_cv.notify_one();
  results->wake_consumers();
  if (result_thread.joinable()) result_thread.join();
  result_thread_gone.store(true);
  std::lock_guard read_lock(reader);
  run_posted();  // what was posted after the result thread's last look
  // The zygote ends once its socket closes (it kills what is left of its workers).
  zygote_socket.reset();
  std::error_code ec;
  (void)zygote.reap(ec);
}

// SIGKILL to worker `w` (mutex held), if it runs: through the pidfd the zygote passed.
// Without pidfd support there is none, and the pid is used: the zygote may have reaped
// the worker, and the kernel reused its pid, just before its report of the exit reached
// the monitor thread (a window of one socket message), which is accepted on systems
// without pidfds (see child_handle.hpp).
void pool_core::impl::kill_worker(const worker_info& w) {
  if (w.pid != 0) (void)send_signal(w.pid, w.pidfd.get(), SIGKILL);
}

}  // namespace mproc::detail
