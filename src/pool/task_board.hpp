// Which of the pool's queued tasks may still be cancelled, kept in shared memory so that a
// cancel and a worker's start of the same task have exactly one outcome: the task runs,
// or it is cancelled and never runs, never both and never neither.
//
// A task gets a word when it is submitted (slot: its id modulo the board's size), unless
// that word still serves an earlier task; such a task cannot be cancelled on its own (the
// task header says which, task_header::on_board). The word holds the task's id and its
// state: queued, started, cancelled. The parent cancels with a compare-and-swap from
// queued to cancelled; a worker, inside the sink of its take (before the take commits),
// swaps queued to started and runs the task, or finds it cancelled, clears the word and
// skips it. A worker that dies after starting, before its take commits, leaves the task
// queued with its word at started: the next worker runs it, and it can no longer be
// cancelled, which is true to what happened.
//
// A word is free for a new task when it is empty. The parent empties a task's word when it
// settles the task (settle), unless the task was cancelled: a cancelled word stays until
// the worker that takes the message (or the parent, draining the queue) clears it, else a
// new task in that slot would make the worker run the cancelled one.
//
// Thread safety: the parent enters words under the pool's submit mutex, and cancels,
// settles and forgets them under its mutex; workers swap them. Every change but enter's
// store of an empty word is a compare-and-swap that names its task.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace mproc::detail {

class task_board {
 public:
  static constexpr std::size_t size = 16384;  // words; 128 KiB, touched as ids advance
  struct memory {
    std::atomic<std::uint64_t> words[size];
  };

  explicit task_board(memory* m) noexcept : words_(m->words) {}

  // The parent, submitting task `id`: takes its word if free. True when the task is on
  // the board.
  bool enter(std::uint64_t id) noexcept {
    std::atomic<std::uint64_t>& w = word(id);
    if (w.load(std::memory_order_acquire) != 0) return false;
    w.store(id << state_bits | queued, std::memory_order_relaxed);  // published by the put
    return true;
  }
  // The parent: whether it cancelled task `id`, which had not started.
  bool cancel(std::uint64_t id) noexcept {
    std::uint64_t expected = id << state_bits | queued;
    return word(id).compare_exchange_strong(expected, id << state_bits | cancelled, std::memory_order_acq_rel);
  }
  // The parent, for a task it took out of the queue itself (or never queued): frees its word.
  void forget(std::uint64_t id) noexcept {
    std::atomic<std::uint64_t>& w = word(id);
    std::uint64_t old = w.load(std::memory_order_acquire);
    if (old >> state_bits == id) w.compare_exchange_strong(old, 0, std::memory_order_acq_rel);
  }
  // The parent, for task `id` now settled: frees its word, unless it names another task or
  // the task was cancelled (see above). Relaxed: only the word's own order of changes
  // matters (no data travels with its emptying), and an acquire-release exchange on every
  // word made ThreadSanitizer keep a sync object for each, ~1 KB a task.
  void settle(std::uint64_t id) noexcept {
    std::atomic<std::uint64_t>& w = word(id);
    std::uint64_t old = w.load(std::memory_order_relaxed);
    if (old >> state_bits == id && state_of(old) != cancelled)
      w.compare_exchange_strong(old, 0, std::memory_order_relaxed);
  }
  // A worker, about to take task `id`: false when the task was cancelled (the word is then
  // freed, and the worker must not run it); else it is started.
  bool start(std::uint64_t id) noexcept {
    std::atomic<std::uint64_t>& w = word(id);
    std::uint64_t expected = id << state_bits | queued;
    if (w.compare_exchange_strong(expected, id << state_bits | started, std::memory_order_acq_rel)) return true;
    if (expected != (id << state_bits | cancelled)) return true;  // started by a worker that died
    w.compare_exchange_strong(expected, 0, std::memory_order_acq_rel);
    return false;
  }

 private:
  static constexpr unsigned state_bits = 2;
  static constexpr std::uint64_t queued = 1;
  static constexpr std::uint64_t started = 2;
  static constexpr std::uint64_t cancelled = 3;
  static std::uint64_t state_of(std::uint64_t w) noexcept { return w & ((1u << state_bits) - 1); }
  std::atomic<std::uint64_t>& word(std::uint64_t id) noexcept { return words_[id % size]; }

  std::atomic<std::uint64_t>* words_;
};

}  // namespace mproc::detail
