#include "mpi/root_core.hpp"

#include <cstdio>
#include <cstring>
#include <string>
#include <utility>

#include "mpi/mpi_wire.hpp"
#include "mproc/error.hpp"
#include "pool/remote_runner.hpp"

namespace mproc::detail {

// The local pool's side of a root task: hands the outcome to the root's entry.
class root_core::relay final : public task_state {
 public:
  relay(std::weak_ptr<root_core> root, std::uint64_t id) : root_(std::move(root)), id_(id) {}
  void complete(std::span<const std::byte> bytes) noexcept override {
    if (auto state = settle()) state->complete(bytes);
  }
  void fail(std::exception_ptr error) noexcept override {
    if (auto state = settle()) state->fail(std::move(error));
  }

 private:
  std::shared_ptr<task_state> settle() noexcept {
    auto root = root_.lock();
    return root ? root->settle(id_) : nullptr;
  }
  std::weak_ptr<root_core> root_;
  std::uint64_t id_;
};

root_core::root_core(std::shared_ptr<pool_core> local, const std::vector<unsigned>& rank_workers, unsigned window)
    : local_(std::move(local)) {
  for (unsigned w : rank_workers) {
    workers_ += w;
    capacity_.push_back(window != 0 ? window : automatic_window(w));
  }
  // With no other rank, nothing is gained by holding tasks back on the root.
  if (capacity_.size() == 1) capacity_[0] = ~0U;
  in_flight_.assign(capacity_.size(), 0);
  link_thread_ = std::thread([this] { communicate(); });
}

root_core::~root_core() {
  try {
    if (!joined_) {
      terminate();
      join();
    }
  } catch (...) {
  }
}

std::uint32_t root_core::function_id(task_invoker invoker, generic_function function) {
  const std::pair key{reinterpret_cast<std::uintptr_t>(invoker), reinterpret_cast<std::uintptr_t>(function)};
  {
    std::lock_guard lock(mutex_);
    if (auto it = function_ids_.find(key); it != function_ids_.end()) return it->second;
  }
  // Registered by now (before main), unless it is a function pointer without MPROC_REMOTE.
  const auto table = registry_table();
  const remote_function f{table->invoker_index(invoker), table->function_index(function),
                          local_->function_id(invoker, function)};
  std::lock_guard lock(mutex_);
  if (auto it = function_ids_.find(key); it != function_ids_.end()) return it->second;
  const auto id = static_cast<std::uint32_t>(functions_.size());
  functions_.push_back(f);
  function_ids_.emplace(key, id);
  return id;
}

void root_core::submit(std::uint32_t function_id, std::span<std::byte> message, std::shared_ptr<task_state> state,
                       bool fed) {
  submit_task(function_id, message, std::move(state), fed);
}

void root_core::submit(task_function_ref function, std::span<std::byte> message, std::shared_ptr<task_state> state) {
  submit_task(function_id(function.invoker, function.function), message, std::move(state), false);
}

void root_core::submit_task(std::uint32_t function_id, std::span<std::byte> message, std::shared_ptr<task_state> state,
                            bool fed) {
  std::vector<local_submit> local;
  std::uint64_t id = 0;
  std::uint32_t local_function = 0;
  bool here = false;
  {
    std::lock_guard lock(mutex_);
    if (function_id >= functions_.size())
      throw error("mproc::mpi::pool: a task names a function id it was never given");
    const bool admitted = state_ == phase::running || (fed && state_ == phase::closed && feeds_ != 0);
    if (!admitted)
      throw closed_error(
          state_ == phase::closed
              ? "mproc::mpi::pool::apply: the pool is closed and takes no new tasks; submit before close()"
              : "mproc::mpi::pool::apply: the pool was terminated and takes no new tasks");
    id = next_id_++;
    state->set_task_id(id);
    entry& e = entries_[id];
    e.state = std::move(state);
    e.function_id = function_id;
    const int target = pick_target();
    if (target == 0) {
      ++in_flight_[0];
      e.target = 0;
      local_function = functions_[function_id].local_id;
      here = true;  // straight from `message`, with the lock let go
    } else {
      e.message.assign(message.begin(), message.end());
      if (target < 0) {
        backlog_.push_back(id);
      } else {
        dispatch_locked(id, e, target, local);
      }
    }
  }
  if (here) {
    try {
      run_locally(id, local_function, message);
    } catch (...) {
      settle(id);
      throw;
    }
  }
}

int root_core::pick_target() const noexcept {
  int best = -1;
  for (int t = 0; t < static_cast<int>(capacity_.size()); ++t) {
    if (in_flight_[t] >= capacity_[t]) continue;
    // The lowest share of its window in use; the local pool first among equals.
    if (best < 0 || std::uint64_t{in_flight_[t]} * capacity_[best] < std::uint64_t{in_flight_[best]} * capacity_[t])
      best = t;
  }
  return best;
}

void root_core::dispatch_locked(std::uint64_t id, entry& e, int target, std::vector<local_submit>& local) {
  ++in_flight_[target];
  e.target = target;
  if (target == 0) {
    local.push_back({id, functions_[e.function_id].local_id, std::move(e.message)});
    return;
  }
  const remote_function& f = functions_[e.function_id];
  const remote_task_header h{id, f.invoker, f.function};
  std::memcpy(e.message.data(), &h, sizeof h);
  outbox_.push_back({target, mpi_wire::task, std::move(e.message)});
  wake_link_.notify_one();
}

void root_core::refill_locked(std::vector<local_submit>& local) {
  while (!backlog_.empty()) {
    const auto it = entries_.find(backlog_.front());
    if (it == entries_.end() || it->second.target != queued) {  // cancelled meanwhile
      backlog_.pop_front();
      continue;
    }
    const int target = pick_target();
    if (target < 0) return;
    backlog_.pop_front();
    dispatch_locked(it->first, it->second, target, local);
  }
}

void root_core::run_locally(std::uint64_t id, std::uint32_t local_function, std::span<std::byte> message) {
  auto r = std::make_shared<relay>(weak_from_this(), id);
  local_->submit(local_function, message, r);
  std::lock_guard lock(mutex_);
  if (auto it = entries_.find(id); it != entries_.end()) it->second.local_id = r->task_id();
}

void root_core::submit_locally(std::vector<local_submit>& local) noexcept {
  while (!local.empty()) {
    local_submit s = std::move(local.back());
    local.pop_back();
    try {
      run_locally(s.id, s.local_function, std::span(s.message));
    } catch (...) {
      if (auto state = finish(s.id, local)) state->fail(std::current_exception());
    }
  }
}

std::shared_ptr<task_state> root_core::finish(std::uint64_t id, std::vector<local_submit>& local) {
  std::lock_guard lock(mutex_);
  const auto it = entries_.find(id);
  if (it == entries_.end()) return nullptr;
  auto state = std::move(it->second.state);
  if (it->second.target >= 0) --in_flight_[it->second.target];
  entries_.erase(it);
  if (state_ != phase::terminated) refill_locked(local);
  changed_.notify_all();
  return state;
}

std::shared_ptr<task_state> root_core::settle(std::uint64_t id) noexcept {
  std::vector<local_submit> local;
  auto state = finish(id, local);
  submit_locally(local);
  return state;
}

void root_core::deliver_remote(const remote_result_header& header, std::vector<std::byte> reply) {
  // On the local pool's result thread, where every state completes.
  local_->post([self = shared_from_this(), header, reply = std::move(reply)] {
    if (auto state = self->settle(header.id)) deliver_remote_reply(*state, header, reply);
    // else cancelled or terminated meanwhile
  });
}

void root_core::begin_feed() {
  std::lock_guard lock(mutex_);
  if (state_ != phase::running)
    throw closed_error("mproc::mpi::pool::map: the pool is closed or terminated and takes no new tasks");
  ++feeds_;
}

void root_core::end_feed() noexcept {
  std::lock_guard lock(mutex_);
  --feeds_;
  changed_.notify_all();
}

bool root_core::cancel(std::uint64_t task) {
  std::shared_ptr<task_state> state;
  std::uint64_t local_id = 0;
  {
    std::lock_guard lock(mutex_);
    const auto it = entries_.find(task);
    if (it == entries_.end()) return false;
    if (it->second.target == queued) {
      state = std::move(it->second.state);
      entries_.erase(it);  // its backlog place is skipped
      changed_.notify_all();
    } else if (it->second.target == 0) {
      local_id = it->second.local_id;
    }
  }
  if (state) {
    state->fail(std::make_exception_ptr(cancelled_error(
        "mproc::async_result::get: the task was cancelled before a worker started it (async_result::cancel)")));
    return true;
  }
  // The relay fails the task's state with cancelled_error before this returns true.
  return local_id != 0 && local_->cancel(local_id);
}

void root_core::cancel_pending() {
  std::vector<std::shared_ptr<task_state>> cancelled;
  {
    std::lock_guard lock(mutex_);
    for (std::uint64_t id : backlog_) {
      const auto it = entries_.find(id);
      if (it == entries_.end() || it->second.target != queued) continue;
      cancelled.push_back(std::move(it->second.state));
      entries_.erase(it);
    }
    backlog_.clear();
    changed_.notify_all();
  }
  for (auto& state : cancelled)
    state->fail(std::make_exception_ptr(cancelled_error(
        "mproc::async_result::get: the task was cancelled before a worker started it (pool::cancel_pending)")));
  local_->cancel_pending();
}

bool root_core::running(std::uint64_t task) const noexcept {
  std::uint64_t local_id = 0;
  {
    std::lock_guard lock(mutex_);
    const auto it = entries_.find(task);
    if (it == entries_.end() || it->second.target == queued) return false;
    if (it->second.target > 0) return true;  // with another rank: out of reach, so started
    local_id = it->second.local_id;
  }
  return local_id != 0 && local_->running(local_id);
}

void root_core::close() {
  std::lock_guard lock(mutex_);
  if (state_ == phase::running) state_ = phase::closed;
}

void root_core::terminate() {
  std::vector<std::shared_ptr<task_state>> failed;
  {
    std::lock_guard lock(mutex_);
    if (state_ == phase::terminated) return;
    state_ = phase::terminated;
    for (auto& [id, e] : entries_) failed.push_back(std::move(e.state));
    entries_.clear();
    backlog_.clear();
    stopping_ = true;  // the link tells the ranks to kill their workers
    wake_link_.notify_all();
    changed_.notify_all();
  }
  local_->terminate();
  for (auto& state : failed)
    if (state) state->fail(std::make_exception_ptr(closed_error("mproc::mpi::pool: the pool was terminated")));
}

void root_core::join() {
  {
    std::unique_lock lock(mutex_);
    if (joined_) return;
    if (state_ == phase::running)
      throw error("mproc::mpi::pool::join: call close() or terminate() first, as with multiprocessing.Pool");
    changed_.wait(lock, [&] { return state_ == phase::terminated || (feeds_ == 0 && entries_.empty()); });
    stopping_ = true;
    wake_link_.notify_all();
  }
  local_->close();
  local_->join();
  if (link_thread_.joinable()) link_thread_.join();
  std::lock_guard lock(mutex_);
  joined_ = true;
}

void root_core::communicate() noexcept {
  try {
    serve_link();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mproc::mpi::pool: the root lost its link to the other ranks (%s); ending the job\n",
                 e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
}

void root_core::serve_link() {
  const int ranks = static_cast<int>(capacity_.size());
  std::vector<bool> stopped(static_cast<std::size_t>(ranks), false);
  int stopped_count = 1;  // the root
  bool stop_sent = false;
  idle_pause pause;
  for (;;) {
    bool worked = false;
    std::vector<outgoing> out;
    bool stopping = false;
    bool terminating = false;
    {
      std::lock_guard lock(mutex_);
      out.swap(outbox_);
      stopping = stopping_;
      terminating = state_ == phase::terminated;
    }
    for (outgoing& o : out) link_.send(o.rank, o.tag, std::move(o.bytes));
    worked = !out.empty();
    if (stopping && !stop_sent) {
      for (int r = 1; r < ranks; ++r) link_.send(r, terminating ? mpi_wire::terminate : mpi_wire::stop, {});
      stop_sent = true;
      worked = true;
    }
    worked = link_.progress_sends() || worked;
    while (auto m = link_.try_receive(MPI_ANY_SOURCE)) {
      worked = true;
      remote_result_header h{};
      if (m->tag == mpi_wire::result && read_remote_result(m->bytes, h)) {
        deliver_remote(h, std::move(m->bytes));
      } else if (m->tag == mpi_wire::stopped && m->source > 0 && m->source < ranks &&
                 !stopped[static_cast<std::size_t>(m->source)]) {
        stopped[static_cast<std::size_t>(m->source)] = true;
        ++stopped_count;
      }
    }
    if (stop_sent && stopped_count == ranks) break;
    if (worked) {
      pause.worked();
    } else {
      pause.pause(mutex_, wake_link_, [&] { return !outbox_.empty(); });
    }
  }
  link_.flush();
}

}  // namespace mproc::detail
