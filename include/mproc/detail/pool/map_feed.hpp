// A map as a feed: a window of chunks in flight, the next submitted as each completes,
// and their results gathered into one vector in input order.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "mproc/detail/os/big_vector.hpp"
#include "mproc/detail/pool/async_state.hpp"
#include "mproc/detail/pool/task_function.hpp"
#include "mproc/detail/pool/task_sink.hpp"
#include "mproc/serialize.hpp"

namespace mproc::detail {

// Collects the chunks of one map into one vector, in input order.
template <class R>
class map_gather {
 public:
  map_gather(std::shared_ptr<async_state<std::vector<R>>> target, std::size_t total, std::size_t chunks)
      : target_(std::move(target)), results_(make_big_vector<R>(total)), chunks_left_(chunks) {}

  // Called by the thread dispatching results: one at a time.
  void chunk_done(std::size_t offset, std::size_t count, std::span<const std::byte> bytes) {
    if (decided()) return;
    try {
      auto into = std::span(results_).subspan(offset, count);
      if (!decode_vector_into(bytes, into)) {
        auto part = from_bytes<std::vector<R>>(bytes);
        if (part.size() != count) {
          throw serialization_error("mproc::pool::map: a chunk of " + std::to_string(count) + " items came back with " +
                                    std::to_string(part.size()) + " results");
        }
        std::move(part.begin(), part.end(), into.begin());
      }
    } catch (...) {
      chunk_failed(std::current_exception());
      return;
    }
    if (--chunks_left_ == 0 && !decided_.exchange(true, std::memory_order_acq_rel)) {
      target_->set_value(std::move(results_));
    }
  }
  // From any thread (terminate() fails chunks on its own); the first failure decides the
  // map, as Python's map fails as a whole.
  void chunk_failed(std::exception_ptr error) {
    if (decided_.exchange(true, std::memory_order_acq_rel)) return;
    target_->set_error(std::move(error));
  }
  // Whether the map has its result or its error.
  bool decided() const noexcept { return decided_.load(std::memory_order_acquire); }

 private:
  std::shared_ptr<async_state<std::vector<R>>> target_;
  std::vector<R> results_;
  std::size_t chunks_left_;
  std::atomic<bool> decided_{false};
};

// One map's chunks, submitted a window at a time as a pool feed (task_host::begin_feed):
// each chunk that finishes, on the thread dispatching results, submits the next. The
// window keeps the task and result channels at a few chunks whatever the input's size, so
// their memory stays mapped and warm; submitting a 10M-item map at once put 40 MB through
// freshly faulted shared memory (~12 µs a page on a VM). After a failure it submits no more.
template <class T, class R>
class map_feed : public std::enable_shared_from_this<map_feed<T, R>> {
 public:
  // `items` stays valid until the feed ends: the caller's own memory while it waits for the
  // result (map), or `owned` (map_async). `function_state`: the function's
  // encode_task_state bytes, which every chunk carries.
  map_feed(std::shared_ptr<async_state<std::vector<R>>> target, std::weak_ptr<task_sink> core, std::uint32_t function,
           std::vector<std::byte> function_state, std::vector<T> owned, std::span<const T> items, std::size_t chunksize,
           std::size_t window)
      : core_(std::move(core)),
        function_(function),
        function_state_(std::move(function_state)),
        owned_(std::move(owned)),
        items_(owned_.empty() ? items : std::span<const T>(owned_)),
        chunksize_(chunksize),
        window_(window),
        gather_(std::move(target), items_.size(), (items_.size() + chunksize - 1) / chunksize) {}
  map_feed(const map_feed&) = delete;
  map_feed& operator=(const map_feed&) = delete;
  ~map_feed() { end_feed(); }  // dropped before its last submit: its pool terminated

  // Admits the feed (closed_error once the pool is closed) and submits the first window.
  void start() {
    auto core = core_.lock();
    if (!core) throw closed_error("mproc::pool::map: the pool was terminated and takes no new tasks; make a new pool");
    core->begin_feed();
    {
      std::lock_guard lock(mutex_);
      feeding_ = true;
    }
    advance(false);
  }

  // For map(), whose caller's items are about to go: waits for a submit reading them, and
  // submits no more. (A map can fail while chunks are still being submitted: terminate()
  // on another thread.)
  void forget_items() noexcept {
    {
      std::lock_guard lock(mutex_);
      items_ = {};
      next_ = 0;
    }
    end_feed();
  }

 private:
  class chunk final : public task_state {
   public:
    chunk(std::shared_ptr<map_feed> feed, std::size_t offset, std::size_t count)
        : feed_(std::move(feed)), offset_(offset), count_(count) {}
    void complete(std::span<const std::byte> bytes) noexcept override {
      feed_->gather_.chunk_done(offset_, count_, bytes);
      feed_->advance(true);
    }
    void fail(std::exception_ptr error) noexcept override {
      feed_->gather_.chunk_failed(std::move(error));
      feed_->advance(true);
    }

   private:
    std::shared_ptr<map_feed> feed_;
    std::size_t offset_;
    std::size_t count_;
  };

  // A chunk finished (`finished`), or the feed starts: fills the window again. A chunk that
  // cannot be submitted (the pool terminated, no memory) fails the map. The map is failed
  // and the feed ended with the lock let go: both may run code (callbacks, terminate()
  // failing this feed's chunks) that comes back here.
  void advance(bool finished) noexcept {
    std::exception_ptr error;
    bool end = false;
    {
      std::lock_guard lock(mutex_);
      if (finished) --in_flight_;
      if (!gather_.decided()) {
        try {
          submit_window();
        } catch (...) {
          error = std::current_exception();
        }
      }
      end = feeding_ && (error || gather_.decided() || next_ == items_.size());
    }
    if (error) gather_.chunk_failed(std::move(error));
    if (end) end_feed();
  }

  // Submits chunks until the window is full or the input is all out; under mutex_.
  void submit_window() {
    if (in_flight_ >= window_ || next_ == items_.size()) return;
    auto core = core_.lock();
    if (!core)
      throw closed_error("mproc::pool::map: the pool was terminated before the map was submitted; make a new pool");
    auto& buffer = encode_buffer();
    while (in_flight_ < window_ && next_ < items_.size()) {
      const auto part = items_.subspan(next_, std::min(chunksize_, items_.size() - next_));
      const std::size_t size = encode_chunk_after_header(std::span<const std::byte>(function_state_), part, buffer);
      auto state = std::make_shared<chunk>(this->shared_from_this(), next_, part.size());
      core->submit(function_, std::span(buffer.data(), size), std::move(state), true);
      next_ += part.size();
      ++in_flight_;
    }
  }

  void end_feed() noexcept {
    {
      std::lock_guard lock(mutex_);
      if (!feeding_) return;
      feeding_ = false;
    }
    if (auto core = core_.lock()) core->end_feed();
  }

  std::weak_ptr<task_sink> core_;
  std::uint32_t function_;
  std::vector<std::byte> function_state_;
  std::vector<T> owned_;
  std::span<const T> items_;
  std::size_t chunksize_;
  std::size_t window_;
  map_gather<R> gather_;

  std::mutex mutex_;           // guards what follows
  std::size_t next_ = 0;       // the first item not submitted
  std::size_t in_flight_ = 0;  // chunks submitted and not finished
  bool feeding_ = false;       // between begin_feed and end_feed
};

}  // namespace mproc::detail
