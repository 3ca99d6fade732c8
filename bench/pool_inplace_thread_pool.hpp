// The second std::thread pool peer of the async rows (bench/pool_bench.cpp,
// "thread_pool_inplace"): what a C++ program writes when it runs a burst of one kind of task
// on threads and wants no std::future, no std::function and no allocation per task.
//
// A burst of up to `capacity` tasks of one function fn(A) -> R: task i's argument and
// result live in slot i of an array allocated (and touched) by start(), before the burst;
// the queue of tasks is the run of indices [taken, submitted), two counters guarded by a
// mutex and a condition variable. submit(a) writes the argument into the next slot,
// advances `submitted` and notifies one thread; a thread takes the index `taken++`, runs fn
// on the slot's argument outside the lock, writes the result into the slot and raises the
// slot's ready flag. get(i) returns slot i's result once its flag is up: it reads the flag,
// and only when it is still down sleeps on a second condition variable, after naming the
// slot it waits for; the thread that finishes that slot notifies it when it takes the lock
// for its next task, which it does anyway. So, as in bench/pool_thread_pool.hpp, each
// hand-off to a sleeping thread wakes it, and nothing spins; unlike it, a task costs no heap
// allocation and no shared state.
//
// Contract: start(), submit() and get() are called from one thread, the owner. start()
// needs every task of the previous burst finished (got); a burst takes at most `capacity`
// tasks. fn must not throw (an exception escaping a std::thread ends the program). The
// destructor runs the tasks still queued, then joins the threads.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace bench {

template <class A, class R>
class inplace_thread_pool {
 public:
  using function = R (*)(A);

  explicit inplace_thread_pool(unsigned threads) {
    threads_.reserve(threads);
    for (unsigned i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
  }
  inplace_thread_pool(const inplace_thread_pool&) = delete;
  inplace_thread_pool& operator=(const inplace_thread_pool&) = delete;

  ~inplace_thread_pool() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    work_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

  // Starts a burst of at most `capacity` tasks of fn: the slots are allocated if the last
  // burst's were fewer, and every ready flag is lowered (which touches them all, so that the
  // burst itself takes no page faults).
  void start(function fn, std::size_t capacity) {
    std::lock_guard lock(mutex_);
    if (capacity > capacity_) {
      slots_ = std::make_unique<slot[]>(capacity);
      capacity_ = capacity;
    }
    for (std::size_t i = 0; i < capacity; ++i) slots_[i].ready.store(false, std::memory_order_relaxed);
    fn_ = fn;
    burst_capacity_ = capacity;
    next_ = submitted_ = taken_ = 0;
  }

  // Queues fn(a) as the burst's next task; returns its index, the slot get() reads.
  std::size_t submit(A a) {
    if (next_ == burst_capacity_) throw std::length_error("inplace_thread_pool: burst is full");
    const std::size_t i = next_++;
    slots_[i].arg = a;  // published to the threads by the unlock below
    {
      std::lock_guard lock(mutex_);
      submitted_ = next_;
    }
    work_.notify_one();
    return i;
  }

  // Task i's result, once it has run (i: an index submit() returned in this burst).
  R get(std::size_t i) {
    slot& s = slots_[i];
    if (!s.ready.load(std::memory_order_acquire)) {
      std::unique_lock lock(mutex_);
      waiting_for_ = i;
      done_.wait(lock, [&] { return s.ready.load(std::memory_order_acquire); });
      waiting_for_ = nobody;
    }
    return s.result;
  }

 private:
  struct slot {
    A arg{};
    R result{};
    std::atomic<bool> ready{false};
  };

  static constexpr std::size_t nobody = static_cast<std::size_t>(-1);

  void run() {
    std::unique_lock lock(mutex_);
    for (;;) {
      work_.wait(lock, [this] { return stopping_ || taken_ < submitted_; });
      if (taken_ == submitted_) return;  // stopping, and nothing left to run
      const std::size_t i = taken_++;
      slot& s = slots_[i];
      const function fn = fn_;
      lock.unlock();
      s.result = fn(s.arg);
      s.ready.store(true, std::memory_order_release);
      // After this store the slot is the owner's: only the pool's own members are used.
      // waiting_for_ is set under the mutex before the owner checks the flag and sleeps, so
      // either the owner sees the flag, or the check below sees the owner waiting.
      lock.lock();
      if (waiting_for_ == i) done_.notify_one();
    }
  }

  std::mutex mutex_;
  std::condition_variable work_;  // the threads wait for a task (or stopping_)
  std::condition_variable done_;  // the owner waits for slot waiting_for_
  std::unique_ptr<slot[]> slots_;
  std::size_t capacity_ = 0;        // slots allocated
  std::size_t burst_capacity_ = 0;  // slots of this burst
  function fn_ = nullptr;
  std::size_t next_ = 0;       // the owner's own count of submitted tasks
  std::size_t submitted_ = 0;  // tasks queued so far in this burst (guarded by mutex_)
  std::size_t taken_ = 0;      // tasks taken by a thread (guarded by mutex_)
  std::size_t waiting_for_ = nobody;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace bench
