// A worker process, forked by the zygote: takes one task at a time from the task channel,
// runs it, and posts its result. Its claim (task_claim.hpp) tells the parent, if it dies,
// whether it had taken a task and which.
#include "pool/worker.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mproc/error.hpp"
#include "mproc/process.hpp"
#include "pool/pool_impl.hpp"
#include "wait/futex.hpp"

namespace mproc::detail {
namespace {

// The parent condemned this worker's task for its timeout and is killing it: take no
// other task (the kill would fail it).
[[noreturn]] void wait_for_kill() noexcept {
  for (;;) ::pause();
}

// Dies with the zygote, maps the function table read-only, and runs the initializer.
void start_worker(pool_core::impl& p, pid_t zygote) noexcept {
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
  if (!p.config.initializer) return;
  try {
    p.config.initializer();
  } catch (const std::exception& e) {
    const std::string line = "mproc::pool worker (pid " + std::to_string(::getpid()) + "): the initializer threw " +
                             demangled_name(typeid(e)) + ": " + e.what() + "\n";
    flush_std_streams();
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, line.data(), line.size());
    ::_exit(1);
  } catch (...) {
    flush_std_streams();
    ::_exit(1);
  }
}

// One take from the task channel: the task's bytes, and the claim on it made before the
// take commits, so that if this worker dies from then on, the parent can tell whether the
// task went with it.
class task_taker {
 public:
  task_taker(pool_core::impl& p, unsigned slot) : p_(p), slot_(slot) {}

  // Waits for the next task. Afterwards task() holds it, or too_big() names a task this
  // worker could not hold in memory (its message, or the copy of it), which it took all
  // the same and must fail with bad_alloc: left queued, it would block every task behind;
  // or cancelled() says the parent cancelled the task taken, which must not run.
  void take() {
    too_big_ = 0;
    cancelled_ = false;
    task_.clear();
    for (;;) {
      try {
        const auto too_big = [this](std::span<const std::byte> prefix, std::size_t) { on_too_big(prefix); };
        p_.tasks->get([this](std::span<const std::byte> bytes) { on_task(bytes); }, 1, deadline::never(),
                      {.on_unreadable = too_big});
        return;
      } catch (...) {
        continue;  // a corrupted channel dropped its content; take the next
      }
    }
  }
  std::span<const std::byte> task() const noexcept { return task_; }
  std::uint64_t too_big() const noexcept { return too_big_; }
  bool cancelled() const noexcept { return cancelled_; }

 private:
  // Under the lane's lock, before the take commits: a task the parent cancelled is taken
  // and dropped, unclaimed; any other is started (task_board.hpp), then claimed.
  bool start(const std::optional<task_header>& h) {
    if (!h || h->is_sentinel() || (h->flags & task_header::on_board) == 0 || p_.board->start(h->task)) return true;
    cancelled_ = true;
    return false;
  }
  void claim(const std::optional<task_header>& h) {
    if (h) p_.claims->claim(slot_, h->is_sentinel() ? retire_claim : h->task, monotonic_ns());
  }
  void on_task(std::span<const std::byte> bytes) {
    if (!start(read_header<task_header>(bytes))) return;
    try {
      task_.assign(bytes.begin(), bytes.end());
    } catch (const std::bad_alloc&) {
      on_too_big(bytes);
      return;
    }
    claim(read_header<task_header>(bytes));
  }
  void on_too_big(std::span<const std::byte> frame_start) {
    task_.clear();
    task_.shrink_to_fit();
    const auto h = read_header<task_header>(frame_start);
    if (!start(h)) return;
    claim(h);
    if (h && !h->is_sentinel()) too_big_ = h->task;
  }

  pool_core::impl& p_;
  unsigned slot_;
  std::vector<std::byte> task_;
  std::uint64_t too_big_ = 0;
  bool cancelled_ = false;
};

// Calls the function the task names, through the table: a forged or corrupted index is
// rejected, never followed to an address. `result` gets the header's room, then the
// encoded value or exception; the header says which.
result_header run_task(const pool_core::impl& p, const task_header& h, std::span<const std::byte> task,
                       std::vector<std::byte>& result) {
  result_header rh{h.task, result_kind::ok, 0};
  result.resize(sizeof rh);
  try {
    const std::uint32_t known = p.control->function_count.load(std::memory_order_acquire);
    if (h.function >= std::min<std::uint32_t>(known, max_functions)) {
      throw error("mproc::async_result::get: the task names function " + std::to_string(h.function) +
                  ", which the pool does not know: the task message was forged or corrupted");
    }
    const function_entry& f = p.control->functions[h.function];
    auto invoker = reinterpret_cast<task_invoker>(f.invoker.load(std::memory_order_acquire));
    auto function = reinterpret_cast<generic_function>(f.function.load(std::memory_order_acquire));
    if (invoker == nullptr) {
      throw error(
          "mproc::async_result::get: the task names an empty function slot: the task message was forged or "
          "corrupted");
    }
    invoker(function, task.subspan(sizeof h), result);
  } catch (...) {
    rh.kind = result_kind::exception;
    result.resize(sizeof rh);
    try {
      encode_current_exception(result);
    } catch (...) {
      result.resize(sizeof rh);
    }
  }
  return rh;
}

// Posts `result` (whose header is `rh`) and releases the claim on its task.
void post_result(pool_core::impl& p, unsigned slot, const result_header& rh, std::vector<std::byte>& result) {
  std::memcpy(result.data(), &rh, sizeof rh);
  p.results->put_one(result, deadline::never());
  if (!p.claims->release(slot, rh.task)) wait_for_kill();
}

void fail_with_bad_alloc(pool_core::impl& p, unsigned slot, std::uint64_t task, std::vector<std::byte>& result) {
  result.assign(sizeof(result_header), std::byte{0});
  try {
    throw std::bad_alloc();
  } catch (...) {
    encode_current_exception(result);
  }
  post_result(p, slot, {task, result_kind::exception, 0}, result);
}

}  // namespace

[[noreturn]] void worker_main(pool_core::impl& p, unsigned slot, pid_t zygote) noexcept {
  // current_process() names the worker, as Python's ForkPoolWorker-N, and parent_process()
  // is the pool's owner (not the zygote, which is the pool's own business).
  std::string name;
  try {
    name = "pool-worker-" + std::to_string(slot + 1);
  } catch (...) {
    ::_exit(1);
  }
  runtime::instance().become_child(name, true, p.owner_info);
  start_worker(p, zygote);
  task_taker taker(p, slot);
  std::vector<std::byte> result;
  unsigned done = 0;
  for (;;) {
    taker.take();
    if (taker.cancelled()) continue;
    if (taker.too_big() != 0) {
      fail_with_bad_alloc(p, slot, taker.too_big(), result);
      continue;
    }
    const auto header = read_header<task_header>(taker.task());
    if (!header) continue;
    if (header->is_sentinel()) {
      flush_std_streams();
      ::_exit(retire_exit_code);
    }
    const result_header rh = run_task(p, *header, taker.task(), result);
    flush_std_output();  // what the task printed appears now, not when the worker ends
    post_result(p, slot, rh, result);
    if (p.config.max_tasks_per_child != 0 && ++done >= p.config.max_tasks_per_child) {
      ::_exit(recycle_exit_code);
    }
  }
}

}  // namespace mproc::detail
