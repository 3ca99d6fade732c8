// mproc::thread_pool's core: the queue, the worker threads, the callback thread.
#include "mproc/detail/pool/thread_pool_core.hpp"

#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "mproc/error.hpp"
#include "mproc/process.hpp"

namespace mproc::detail {

struct thread_pool_core::impl {
  struct queued {
    std::shared_ptr<task_state> state;
    std::function<void()> job;
  };

  std::function<void()> initializer;
  unsigned count = 0;

  mutable std::mutex mutex;  // guards everything below
  enum class phase { running, closed, terminated } state = phase::running;
  std::map<std::uint64_t, queued> queue;  // by id: first in, first out
  std::set<std::uint64_t> running_tasks;
  std::uint64_t next_task = 1;
  std::size_t in_flight = 0;  // submitted and not yet settled
  unsigned feeds = 0;
  std::condition_variable work_or_end;  // a job queued, or the pool ends
  std::condition_variable settled;      // in_flight fell

  std::deque<std::function<void()>> posted;
  bool callbacks_stop = false;
  std::condition_variable posted_cv;

  std::vector<std::thread> workers;
  std::thread callback_thread;
  bool joined = false;

  // A thread cannot be replaced as a process worker is: one whose initializer threw says
  // so and serves all the same, so that the queued tasks never wait for a thread that left.
  static void report_initializer_error(const std::string& what) noexcept {
    try {
      std::fputs(("mproc::thread_pool: an initializer threw: " + what + "; the thread serves tasks anyway\n").c_str(),
                 stderr);
    } catch (...) {
    }
  }

  bool retiring() const { return state == phase::terminated || (state == phase::closed && feeds == 0); }

  void worker_loop() {
    if (initializer) {
      try {
        initializer();
      } catch (const std::exception& e) {
        report_initializer_error(e.what());
      } catch (...) {
        report_initializer_error("an exception not derived from std::exception");
      }
    }
    for (;;) {
      queued next;
      std::uint64_t id = 0;
      {
        std::unique_lock lock(mutex);
        work_or_end.wait(lock, [&] { return !queue.empty() || retiring(); });
        if (queue.empty()) return;
        auto first = queue.begin();
        id = first->first;
        next = std::move(first->second);
        queue.erase(first);
        running_tasks.insert(id);
      }
      next.job();  // settles next.state, exceptions included
      {
        std::lock_guard lock(mutex);
        running_tasks.erase(id);
        --in_flight;
      }
      settled.notify_all();
    }
  }

  void callback_loop() {
    on_callback_thread() = true;
    for (;;) {
      std::function<void()> work;
      {
        std::unique_lock lock(mutex);
        posted_cv.wait(lock, [&] { return !posted.empty() || callbacks_stop; });
        if (posted.empty()) return;
        work = std::move(posted.front());
        posted.pop_front();
      }
      try {
        work();
      } catch (...) {  // posted work reports its own errors
      }
    }
  }

  // Fails `failed` with `error` on the calling thread, then counts them settled.
  void fail(std::vector<std::shared_ptr<task_state>>& failed, const std::exception_ptr& error) {
    for (const auto& s : failed) s->fail(error);
    {
      std::lock_guard lock(mutex);
      in_flight -= failed.size();
    }
    settled.notify_all();
  }

  std::vector<std::shared_ptr<task_state>> take_queue() {
    std::vector<std::shared_ptr<task_state>> taken;
    for (auto& [id, q] : queue) taken.push_back(std::move(q.state));
    queue.clear();
    return taken;
  }
};

thread_pool_core::thread_pool_core(unsigned threads, std::function<void()> initializer)
    : impl_(std::make_unique<impl>()) {
  impl& p = *impl_;
  p.count = threads != 0 ? threads : cpu_count();
  p.initializer = std::move(initializer);
  p.callback_thread = std::thread([&p] { p.callback_loop(); });
  try {
    for (unsigned k = 0; k < p.count; ++k) p.workers.emplace_back([&p] { p.worker_loop(); });
  } catch (...) {
    terminate();
    join();
    throw;
  }
}

thread_pool_core::~thread_pool_core() {
  try {
    terminate();
    join();
  } catch (...) {
  }
}

unsigned thread_pool_core::size() const noexcept { return impl_->count; }

void thread_pool_core::submit(std::shared_ptr<task_state> state, std::function<void()> job, bool fed) {
  impl& p = *impl_;
  {
    std::lock_guard lock(p.mutex);
    const bool admitted = p.state == impl::phase::running || (fed && p.state == impl::phase::closed && p.feeds != 0);
    if (!admitted) {
      throw closed_error(
          p.state == impl::phase::closed
              ? "mproc::thread_pool::apply: the pool is closed and takes no new tasks; submit before close()"
              : "mproc::thread_pool::apply: the pool was terminated and takes no new tasks; make a new pool");
    }
    const std::uint64_t id = p.next_task++;
    state->set_task_id(id);
    p.queue.emplace(id, impl::queued{std::move(state), std::move(job)});
    ++p.in_flight;
  }
  p.work_or_end.notify_one();
}

void thread_pool_core::begin_feed() {
  impl& p = *impl_;
  std::lock_guard lock(p.mutex);
  if (p.state != impl::phase::running) {
    throw closed_error("mproc::thread_pool::imap: the pool is closed or terminated and takes no new tasks");
  }
  ++p.feeds;
}

void thread_pool_core::end_feed() noexcept {
  impl& p = *impl_;
  {
    std::lock_guard lock(p.mutex);
    --p.feeds;
  }
  p.work_or_end.notify_all();  // closed, and this was the last feed: the threads retire
}

bool thread_pool_core::cancel(std::uint64_t task) {
  impl& p = *impl_;
  std::vector<std::shared_ptr<task_state>> cancelled;
  {
    std::lock_guard lock(p.mutex);
    auto it = p.queue.find(task);
    if (it == p.queue.end()) return false;
    cancelled.push_back(std::move(it->second.state));
    p.queue.erase(it);
  }
  p.fail(cancelled, std::make_exception_ptr(
                        cancelled_error("mproc::async_result::get: the task was cancelled before a thread started it "
                                        "(async_result::cancel)")));
  return true;
}

bool thread_pool_core::running(std::uint64_t task) const noexcept {
  std::lock_guard lock(impl_->mutex);
  return impl_->running_tasks.contains(task);
}

void thread_pool_core::post(std::function<void()> work) {
  impl& p = *impl_;
  {
    std::unique_lock lock(p.mutex);
    if (p.callbacks_stop) {  // shut down: nobody else would run it
      lock.unlock();
      work();
      return;
    }
    p.posted.push_back(std::move(work));
  }
  p.posted_cv.notify_one();
}

void thread_pool_core::cancel_pending() {
  impl& p = *impl_;
  std::vector<std::shared_ptr<task_state>> taken;
  {
    std::lock_guard lock(p.mutex);
    taken = p.take_queue();
  }
  if (taken.empty()) return;
  p.fail(taken, std::make_exception_ptr(
                    cancelled_error("mproc::async_result::get: the task was cancelled before a thread started it "
                                    "(thread_pool::cancel_pending)")));
}

void thread_pool_core::close() {
  impl& p = *impl_;
  {
    std::lock_guard lock(p.mutex);
    if (p.state != impl::phase::running) return;
    p.state = impl::phase::closed;
  }
  p.work_or_end.notify_all();
}

void thread_pool_core::terminate() {
  impl& p = *impl_;
  std::vector<std::shared_ptr<task_state>> taken;
  {
    std::lock_guard lock(p.mutex);
    if (p.state == impl::phase::terminated) return;
    p.state = impl::phase::terminated;
    taken = p.take_queue();
  }
  p.work_or_end.notify_all();
  if (!taken.empty()) {
    p.fail(taken, std::make_exception_ptr(closed_error(
                      "mproc::async_result::get: the thread pool was terminated before the task started")));
  }
}

void thread_pool_core::join() {
  impl& p = *impl_;
  {
    std::unique_lock lock(p.mutex);
    if (p.joined) return;
    if (p.state == impl::phase::running) {
      throw error("mproc::thread_pool::join: the pool still runs; call close() or terminate() first");
    }
    p.joined = true;
  }
  for (auto& t : p.workers) {
    if (t.joinable()) t.join();
  }
  {
    std::unique_lock lock(p.mutex);
    p.settled.wait(lock, [&] { return p.in_flight == 0; });
    p.callbacks_stop = true;  // after every callback posted so far
  }
  p.posted_cv.notify_all();
  if (p.callback_thread.joinable() && p.callback_thread.get_id() != std::this_thread::get_id())
    p.callback_thread.join();
}

}  // namespace mproc::detail
