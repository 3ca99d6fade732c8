// One thread that runs posted work in order: where a remote pool's states complete and
// its callbacks run (on_callback_thread), as on mproc::pool's result thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>

#include "mproc/detail/pool/task_host.hpp"

namespace mproc::detail {

class callback_thread {
 public:
  callback_thread() : thread_([this] { run(); }) {}
  ~callback_thread() { stop(); }
  callback_thread(const callback_thread&) = delete;
  callback_thread& operator=(const callback_thread&) = delete;

  // After stop(), or on this thread itself while it stops, work runs on the caller.
  void post(std::function<void()> work) {
    {
      std::lock_guard lock(mutex_);
      if (!stopped_) {
        work_.push_back(std::move(work));
        ready_.notify_one();
        return;
      }
    }
    work();
  }
  // Runs everything posted so far, then ends the thread. Idempotent; not from the thread.
  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      ready_.notify_one();
    }
    if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
  }

 private:
  void run() {
    on_callback_thread() = true;
    std::unique_lock lock(mutex_);
    for (;;) {
      ready_.wait(lock, [&] { return !work_.empty() || stopping_; });
      if (work_.empty()) break;
      auto work = std::move(work_.front());
      work_.pop_front();
      lock.unlock();
      try {
        work();
      } catch (...) {  // posted work reports its own errors
      }
      lock.lock();
    }
    stopped_ = true;
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> work_;
  bool stopping_ = false;
  bool stopped_ = false;
  std::thread thread_;
};

}  // namespace mproc::detail
