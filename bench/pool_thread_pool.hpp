// The std::thread pool that the apply and async rows measure mproc::pool against: what a
// C++ program uses when it needs parallelism but no isolation.
//
// Written the common way, not tuned: N threads take tasks from one std::deque guarded by a
// mutex and a condition variable; submit(f) wraps f in a std::packaged_task (a promise
// and its future), queues it, notifies one thread and returns the future. So
// submit(f).get() is a blocking round trip, as pool::apply is: the submitter sleeps on the
// future, the worker sleeps on the condition variable, and each hand-off wakes a sleeping
// thread. Nothing spins.
//
// Thread safety: submit may be called from any thread. The destructor runs the tasks
// still queued, then joins the threads.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace bench {

class thread_pool {
 public:
  explicit thread_pool(unsigned threads) {
    threads_.reserve(threads);
    for (unsigned i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
  }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  ~thread_pool() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

  // Queues f() for one of the threads; the future gets its result or its exception.
  template <class F>
  std::future<std::invoke_result_t<F&>> submit(F f) {
    using R = std::invoke_result_t<F&>;
    // std::function needs a copyable target, a packaged_task is move-only: share it.
    auto task = std::make_shared<std::packaged_task<R()>>(std::move(f));
    std::future<R> result = task->get_future();
    {
      std::lock_guard lock(mutex_);
      tasks_.emplace_back([task] { (*task)(); });
    }
    ready_.notify_one();
    return result;
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) return;  // stopping, and nothing left to run
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace bench
