// The result thread: reads the results channel, completes or fails each task in the order
// its result came, and runs the work posted to it (callbacks, failures found elsewhere).
// A caller blocked on a result may take its place for a while (pump_results). Posted work
// and callers that want to read reach the thread one way: a flag it checks, then
// wake_consumers() on the results channel, which makes its read return.
#include <cstring>
#include <thread>

#include "mproc/error.hpp"
#include "pool/pool_impl.hpp"

namespace mproc::detail {

void pool_core::impl::put_result(const result_header& header, std::span<const std::byte> payload) {
  std::vector<std::byte> message(sizeof header + payload.size());
  std::memcpy(message.data(), &header, sizeof header);
  if (!payload.empty()) std::memcpy(message.data() + sizeof header, payload.data(), payload.size());
  results->put_one(message, deadline::never());
}

// Completes or fails `state` as its result says.
void pool_core::impl::deliver(task_state& state, const result_header& header, std::span<const std::byte> payload) {
  switch (header.kind) {
    case result_kind::ok:
      state.complete(payload);
      break;
    case result_kind::exception:
      state.fail(decode_exception(payload));
      break;
    case result_kind::timed_out:
      state.fail(std::make_exception_ptr(
          timeout_error("mproc::async_result::get: the task ran longer than the pool's task_timeout, so its worker "
                        "was killed and replaced; raise task_timeout if the task needs longer")));
      break;
    default:
      state.fail(std::make_exception_ptr(worker_lost(
          (header.exitcode < 0 ? "mproc::async_result::get: the worker running the task was killed by signal " +
                                     std::to_string(-header.exitcode)
                               : "mproc::async_result::get: the worker running the task exited with code " +
                                     std::to_string(header.exitcode)) +
              "; the pool replaced the worker, and only this task failed",
          header.exitcode)));
      break;
  }
}

// join() waits for in_flight() to reach 0, so only that change is told; under the mutex,
// so that a join() that saw it above 0 is asleep by then. A submit that the read of
// next_task misses makes in_flight() above 0 again: a spurious notice at worst.
void pool_core::impl::mark_done(std::size_t count) {
  const std::uint64_t now_settled = settled.fetch_add(count, std::memory_order_acq_rel) + count;
  if (now_settled != next_task.load(std::memory_order_acquire) - 1) return;
  std::lock_guard lock(mutex);
  in_flight_changed.notify_all();
}

// Runs the posted work in order; the caller holds `reader` (work may dispatch failures).
void pool_core::impl::run_posted() {
  // Set under the mutex before the work is posted, and read by every pass of the result
  // loop: an empty queue costs it no lock.
  if (!work_posted.load(std::memory_order_acquire)) return;
  for (;;) {
    std::function<void()> work;
    {
      std::lock_guard lock(mutex);
      if (posted.empty()) {
        work_posted.store(false, std::memory_order_relaxed);
        return;
      }
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
bool& pool_core::impl::on_result_thread() { return on_callback_thread(); }

bool pool_core::impl::result_thread_called_away() const noexcept {
  return work_posted.load(std::memory_order_relaxed) || helpers.load(std::memory_order_relaxed) != 0 ||
         result_stop.load(std::memory_order_relaxed);
}

// Reads up to 64 results (waiting until `until`) and dispatches them; the caller holds
// `reader`. Returns whether it read anything. The result thread's read also ends when it is
// called away (result_thread_called_away).
bool pool_core::impl::read_results(deadline until) {
  struct batch {
    std::vector<std::byte> bytes;
    std::vector<std::size_t> ends;
  };
  thread_local batch b;
  b.bytes.clear();
  b.ends.clear();
  const auto called_away = [this] { return result_thread_called_away(); };
  get_options options;
  if (on_result_thread()) options.stop_waiting = called_away;
  const std::size_t n = results->get(
      [](std::span<const std::byte> message) {
        b.bytes.insert(b.bytes.end(), message.begin(), message.end());
        b.ends.push_back(b.bytes.size());
      },
      64, until, options);
  // One lock for the whole batch: the submitting threads contend for the same mutex.
  struct result {
    result_header header;
    std::span<const std::byte> payload;
    std::shared_ptr<task_state> state;  // null: not pending any more
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
      // Not pending: already failed (its worker was declared lost, or the pool terminated).
      r.state = settle_locked(header->task);
    }
  }
  std::size_t delivered = 0;
  for (result& r : batch_results) {
    if (r.state) {
      deliver(*r.state, r.header, r.payload);
      r.state.reset();
      ++delivered;
    }
  }
  if (delivered != 0) mark_done(delivered);
  return n != 0;
}

void pool_core::impl::result_loop() {
  on_result_thread() = true;
  for (;;) {
    if (helpers.load(std::memory_order_acquire) != 0) {
      // Step aside while callers read the results themselves, running what they post.
      // Their leaving is not signalled (a blocking apply() loop would wake this thread
      // every call): it is seen within a millisecond.
      std::unique_lock lock(mutex);
      while (!result_stop.load(std::memory_order_relaxed) && helpers.load(std::memory_order_acquire) != 0) {
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
    if (result_stop.load(std::memory_order_relaxed)) return;
    read_results(deadline::never());
  }
}

// A caller blocked on one of this pool's results reads the results channel itself until
// `done` or `budget` passes, instead of waiting for the result thread to hand them over.
void pool_core::impl::pump_results(function_ref<bool()> done, std::chrono::nanoseconds budget) {
  // A callback blocking on a result waits, as documented; after shut-down nothing comes.
  if (on_result_thread() || result_thread_gone.load(std::memory_order_acquire)) return;
  if (budget <= std::chrono::nanoseconds::zero()) return;  // a poll: no wake to send
  const deadline until = deadline::in(budget);
  helpers.fetch_add(1, std::memory_order_acq_rel);
  bool kicked = false;
  while (!done()) {
    std::unique_lock read_lock(reader, std::try_to_lock);
    if (read_lock) {
      if (!read_results(until) && until.passed()) break;
      continue;
    }
    if (!kicked) {
      results->wake_consumers();  // the result thread may be asleep in its read
      kicked = true;
    }
    if (until.passed()) break;
    std::this_thread::yield();
  }
  if (helpers.fetch_sub(1, std::memory_order_acq_rel) == 1 && !done()) {
    result_thread_cv.notify_one();  // a long task: hand reading back at once
  }
}

void pool_core::impl::post_work(std::function<void()> work) {
  {
    std::unique_lock lock(mutex);
    if (result_thread_gone) {  // the pool has shut down: nobody else would run it
      lock.unlock();
      work();
      return;
    }
    posted.push_back(std::move(work));
    work_posted.store(true, std::memory_order_relaxed);
  }
  result_thread_cv.notify_one();  // when it stands aside for a caller reading results
  results->wake_consumers();
}

// Fails tasks with closed_error, on the result thread.
void pool_core::impl::fail_all(std::vector<std::shared_ptr<task_state>> failed, const std::string& why) {
  fail_all(std::move(failed), std::make_exception_ptr(closed_error(why)));
}

void pool_core::impl::fail_all(std::vector<std::shared_ptr<task_state>> failed, std::exception_ptr error) {
  if (failed.empty()) return;
  post_work([this, failed = std::move(failed), error = std::move(error)] {
    for (const auto& s : failed) {
      s->fail(error);
      mark_done(1);
    }
  });
}

}  // namespace mproc::detail
