#include "mproc/detail/pool/pool_core.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <system_error>
#include <unordered_map>
#include <utility>

#include "process/child_handle.hpp"
#include "os/fd.hpp"
#include "os/fork_local.hpp"
#include "wait/futex.hpp"
#include "mproc/detail/ipc/channel.hpp"
#include "mproc/error.hpp"
#include "mproc/process.hpp"
#include "pool/pending_tasks.hpp"
#include "process/runtime.hpp"
#include "shm/shared_memory.hpp"
#include "os/syscall.hpp"
#include "pool/task_claim.hpp"

namespace mproc::detail {
namespace {

constexpr std::size_t max_functions = 4096;
constexpr int retire_exit_code = 0;    // a worker that took its sentinel after close()
constexpr int recycle_exit_code = 98;  // a worker that ran max_tasks_per_child tasks
// A worker's claim on a sentinel (task ids count up from 1 and never reach it).
constexpr std::uint64_t retire_claim = task_claims::condemned - 1;

struct function_entry {
  std::atomic<std::uintptr_t> invoker;
  std::atomic<std::uintptr_t> function;
};

// Shared with every worker; only the parent writes the function table. The workers'
// claims (task_claim.hpp) follow it in the same memory.
struct control_block {
  std::atomic<std::uint32_t> function_count;
  function_entry functions[max_functions];
};
// The workers' claims start on the page after the table, so that workers can map the
// table read-only: a worker gone rogue cannot point the others at its own code.
constexpr std::size_t table_bytes = (sizeof(control_block) + 4095) / 4096 * 4096;
static_assert(table_bytes % alignof(task_claim_slot) == 0);

std::size_t control_bytes(unsigned processes) { return table_bytes + sizeof(task_claim_slot) * processes; }

struct task_header {
  std::uint64_t task;
  std::uint32_t function;
  std::uint32_t sentinel;  // 1: no task, the worker retires (close)
};
static_assert(sizeof(task_header) == pool_core::task_header_bytes);

// wake: makes the result thread return from its read (to run posted work, to stop, or to
// step aside for a caller that reads the results itself).
enum class result_kind : std::uint32_t { ok, exception, lost, timed_out, wake };

struct result_header {
  std::uint64_t task;
  result_kind kind;
  std::int32_t exitcode;
};

// The header at the start of a frame; nullopt when the frame is too short to hold one.
template <class Header>
std::optional<Header> read_header(std::span<const std::byte> frame) {
  if (frame.size() < sizeof(Header)) return std::nullopt;
  Header h;
  std::memcpy(&h, frame.data(), sizeof h);
  return h;
}

// Parent <-> zygote, over a SOCK_SEQPACKET socket pair.
enum class command_kind : std::uint32_t { spawn, quit, kill_all };
struct command {
  command_kind kind;
  std::uint32_t slot;
};
enum class report_kind : std::uint32_t { spawned, exited, spawn_failed };
struct report {
  report_kind kind;
  std::uint32_t slot;
  std::int32_t pid;
  std::int32_t exitcode;  // exited: n, or -N for signal N; spawn_failed: the errno
};

void send_all(int fd, const void* data, std::size_t size, int pass_fd = -1) {
  iovec iov{const_cast<void*>(data), size};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  if (pass_fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
  }
  retry_on_eintr([&] { return ::sendmsg(fd, &msg, MSG_NOSIGNAL); });
}

// One message; 0 at EOF. A passed descriptor lands in *received (O_CLOEXEC).
ssize_t receive(int fd, void* data, std::size_t size, int* received) {
  iovec iov{data, size};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  const ssize_t n = retry_on_eintr([&] { return ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC); });
  if (received != nullptr) *received = -1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int passed;
      std::memcpy(&passed, CMSG_DATA(c), sizeof(int));
      if (received != nullptr) {
        *received = passed;
      } else {
        ::close(passed);
      }
    }
  }
  return n;
}

// The threads of the pool must not take the program's signals (SIGINT goes to the
// program's own handler, on one of its own threads).
template <class Body>
std::thread start_quiet_thread(Body body) {
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  try {
    std::thread t(std::move(body));
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return t;
  } catch (...) {
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    throw;
  }
}

}  // namespace

// A pool belongs to the process that made it (`owner`). A forked child's copy is inert:
// its threads, zygote and workers are the parent's. Using it there would interleave its
// task ids with the parent's in the shared channels (the parent would take the child's
// results for its own) and wait for results no thread reads, so every call throws; its
// descriptors are closed at the fork, so a `process` child holds none of them.
struct pool_core::impl final : fork_local {
  pool_config config;
  unsigned processes;
  pid_t owner = current_pid();

  std::unique_ptr<shared_memory> control_memory;
  control_block* control = nullptr;
  std::unique_ptr<channel> tasks;
  std::unique_ptr<channel> results;
  std::optional<task_claims> claims;  // `processes` slots, after the control block

  pid_t zygote_pid = 0;
  child_handle zygote;
  unique_fd zygote_socket;
  unique_fd monitor_wake;  // eventfd

  struct worker_info {
    pid_t pid = 0;
    unique_fd pidfd;  // passed by the zygote; empty without pidfd support (see kill_worker)
  };

  std::mutex mutex;  // guards everything below
  enum class phase { running, closed, terminated } state = phase::running;
  pending_tasks pending;
  std::uint64_t next_task = 1;
  std::size_t in_flight = 0;  // submitted and not yet through complete/fail
  unsigned retired = 0;
  unsigned feeds = 0;           // begun and not ended (pool_core::begin_feed)
  bool sentinels_owed = false;  // close() came while feeds ran: the last one puts them
  std::vector<worker_info> workers;
  std::deque<std::function<void()>> posted;
  std::map<std::pair<std::uintptr_t, std::uintptr_t>, std::uint32_t> function_ids;
  std::condition_variable settled;  // in_flight or retired changed
  std::condition_variable result_thread_cv;  // posted work, helpers gone, or stop
  bool monitor_stop = false;
  bool result_stop = false;
  std::atomic<bool> result_thread_gone{false};  // posted work then runs on the posting thread
  bool shut_down = false;

  // Whoever reads the results channel and dispatches what it reads holds `reader`: the
  // result thread, or a caller blocked in get() (pump_results), which saves the hop
  // through the result thread. Dispatching under it keeps completions in channel order.
  std::mutex reader;
  std::atomic<unsigned> helpers{0};  // callers in pump_results; the result thread steps aside

  std::thread result_thread;
  std::thread monitor_thread;

  ~impl() { runtime::instance().unregister_fork_local(this); }

  void check_owner(const char* call) const {
    const pid_t self = current_pid();
    if (self == owner) return;
    throw error("mproc pool: " + std::string(call) + " in process " + std::to_string(self) +
                ", but the pool belongs to process " + std::to_string(owner) +
                ", which made it; a forked process cannot use its parent's pool (make a pool there)");
  }

  void forget_in_fork_child() noexcept override {
    zygote.reset();
    zygote_socket.reset();
    monitor_wake.reset();
    for (worker_info& w : workers) w.pidfd.reset();
    control_memory->forget_descriptor();
    tasks->forget_descriptor();
    results->forget_descriptor();
  }

  // --- parent: the result thread -------------------------------------------------------

  void put_result(const result_header& header, std::span<const std::byte> payload = {}) {
    std::vector<std::byte> message(sizeof header + payload.size());
    std::memcpy(message.data(), &header, sizeof header);
    if (!payload.empty()) std::memcpy(message.data() + sizeof header, payload.data(), payload.size());
    const std::size_t end = message.size();
    results->put(message, {&end, 1}, nullptr);
  }

  // Completes or fails `state` as its result says.
  static void deliver(task_state& state, const result_header& header, std::span<const std::byte> payload) {
    switch (header.kind) {
      case result_kind::ok:
        state.complete(payload);
        break;
      case result_kind::exception:
        state.fail(decode_exception(payload));
        break;
      case result_kind::timed_out:
        state.fail(std::make_exception_ptr(
            timeout_error("the task ran longer than the pool's task_timeout; its worker was killed and replaced")));
        break;
      default:
        state.fail(std::make_exception_ptr(worker_lost(
            header.exitcode < 0 ? "the worker running the task was killed by signal " + std::to_string(-header.exitcode)
                                : "the worker running the task exited with code " + std::to_string(header.exitcode),
            header.exitcode)));
        break;
    }
  }

  void settle(std::size_t count) {
    std::lock_guard lock(mutex);
    in_flight -= count;
    settled.notify_all();
  }
  void settle_one() { settle(1); }

  // Runs the posted work in order; the caller holds `reader` (work may dispatch failures).
  void run_posted() {
    for (;;) {
      std::function<void()> work;
      {
        std::lock_guard lock(mutex);
        if (posted.empty()) return;
        work = std::move(posted.front());
        posted.pop_front();
      }
      try {
        work();
      } catch (...) {  // posted work reports its own errors; never let one kill the thread
      }
    }
  }

  // The result thread: the only thread that runs posted work and callbacks.
  static bool& on_result_thread() {
    thread_local bool is = false;
    return is;
  }

  // Reads up to 64 results (waiting until `deadline`, null: forever) and dispatches them;
  // the caller holds `reader`. Returns whether it read anything.
  bool read_results(const deadline_t* deadline) {
    struct batch {
      std::vector<std::byte> bytes;
      std::vector<std::size_t> ends;
    };
    thread_local batch b;
    b.bytes.clear();
    b.ends.clear();
    const std::size_t n = results->get(
        [](void* out, std::span<const std::byte> message) {
          auto& into = *static_cast<batch*>(out);
          into.bytes.insert(into.bytes.end(), message.begin(), message.end());
          into.ends.push_back(into.bytes.size());
        },
        &b, 64, deadline);
    // One lock for the whole batch: the submitting threads contend for the same mutex.
    struct result {
      result_header header;
      std::span<const std::byte> payload;
      std::shared_ptr<task_state> state;  // null: a wake, or not pending any more
    };
    thread_local std::vector<result> batch_results;
    batch_results.clear();
    {
      std::lock_guard lock(mutex);
      std::size_t begin = 0;
      for (const std::size_t end : b.ends) {
        const std::span<const std::byte> message(b.bytes.data() + begin, end - begin);
        begin = end;
        const auto header = read_header<result_header>(message);
        if (!header) continue;
        result& r = batch_results.emplace_back(result{*header, message.subspan(sizeof(result_header)), nullptr});
        if (header->kind == result_kind::wake) continue;
        // Not pending: already failed (its worker was declared lost, or the pool terminated).
        r.state = pending.take(header->task);
      }
    }
    std::size_t delivered = 0;
    for (result& r : batch_results) {
      if (r.header.kind == result_kind::wake) {
        if (on_result_thread()) run_posted();
      } else if (r.state) {
        deliver(*r.state, r.header, r.payload);
        r.state.reset();
        ++delivered;
      }
    }
    if (delivered != 0) settle(delivered);
    return n != 0;
  }

  void result_loop() {
    on_result_thread() = true;
    for (;;) {
      {
        // Step aside while callers read the results themselves, running what they post.
        // Their leaving is not signalled (a blocking apply() loop would wake this thread
        // every call): it is seen within a millisecond.
        std::unique_lock lock(mutex);
        while (!result_stop && helpers.load(std::memory_order_acquire) != 0) {
          if (!posted.empty()) {
            lock.unlock();
            {
              std::lock_guard read_lock(reader);  // posted work may fail tasks: dispatching
              run_posted();
            }
            lock.lock();
            continue;
          }
          result_thread_cv.wait_for(lock, std::chrono::milliseconds(1));
        }
      }
      std::lock_guard read_lock(reader);
      run_posted();  // work posted by a caller that read results comes before what follows
      {
        std::lock_guard lock(mutex);
        if (result_stop) return;
      }
      read_results(nullptr);
    }
  }

  // A caller blocked on one of this pool's results reads the results channel itself until
  // `done` or `budget` passes, instead of waiting for the result thread to hand them over.
  void pump_results(const std::atomic<bool>& done, std::chrono::nanoseconds budget) {
    // A callback blocking on a result waits, as documented; after shut-down nothing comes.
    if (on_result_thread() || result_thread_gone.load(std::memory_order_acquire)) return;
    if (budget <= std::chrono::nanoseconds::zero()) return;  // a poll: no wake to send
    const deadline_t deadline = std::chrono::steady_clock::now() + budget;
    helpers.fetch_add(1, std::memory_order_acq_rel);
    bool kicked = false;
    while (!done.load(std::memory_order_acquire)) {
      std::unique_lock read_lock(reader, std::try_to_lock);
      if (read_lock) {
        if (!read_results(&deadline) && std::chrono::steady_clock::now() >= deadline) break;
        continue;
      }
      if (!kicked) {
        put_result({0, result_kind::wake, 0});  // the result thread may be asleep in its read
        kicked = true;
      }
      if (std::chrono::steady_clock::now() >= deadline) break;
      std::this_thread::yield();
    }
    if (helpers.fetch_sub(1, std::memory_order_acq_rel) == 1 && !done.load(std::memory_order_acquire)) {
      result_thread_cv.notify_one();  // a long task: hand reading back at once
    }
  }

  // --- parent: the monitor thread (zygote reports, deaths, timeouts) -------------------

  void request(command_kind kind, std::uint32_t slot = 0) {
    const command c{kind, slot};
    send_all(zygote_socket.get(), &c, sizeof c);
  }

  void on_report(const report& r, int passed_fd) {
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
    // exited
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
        settled.notify_all();
      }
      respawn = !retires && state != phase::terminated;
    }
    if (respawn) request(command_kind::spawn, r.slot);
  }

  // Settles the claim of slot `slot`'s dead worker, which ended with `exitcode`: the task
  // whose take it committed fails (timeout_error when the parent condemned it, else
  // worker_lost). Returns whether the claim was on a sentinel. Call it without `mutex`: it
  // waits for a worker taking a task, if one is.
  bool settle_dead_worker(std::uint32_t slot, std::int32_t exitcode) {
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
  void on_spawn_failed(std::uint32_t slot, int err) {
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
        settled.notify_all();
      }
      none_alive = std::none_of(workers.begin(), workers.end(), [](const worker_info& w) { return w.pid != 0; });
    }
    if (none_alive) {
      fail_queued_tasks(std::make_exception_ptr(std::system_error(
          err, std::system_category(), "mproc pool: no worker process could be started to run the task")));
    }
    if (respawn) request(command_kind::spawn, slot);
  }

  // Takes every task still queued out of the task channel and fails it with `error`
  // (close()'s sentinels go back in).
  void fail_queued_tasks(std::exception_ptr error) {
    std::vector<std::uint64_t> ids;
    unsigned sentinels = 0;
    struct taken {
      std::vector<std::uint64_t>* ids;
      unsigned* sentinels;
      task_claims* claims;
    } into{&ids, &sentinels, &*claims};
    const deadline_t now{};  // in the past: never wait
    while (tasks->get(
               [](void* c, std::span<const std::byte> bytes) {
                 auto& t = *static_cast<taken*>(c);
                 t.claims->void_abandoned();  // a dead worker's claim on this task is void
                 const auto h = read_header<task_header>(bytes);
                 if (!h) return;
                 if (h->sentinel != 0) {
                   ++*t.sentinels;
                 } else {
                   t.ids->push_back(h->task);
                 }
               },
               &into, 64, &now) != 0) {
    }
    for (unsigned k = 0; k < sentinels; ++k) put_sentinel();
    std::vector<std::shared_ptr<task_state>> failed;
    {
      std::lock_guard lock(mutex);
      for (const std::uint64_t id : ids) {
        if (auto state = pending.take(id)) failed.push_back(std::move(state));
      }
    }
    fail_all(std::move(failed), std::move(error));
  }

  void put_sentinel() {
    const task_header h{0, 0, 1};
    const std::size_t end = sizeof h;
    tasks->put({reinterpret_cast<const std::byte*>(&h), sizeof h}, {&end, 1}, nullptr);
  }

  // Kills workers whose task ran past task_timeout; returns ms until the next deadline.
  int enforce_timeouts() {
    if (config.task_timeout.count() <= 0) return -1;
    const std::int64_t limit = std::chrono::duration_cast<std::chrono::nanoseconds>(config.task_timeout).count();
    const std::int64_t now = monotonic_ns();
    std::int64_t next = limit;
    std::lock_guard lock(mutex);
    for (unsigned k = 0; k < processes; ++k) {
      const std::uint64_t task = claims->task(k);
      if (task == 0 || task == retire_claim || (task & task_claims::condemned) != 0) continue;
      const std::int64_t started = claims->started_ns(k);
      if (claims->task(k) != task) continue;
      worker_info& w = workers[k];
      const std::int64_t left = started + limit - now;
      if (left <= 0) {
        // Only while the worker still holds this very task: one that just finished it
        // must not be killed in its next task.
        if (w.pid != 0 && claims->condemn(k, task)) kill_worker(w);
      } else {
        next = std::min(next, left);
      }
    }
    return static_cast<int>(next / 1'000'000 + 1);
  }

  void monitor_loop() {
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
        const ssize_t got = receive(zygote_socket.get(), &r, sizeof r, &passed);
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

  // The zygote died (killed by someone): no worker can be replaced any more.
  void zygote_lost() {
    std::vector<std::shared_ptr<task_state>> failed;
    {
      std::lock_guard lock(mutex);
      if (state != phase::terminated) state = phase::terminated;
      pending.take_all([&](std::shared_ptr<task_state> s) { failed.push_back(std::move(s)); });
      for (auto& w : workers) kill_worker(w);
    }
    fail_all(std::move(failed), "the pool's zygote process died; the pool cannot run tasks any more");
  }

  // Fails tasks with closed_error, on the result thread.
  void fail_all(std::vector<std::shared_ptr<task_state>> failed, std::string why) {
    fail_all(std::move(failed), std::make_exception_ptr(closed_error(std::move(why))));
  }
  void fail_all(std::vector<std::shared_ptr<task_state>> failed, std::exception_ptr error) {
    if (failed.empty()) return;
    post_work([this, failed = std::move(failed), error = std::move(error)] {
      for (const auto& s : failed) {
        s->fail(error);
        settle_one();
      }
    });
  }

  void post_work(std::function<void()> work) {
    {
      std::unique_lock lock(mutex);
      if (result_thread_gone) {  // the pool has shut down: nobody else would run it
        lock.unlock();
        work();
        return;
      }
      posted.push_back(std::move(work));
    }
    result_thread_cv.notify_one();  // when it stands aside for a caller reading results
    put_result({0, result_kind::wake, 0});
  }

  void wake_monitor() {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto r = ::write(monitor_wake.get(), &one, sizeof one);
  }

  // Stops both threads and reaps the zygote. Idempotent.
  void shut_down_threads() {
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
    put_result({0, result_kind::wake, 0});
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
  static void kill_worker(const worker_info& w) {
    if (w.pid != 0) (void)send_signal(w.pid, w.pidfd.get(), SIGKILL);
  }
};

// --- the zygote and its workers ------------------------------------------------------------

namespace {

// The parent condemned this worker's task for its timeout and is killing it: take no
// other task (the kill would fail it).
[[noreturn]] void wait_for_kill() noexcept {
  for (;;) ::pause();
}

[[noreturn]] void worker_main(pool_core::impl& p, unsigned slot, pid_t zygote) noexcept {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != zygote) ::_exit(1);
  // Only the parent writes the function table; this worker only reads it.
  if (::mprotect(p.control, table_bytes, PROT_READ) != 0) ::_exit(1);
  // A process that a task (or the initializer) forks gets none of the pool's descriptors:
  // the worker keeps its channels' memfds only to map them as they grow.
  try {
    runtime::instance().register_fork_local(&p);
  } catch (...) {
    ::_exit(1);
  }
  if (p.config.initializer) {
    try {
      p.config.initializer();
    } catch (const std::exception& e) {
      const std::string line = "mproc pool worker (pid " + std::to_string(::getpid()) +
                               "): initializer threw " + demangled_name(typeid(e)) + ": " + e.what() + "\n";
      flush_std_streams();
      [[maybe_unused]] auto n = ::write(STDERR_FILENO, line.data(), line.size());
      ::_exit(1);
    } catch (...) {
      flush_std_streams();
      ::_exit(1);
    }
  }
  task_claims& claims = *p.claims;
  std::vector<std::byte> task;
  std::vector<std::byte> result;
  unsigned done = 0;
  struct take_context {
    std::vector<std::byte>* task;
    task_claims* claims;
    unsigned slot;
    std::uint64_t too_big = 0;  // such a task's id

    // Before the take commits: if this worker dies from here on, the parent can tell
    // whether the task went with it (task_claim.hpp).
    void claim(const std::optional<task_header>& h) {
      if (h) claims->claim(slot, h->sentinel != 0 ? retire_claim : h->task, monotonic_ns());
    }
    // A task this worker cannot hold in memory (its message, or the copy of it) is taken
    // all the same and fails with bad_alloc: left queued, it would block every task behind.
    void note_too_big(std::span<const std::byte> frame_start) {
      task->clear();
      task->shrink_to_fit();
      const auto h = read_header<task_header>(frame_start);
      claim(h);
      if (h && h->sentinel == 0) too_big = h->task;
    }
  } context{&task, &claims, slot};
  for (;;) {
    context.too_big = 0;
    try {
      p.tasks->get(
          [](void* c, std::span<const std::byte> bytes) {
            auto& ctx = *static_cast<take_context*>(c);
            try {
              ctx.task->assign(bytes.begin(), bytes.end());
            } catch (const std::bad_alloc&) {
              ctx.note_too_big(bytes);
              return;
            }
            ctx.claim(read_header<task_header>(bytes));
          },
          &context, 1, nullptr,
          [](void* c, std::span<const std::byte> prefix, std::size_t) {
            static_cast<take_context*>(c)->note_too_big(prefix);
          });
    } catch (...) {
      continue;  // a corrupted channel dropped its content; take the next
    }
    if (context.too_big != 0) {
      result.assign(sizeof(result_header), std::byte{0});
      const result_header rh{context.too_big, result_kind::exception, 0};
      std::memcpy(result.data(), &rh, sizeof rh);
      try {
        throw std::bad_alloc();
      } catch (...) {
        encode_current_exception(result);
      }
      const std::size_t end = result.size();
      p.results->put(result, {&end, 1}, nullptr);
      if (!claims.release(slot, context.too_big)) wait_for_kill();
      continue;
    }
    const auto header = read_header<task_header>(task);
    if (!header) continue;
    const task_header& h = *header;
    if (h.sentinel != 0) {
      flush_std_streams();
      ::_exit(retire_exit_code);
    }
    result_header rh{h.task, result_kind::ok, 0};
    result.resize(sizeof rh);
    try {
      const std::uint32_t known = p.control->function_count.load(std::memory_order_acquire);
      if (h.function >= std::min<std::uint32_t>(known, max_functions)) {
        throw error("task names function " + std::to_string(h.function) + ", which the pool does not know");
      }
      const function_entry& f = p.control->functions[h.function];
      auto invoker = reinterpret_cast<task_invoker>(f.invoker.load(std::memory_order_acquire));
      auto function = reinterpret_cast<generic_function>(f.function.load(std::memory_order_acquire));
      if (invoker == nullptr) throw error("task names an empty function slot");
      invoker(function, std::span<const std::byte>(task).subspan(sizeof h), result);
    } catch (...) {
      rh.kind = result_kind::exception;
      result.resize(sizeof rh);
      try {
        encode_current_exception(result);
      } catch (...) {
        result.resize(sizeof rh);
      }
    }
    std::memcpy(result.data(), &rh, sizeof rh);
    flush_std_output();  // what the task printed appears now, not when the worker ends
    const std::size_t end = result.size();
    p.results->put(result, {&end, 1}, nullptr);
    if (!claims.release(slot, h.task)) wait_for_kill();
    if (p.config.max_tasks_per_child != 0 && ++done >= p.config.max_tasks_per_child) {
      ::_exit(recycle_exit_code);
    }
  }
}

[[noreturn]] void zygote_main(pool_core::impl& p, int sock, pid_t parent) noexcept {
  ::signal(SIGINT, SIG_IGN);  // workers inherit it: Ctrl-C is for the parent
  // The parent's alone: workers keep only the channels' descriptors (to map them as they grow).
  p.monitor_wake.reset();
  p.control_memory->forget_descriptor();
  // The zygote reaps its workers itself: SIGCHLD ignored (or SA_NOCLDWAIT) inherited from
  // the program would make the kernel reap them first, and their ends go unnoticed.
  struct sigaction default_chld {};
  default_chld.sa_handler = SIG_DFL;
  ::sigaction(SIGCHLD, &default_chld, nullptr);
  // The parent's pidfd becomes readable when it dies. Without pidfd support (valgrind,
  // Linux < 5.3) getppid() changes instead (the zygote is re-parented): checked every
  // 100 ms.
  std::error_code ec;
  const int parent_fd = pidfd_open(parent, ec);
  if ((parent_fd < 0 && ec != std::errc::function_not_supported) || ::getppid() != parent) ::_exit(1);
  const int parent_check_ms = parent_fd < 0 ? 100 : -1;
  // Without pidfds the zygote hears of its workers' ends through a SIGCHLD signalfd, not
  // through child_handle's watcher threads: it must stay single-threaded, or a worker
  // forked while a watcher thread held a lock (an allocator's, as ASan's does as the
  // thread exits) would inherit it held, and deadlock on it.
  sigset_t chld_only, old_mask;
  sigemptyset(&old_mask);
  sigemptyset(&chld_only);
  sigaddset(&chld_only, SIGCHLD);
  unique_fd child_ended;
  if (!pidfds_supported()) {
    ::sigprocmask(SIG_BLOCK, &chld_only, &old_mask);  // blocked: queued for the signalfd
    child_ended.reset(::signalfd(-1, &chld_only, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!child_ended) ::_exit(1);
  }
  struct child {
    std::uint32_t slot;
    child_handle handle;  // an unreaped child of the zygote: signals never hit a reused pid
  };
  std::vector<child> children;
  bool quitting = false;
  auto kill_all = [&] {
    for (const child& c : children) (void)c.handle.signal(SIGKILL);
  };
  auto reap_all_and_exit = [&] {
    kill_all();
    for (child& c : children) (void)c.handle.reap(ec);
    ::_exit(0);
  };
  std::vector<pollfd> fds;
  for (;;) {
    if (quitting && children.empty()) ::_exit(0);
    fds.assign({{sock, POLLIN, 0}, {parent_fd, POLLIN, 0}, {child_ended.get(), POLLIN, 0}});
    for (const child& c : children) fds.push_back({c.handle.fd(), POLLIN, 0});
    if (::poll(fds.data(), fds.size(), parent_check_ms) < 0) continue;
    if (fds[1].revents != 0 || (parent_fd < 0 && ::getppid() != parent)) reap_all_and_exit();  // the parent died
    const bool some_child_ended = fds[2].revents != 0;
    if (some_child_ended) {
      signalfd_siginfo info;
      while (::read(child_ended.get(), &info, sizeof info) > 0) {
      }
    }
    for (std::size_t i = 3; i < fds.size(); ++i) {
      if (fds[i].revents == 0 && !some_child_ended) continue;
      child& c = children[i - 3];
      const std::optional<int> code = c.handle.try_reap(ec);
      if (!code) continue;
      const report r{report_kind::exited, c.slot, c.handle.pid(), *code};
      send_all(sock, &r, sizeof r);
      c.handle.reset();
    }
    std::erase_if(children, [](const child& c) { return !c.handle; });
    if (fds[0].revents == 0) continue;
    command cmd{};
    const ssize_t got = receive(sock, &cmd, sizeof cmd, nullptr);
    if (got <= 0) reap_all_and_exit();  // the parent closed the socket: the pool is gone
    if (got != static_cast<ssize_t>(sizeof cmd)) continue;
    switch (cmd.kind) {
      case command_kind::spawn: {
        if (quitting) break;
        const pid_t self = ::getpid();
        const pid_t pid = ::fork();
        if (pid == 0) {
          ::close(sock);
          ::close(parent_fd);
          if (child_ended) {
            child_ended.reset();
            ::sigprocmask(SIG_SETMASK, &old_mask, nullptr);
          }
          for (child& c : children) c.handle.reset();
          worker_main(p, cmd.slot, self);
        }
        // Out of processes (RLIMIT_NPROC, memory) or descriptors: report it, after a
        // pause, so that the parent's retry does not spin.
        auto spawn_failed = [&](int err) {
          ::usleep(100'000);
          const report r{report_kind::spawn_failed, cmd.slot, 0, err};
          send_all(sock, &r, sizeof r);
        };
        if (pid < 0) {
          spawn_failed(errno);
          break;
        }
        child_handle handle = child_handle::open(pid, ec, without_pidfd::pid_only);
        if (!handle) {  // a worker we could not watch would never be reported
          ::kill(pid, SIGKILL);
          int status;
          retry_on_eintr([&] { return ::waitpid(pid, &status, 0); });
          spawn_failed(ec.value());
          break;
        }
        const report r{report_kind::spawned, cmd.slot, pid, 0};
        send_all(sock, &r, sizeof r, handle.pidfd());  // -1 without pidfds: no fd passed
        children.push_back({cmd.slot, std::move(handle)});
        break;
      }
      case command_kind::kill_all:
        kill_all();
        quitting = true;
        break;
      case command_kind::quit:
        quitting = true;
        break;
    }
  }
}

}  // namespace

// --- the parent's API ---------------------------------------------------------------------

pool_core::pool_core(pool_config config) : impl_(std::make_unique<impl>()) {
  impl& p = *impl_;
  p.processes = config.processes != 0 ? config.processes : cpu_count();
  p.config = std::move(config);
  p.workers.resize(p.processes);
  p.control_memory = shared_memory::create("mproc-pool", control_bytes(p.processes));
  p.control = new (p.control_memory->base()) control_block{};
  auto* slots = new (p.control_memory->base() + table_bytes) task_claim_slot[p.processes]{};
  p.tasks = std::make_unique<channel>(0);
  p.results = std::make_unique<channel>(0);
  p.claims.emplace(slots, p.processes, *p.tasks);
  p.monitor_wake.reset(::eventfd(0, EFD_CLOEXEC));
  if (!p.monitor_wake) throw_system_error(last_error(), "eventfd");

  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    throw_system_error(last_error(), "socketpair");
  }
  unique_fd parent_end(pair[0]);
  unique_fd zygote_end(pair[1]);

  // Forked before the pool's own threads exist; the zygote stays single-threaded.
  flush_std_streams();
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw_system_error(last_error(), "fork (pool zygote)");
  if (pid == 0) {
    parent_end.reset();
    zygote_main(p, zygote_end.get(), parent);
  }
  zygote_end.reset();
  runtime::instance().register_fork_local(&p);  // after the zygote's fork: it needs them
  p.zygote_pid = pid;
  std::error_code ec;
  p.zygote = child_handle::open(pid, ec);
  p.zygote_socket = std::move(parent_end);
  if (!p.zygote) {
    ::kill(pid, SIGKILL);
    int status;
    retry_on_eintr([&] { return ::waitpid(pid, &status, 0); });
    throw_system_error(ec, "pidfd_open (pool zygote)");
  }
  try {
    p.result_thread = start_quiet_thread([&p] { p.result_loop(); });
    p.monitor_thread = start_quiet_thread([&p] { p.monitor_loop(); });
    for (unsigned k = 0; k < p.processes; ++k) p.request(command_kind::spawn, k);
  } catch (...) {
    terminate();
    p.shut_down_threads();
    throw;
  }
}

pool_core::~pool_core() {
  if (impl_->owner != current_pid()) {
    // A forked copy: parent threads that do not exist here may have held its mutexes or
    // waited on its condition variables, and destroying those could block forever
    // (pthread_cond_destroy waits for its waiters). It is left as it is, its descriptors
    // closed at the fork, and still registered with the runtime (so not a leak).
    (void)impl_.release();
    return;
  }
  try {
    terminate();
    impl_->shut_down_threads();
  } catch (...) {
  }
}

unsigned pool_core::size() const noexcept { return impl_->processes; }

std::uint32_t pool_core::function_id(task_invoker invoker, generic_function function) {
  impl& p = *impl_;
  p.check_owner("submitting a task");
  const std::pair key{reinterpret_cast<std::uintptr_t>(invoker), reinterpret_cast<std::uintptr_t>(function)};
  std::lock_guard lock(p.mutex);
  if (auto it = p.function_ids.find(key); it != p.function_ids.end()) return it->second;
  const std::uint32_t id = p.control->function_count.load(std::memory_order_relaxed);
  if (id >= max_functions) throw error("a pool can run at most 4096 distinct task functions");
  p.control->functions[id].invoker.store(key.first, std::memory_order_relaxed);
  p.control->functions[id].function.store(key.second, std::memory_order_relaxed);
  p.control->function_count.store(id + 1, std::memory_order_release);
  p.function_ids.emplace(key, id);
  return id;
}

static void throw_not_running(pool_core::impl::phase state) {
  throw closed_error(state == pool_core::impl::phase::closed ? "pool is closed: it takes no new tasks"
                                                            : "pool was terminated: it takes no new tasks");
}

void pool_core::submit(std::uint32_t function_id, std::span<std::byte> message, std::shared_ptr<task_state> state,
                       bool fed) {
  impl& p = *impl_;
  p.check_owner("submitting a task");
  if (message.size() < sizeof(task_header)) throw error("pool_core::submit: no room for the task header");
  std::uint64_t id;
  {
    std::lock_guard lock(p.mutex);
    const bool admitted = p.state == impl::phase::running || (fed && p.state == impl::phase::closed && p.feeds != 0);
    if (!admitted) throw_not_running(p.state);
    id = p.next_task++;
    p.pending.add(id, std::move(state));
    ++p.in_flight;
  }
  const task_header h{id, function_id, 0};
  std::memcpy(message.data(), &h, sizeof h);
  const std::size_t end = message.size();
  try {
    p.tasks->put(message, {&end, 1}, nullptr);
  } catch (...) {
    std::lock_guard lock(p.mutex);
    if (p.pending.take(id)) --p.in_flight;
    throw;
  }
}

void pool_core::begin_feed() {
  impl& p = *impl_;
  p.check_owner("submitting a task");
  std::lock_guard lock(p.mutex);
  if (p.state != impl::phase::running) throw_not_running(p.state);
  ++p.feeds;
}

void pool_core::end_feed() noexcept {
  impl& p = *impl_;
  {
    std::lock_guard lock(p.mutex);
    if (--p.feeds != 0 || !p.sentinels_owed) return;
    p.sentinels_owed = false;
  }
  try {
    for (unsigned k = 0; k < p.processes; ++k) p.put_sentinel();
  } catch (...) {
    // The workers would wait for tasks forever and join() with them: end the pool instead.
    try {
      terminate();
    } catch (...) {
    }
  }
}

void pool_core::post(std::function<void()> work) {
  impl_->check_owner("a callback");
  impl_->post_work(std::move(work));
}

void pool_core::pump_results(const std::atomic<bool>& done, std::chrono::nanoseconds budget) {
  impl_->check_owner("waiting for a result");
  impl_->pump_results(done, budget);
}

bool pool_core::on_result_thread() noexcept { return impl::on_result_thread(); }

void pool_core::close() {
  impl& p = *impl_;
  p.check_owner("close()");
  {
    std::lock_guard lock(p.mutex);
    if (p.state != impl::phase::running) return;
    p.state = impl::phase::closed;
    if (p.feeds != 0) {
      p.sentinels_owed = true;  // behind the feeds' last tasks (end_feed)
      return;
    }
  }
  // One sentinel per worker, behind every task: each worker retires when it reaches one.
  for (unsigned k = 0; k < p.processes; ++k) p.put_sentinel();
}

void pool_core::terminate() {
  impl& p = *impl_;
  p.check_owner("terminate()");
  std::vector<std::shared_ptr<task_state>> failed;
  {
    std::lock_guard lock(p.mutex);
    if (p.state == impl::phase::terminated) return;
    p.state = impl::phase::terminated;
    p.pending.take_all([&](std::shared_ptr<task_state> s) { failed.push_back(std::move(s)); });
    for (auto& w : p.workers) p.kill_worker(w);
  }
  try {
    p.request(command_kind::kill_all);
  } catch (...) {
  }
  p.fail_all(std::move(failed), "pool was terminated before the task finished");
}

void pool_core::join() {
  impl& p = *impl_;
  p.check_owner("join()");
  bool closed;  // read under the lock: the monitor thread sets `terminated` if the zygote dies
  {
    std::unique_lock lock(p.mutex);
    if (p.state == impl::phase::running) throw error("pool::join() needs close() or terminate() first");
    if (p.state == impl::phase::closed) {
      p.settled.wait(lock, [&] {
        return p.state == impl::phase::terminated || (p.in_flight == 0 && p.retired == p.processes);
      });
    }
    closed = p.state == impl::phase::closed;
  }
  if (closed) {
    try {
      p.request(command_kind::quit);
    } catch (...) {
    }
  }
  // After terminate(): let the failures of pending tasks reach their callbacks first.
  {
    std::unique_lock lock(p.mutex);
    p.settled.wait(lock, [&] { return p.in_flight == 0; });
  }
  p.shut_down_threads();
}

}  // namespace mproc::detail
