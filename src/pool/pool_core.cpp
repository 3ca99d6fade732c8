// The pool's API in the parent: construction (the zygote, then the threads), task
// submission, feeds, close, terminate and join. See pool_impl.hpp for the other rooms.
#include "mproc/detail/pool/pool_core.hpp"

#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cassert>
#include <cstring>
#include <future>
#include <mutex>
#include <utility>
#include <variant>

#include "mproc/error.hpp"
#include "mproc/process.hpp"
#include "os/quiet_thread.hpp"
#include "os/syscall.hpp"
#include "pool/pool_impl.hpp"
#include "pool/zygote.hpp"

namespace mproc::detail {

void pool_core::impl::check_owner(const char* call) const {
  const pid_t self = current_pid();
  if (self == owner) return;
  throw error("mproc::pool::" + std::string(call) + ": called in process " + std::to_string(self) +
              ", but the pool belongs to process " + std::to_string(owner) +
              ", which made it; a forked process cannot use its parent's pool: make a pool there");
}

void pool_core::impl::forget_in_fork_child() noexcept {
  zygote.reset();
  zygote_socket.reset();
  monitor_wake.reset();
  for (worker_info& w : workers) w.pidfd.reset();
  control_memory->forget_descriptor();
  tasks->forget_descriptor();
  results->forget_descriptor();
}

// --- the parent's API ---------------------------------------------------------------------

pool_core::pool_core(pool_config config) : impl_(std::make_unique<impl>()) {
  impl& p = *impl_;
  p.processes = config.processes != 0 ? config.processes : cpu_count();
  p.owner_info = current_process();
  p.config = std::move(config);
  p.workers.resize(p.processes);
  p.control_memory = shared_memory::create("mproc-pool", control_bytes(p.processes), 0, "mproc::pool");
  p.control = new (p.control_memory->base()) control_block{};
  auto* slots = new (p.control_memory->base() + table_bytes) task_claim_slot[p.processes]{};
  p.tasks = std::make_unique<channel>(0, "mproc::pool");
  p.results = std::make_unique<channel>(0, "mproc::pool");
  p.claims.emplace(slots, p.processes, *p.tasks);
  p.board.emplace(new (p.control_memory->base() + table_bytes + claims_bytes(p.processes)) task_board::memory{});
  p.monitor_wake.reset(::eventfd(0, EFD_CLOEXEC));
  if (!p.monitor_wake) throw_system_error(last_error(), "mproc::pool::pool: eventfd");

  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    throw_system_error(last_error(), "mproc::pool::pool: socketpair");
  }
  unique_fd parent_end(pair[0]);
  unique_fd zygote_end(pair[1]);

  // Forked before the pool's own threads exist; the zygote stays single-threaded.
  flush_std_streams();
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw_system_error(last_error(), "mproc::pool::pool: fork (the pool's zygote)");
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
    kill_and_reap(pid);
    throw_system_error(ec, "mproc::pool::pool: pidfd_open (the pool's zygote)");
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
  p.check_owner("apply");
  std::lock_guard lock(p.submit_mutex);
  return p.function_id_locked({invoker, function});
}

std::uint32_t pool_core::impl::function_id_locked(task_function_ref function) {
  const std::pair key{reinterpret_cast<std::uintptr_t>(function.invoker),
                      reinterpret_cast<std::uintptr_t>(function.function)};
  if (key == last_function.first) return last_function.second;  // a burst of one function
  if (auto it = function_ids.find(key); it != function_ids.end()) {
    last_function = {key, it->second};
    return it->second;
  }
  const std::uint32_t id = control->function_count.load(std::memory_order_relaxed);
  if (id >= max_functions)
    throw error(
        "mproc::pool::apply: the pool already knows 4096 distinct task functions, its limit; reuse functions, or make "
        "another pool");
  control->functions[id].invoker.store(key.first, std::memory_order_relaxed);
  control->functions[id].function.store(key.second, std::memory_order_relaxed);
  control->function_count.store(id + 1, std::memory_order_release);
  function_ids.emplace(key, id);
  last_function = {key, id};
  return id;
}

static void throw_not_running(pool_core::impl::phase state) {
  throw closed_error(state == pool_core::impl::phase::closed
                         ? "mproc::pool::apply: the pool is closed and takes no new tasks; submit before close()"
                         : "mproc::pool::apply: the pool was terminated and takes no new tasks; make a new pool");
}

void pool_core::submit(std::uint32_t function_id, std::span<std::byte> message, std::shared_ptr<task_state> state,
                       bool fed) {
  impl_->submit(function_id, message, std::move(state), fed);
}

void pool_core::submit(task_function_ref function, std::span<std::byte> message, std::shared_ptr<task_state> state) {
  impl_->submit(function, message, std::move(state), false);
}

pending_tasks& pool_core::impl::pending_locked() {
  submitted.drain([this](std::uint64_t id, std::shared_ptr<task_state> task) { pending.add(id, std::move(task)); });
  return pending;
}

std::shared_ptr<task_state> pool_core::impl::settle_locked(std::uint64_t id) {
  auto task = pending_locked().take(id);
  if (task) board->settle(id);
  return task;
}

// One lock for the admission, the function's id (unless known) and the task's entry: the
// submit lock, which the result thread never takes (submitted_tasks.hpp).
void pool_core::impl::submit(std::variant<std::uint32_t, task_function_ref> function, std::span<std::byte> message,
                             std::shared_ptr<task_state> task, bool fed) {
  check_owner("apply");
  assert(message.size() >= sizeof(task_header) && "the typed layer leaves room for the header");
  std::uint64_t id;
  std::uint32_t function_id;
  std::uint32_t flags = 0;
  {
    std::lock_guard lock(submit_mutex);
    const bool admitted = state == phase::running || (fed && state == phase::closed && feeds != 0);
    if (!admitted) throw_not_running(state);
    const auto* known = std::get_if<std::uint32_t>(&function);
    function_id = known ? *known : function_id_locked(std::get<task_function_ref>(function));
    id = next_task.load(std::memory_order_relaxed);
    next_task.store(id + 1, std::memory_order_release);  // only submitters write it, under this lock
    task->set_task_id(id);
    if (const std::int64_t limit = task->time_limit().count(); limit > 0) {
      std::int64_t shortest = shortest_task_limit_ns.load(std::memory_order_relaxed);
      if (shortest == 0 || limit < shortest) {
        shortest_task_limit_ns.store(limit, std::memory_order_relaxed);  // written under this lock only
        wake_monitor();                                                  // to poll at least this often from now on
      }
    }
    if (board->enter(id)) flags |= task_header::on_board;
    submitted.push(id, std::move(task));
  }
  const task_header h{id, function_id, flags};
  std::memcpy(message.data(), &h, sizeof h);
  try {
    tasks->put_one(message, deadline::never());
  } catch (...) {
    bool taken;
    {
      std::lock_guard lock(mutex);
      board->forget(id);
      taken = pending_locked().take(id) != nullptr;
    }
    if (taken) mark_done(1);  // never queued: settled here
    throw;
  }
}

bool pool_core::cancel(std::uint64_t task) {
  impl& p = *impl_;
  p.check_owner("cancel");
  std::shared_ptr<task_state> state;
  {
    std::lock_guard lock(p.mutex);
    // Pending and queued: a settled task's word may serve a newer one.
    if (task == 0) return false;
    pending_tasks& pending = p.pending_locked();
    if (!pending.contains(task) || !p.board->cancel(task)) return false;
    state = pending.take(task);
  }
  state->fail(std::make_exception_ptr(cancelled_error(
      "mproc::async_result::get: the task was cancelled before a worker started it (async_result::cancel)")));
  p.mark_done(1);
  return true;
}

void pool_core::cancel_pending() {
  impl& p = *impl_;
  p.check_owner("cancel_pending");
  const auto error = std::make_exception_ptr(cancelled_error(
      "mproc::async_result::get: the task was cancelled before a worker started it (pool::cancel_pending)"));
  const auto taken = p.take_queued_tasks();
  if (taken.empty()) return;
  for (const auto& state : taken) state->fail(error);
  p.mark_done(taken.size());
  // A state with callbacks publishes once they ran on the result thread: return after.
  if (impl::on_result_thread()) return;
  std::promise<void> published;
  p.post_work([&published] { published.set_value(); });
  published.get_future().wait();
}

bool pool_core::running(std::uint64_t task) const noexcept {
  if (task == 0) return false;
  for (unsigned k = 0; k < impl_->processes; ++k) {
    if ((impl_->claims->task(k) & ~task_claims::condemned) == task) return true;
  }
  return false;
}

void pool_core::begin_feed() {
  impl& p = *impl_;
  p.check_owner("apply");
  std::lock_guard lock(p.submit_mutex);
  if (p.state != impl::phase::running) throw_not_running(p.state);
  ++p.feeds;
}

void pool_core::end_feed() noexcept {
  impl& p = *impl_;
  {
    std::lock_guard lock(p.submit_mutex);
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
  impl_->check_owner("then");
  impl_->post_work(std::move(work));
}

void pool_core::pump_results(function_ref<bool()> done, std::chrono::nanoseconds budget) {
  impl_->check_owner("get");
  impl_->pump_results(done, budget);
}

bool pool_core::on_result_thread() noexcept { return impl::on_result_thread(); }

void pool_core::close() {
  impl& p = *impl_;
  p.check_owner("close");
  {
    std::lock_guard submit_lock(p.submit_mutex);  // first, as everywhere
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
  p.check_owner("terminate");
  std::vector<std::shared_ptr<task_state>> failed;
  {
    std::lock_guard submit_lock(p.submit_mutex);  // first, as everywhere
    std::lock_guard lock(p.mutex);
    if (p.state == impl::phase::terminated) return;
    p.state = impl::phase::terminated;
    p.pending_locked().take_all([&](std::shared_ptr<task_state> s) { failed.push_back(std::move(s)); });
    for (auto& w : p.workers) p.kill_worker(w);
  }
  try {
    p.request(command_kind::kill_all);
  } catch (...) {
  }
  p.fail_all(std::move(failed), "mproc::async_result::get: the pool was terminated before the task finished");
}

void pool_core::join() {
  impl& p = *impl_;
  p.check_owner("join");
  bool closed;  // read under the lock: the monitor thread sets `terminated` if the zygote dies
  {
    std::unique_lock lock(p.mutex);
    if (p.state == impl::phase::running)
      throw error("mproc::pool::join: the pool still runs; call close() or terminate() first");
    if (p.state == impl::phase::closed) {
      p.in_flight_changed.wait(
          lock, [&] { return p.state == impl::phase::terminated || (p.in_flight() == 0 && p.retired == p.processes); });
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
    p.in_flight_changed.wait(lock, [&] { return p.in_flight() == 0; });
  }
  p.shut_down_threads();
}

}  // namespace mproc::detail
