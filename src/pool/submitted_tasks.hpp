// The tasks submitted since the pool's mutex last moved them into `pending`: a hand-off
// from the submitting threads to the holders of the mutex that takes no lock of theirs.
//
// Why: a submit that took the pool's mutex to file its task waited, now and then, for the
// result thread holding it. On a machine with fewer cores than the pool's threads and
// workers, a woken worker preempts that thread in its short critical section, and the
// submitter then slept until the thread ran again: a millisecond and more, in the middle
// of a burst of apply_async. A submit now appends here, and whoever next holds the mutex
// (the result thread before it files results, a cancel, the monitor) takes the entries
// first (pool_core::impl::pending_locked), so the table it reads is complete: a task's
// entry is in before its message is put, so before any result of it can be read.
//
// One producer at a time (submitters hold the pool's submit mutex) and one consumer at a
// time (the pool's mutex): entries sit in blocks, each filled by the producer and read by
// the consumer up to the count the producer published.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>

#include "mproc/detail/pool/pool_core.hpp"

namespace mproc::detail {

class submitted_tasks {
 public:
  submitted_tasks() : head_(new block), tail_(head_) {}
  submitted_tasks(const submitted_tasks&) = delete;
  submitted_tasks& operator=(const submitted_tasks&) = delete;
  ~submitted_tasks() {
    for (block* b = head_; b != nullptr;) delete std::exchange(b, b->next.load(std::memory_order_relaxed));
    delete spare_.load(std::memory_order_relaxed);
  }

  // The producer: appends task `id`.
  void push(std::uint64_t id, std::shared_ptr<task_state> state) {
    if (tail_filled_ == block_size) {
      block* next = spare_.exchange(nullptr, std::memory_order_acquire);
      if (next == nullptr) {
        next = new block;
      } else {
        next->filled.store(0, std::memory_order_relaxed);
        next->next.store(nullptr, std::memory_order_relaxed);
      }
      tail_->next.store(next, std::memory_order_release);
      tail_ = next;
      tail_filled_ = 0;
    }
    tail_->entries[tail_filled_] = {id, std::move(state)};
    tail_->filled.store(++tail_filled_, std::memory_order_release);
  }

  // The consumer: hands every entry published so far to `sink(id, state)`, in order.
  template <class Sink>
  void drain(Sink sink) {
    for (;;) {
      const std::uint32_t filled = head_->filled.load(std::memory_order_acquire);
      while (head_read_ < filled) {
        entry& e = head_->entries[head_read_++];
        sink(e.id, std::move(e.state));
      }
      if (head_read_ < block_size) return;
      block* next = head_->next.load(std::memory_order_acquire);
      if (next == nullptr) return;  // the producer has not started the next block yet
      // The producer left this block for good when it linked the next one.
      delete spare_.exchange(std::exchange(head_, next), std::memory_order_release);
      head_read_ = 0;
    }
  }

 private:
  static constexpr std::uint32_t block_size = 255;
  struct entry {
    std::uint64_t id = 0;
    std::shared_ptr<task_state> state;
  };
  struct block {
    std::atomic<std::uint32_t> filled{0};
    std::atomic<block*> next{nullptr};
    entry entries[block_size];
  };

  block* head_;                         // the consumer's
  std::uint32_t head_read_ = 0;         // the consumer's
  block* tail_;                         // the producer's
  std::uint32_t tail_filled_ = 0;       // the producer's
  std::atomic<block*> spare_{nullptr};  // a drained block, for the producer to reuse
};

}  // namespace mproc::detail
