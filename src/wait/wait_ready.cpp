// mproc::wait_ready: one wait over descriptors (pipes, processes) and futex-based objects
// (queues, events, async results).
//
// No single system call sleeps on both kinds, so the wait picks by what it holds:
// - descriptors only: one ppoll(2);
// - futex-based objects only: one futex_waitv(2) over their words;
// - both: the calling thread sleeps in futex_waitv, and a short-lived poller thread sleeps
//   in ppoll on the descriptors and, once one is ready, bumps a word of that futex_waitv.
// A futex-based object is slept on through the wakeup its changes already announce (a
// queue's not_empty, an event's changed): the wait counts itself among its sleepers, as a
// get() does, and follows wait_for_condition's protocol (a short first slice, then slices
// of recheck_period), so a put or a set pays a wake syscall only while someone sleeps, and
// a wakeup lost to a death costs a delay, never a hang.
#include <linux/futex.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "mproc/error.hpp"
#include "mproc/wait.hpp"
#include "os/fd.hpp"
#include "os/quiet_thread.hpp"
#include "os/syscall.hpp"
#include "wait/cpu_relax.hpp"
#include "wait/futex.hpp"

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449  // the same number on every architecture (Linux >= 5.16)
#endif

namespace mproc::detail {

namespace {

constexpr const char* who = "mproc::wait_ready";
// futex_waitv takes at most FUTEX_WAITV_MAX words; one is the poller's.
constexpr std::size_t max_slept_futexes = FUTEX_WAITV_MAX - 1;
// Without futex_waitv (Linux < 5.16, valgrind), or past max_slept_futexes, futex-based
// objects are re-checked this often.
constexpr std::chrono::milliseconds recheck_slice{1};
// A spin before counting in: a queue's put skips its wake within 20 µs of the last one
// (put_wake_interval), trusting a consumer just woken to look again; this wait may be that
// consumer, back for the next message.
constexpr std::chrono::nanoseconds spin_time{20'000};

// Set when the kernel (or valgrind) has no futex_waitv; MPROC_FORCE_NO_FUTEX_WAITV=1 in the
// environment sets it from the start (a test hook, as MPROC_FORCE_NO_PIDFD).
// Read before main, while no other thread runs.
const char* const forced_no_futex_waitv = std::getenv("MPROC_FORCE_NO_FUTEX_WAITV");  // NOLINT(concurrency-mt-unsafe)
std::atomic<bool> futex_waitv_missing{forced_no_futex_waitv != nullptr};

timespec to_timespec(std::chrono::nanoseconds ns) noexcept {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns.count() / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns.count() % 1'000'000'000);
  return ts;
}

// ppoll until a descriptor is ready or `until` passes; EINTR never stretches the wait.
void poll_until(std::vector<pollfd>& fds, deadline until) {
  for (auto& p : fds) p.revents = 0;
  for (;;) {
    timespec ts{};
    timespec* tsp = nullptr;
    if (!until.is_never()) {
      ts = to_timespec(until.left());
      tsp = &ts;
    }
    if (::ppoll(fds.data(), fds.size(), tsp, nullptr) >= 0) return;
    if (errno != EINTR) throw_system_error(last_error(), std::string(who) + ": poll");
  }
}

// Sleeps in ppoll on the descriptors, on a thread of its own, until one is ready; then
// raises `fired` and wakes whoever sleeps on it. The destructor stops and joins it.
class fd_poller {
 public:
  explicit fd_poller(const std::vector<pollfd>& fds) : stop_(::eventfd(0, EFD_CLOEXEC)) {
    if (!stop_) throw_system_error(last_error(), std::string(who) + ": eventfd");
    fds_ = fds;
    fds_.push_back(pollfd{stop_.get(), POLLIN, 0});
    thread_ = start_quiet_thread([this] { run(); });
  }
  ~fd_poller() {
    const std::uint64_t one = 1;
    while (::write(stop_.get(), &one, sizeof one) < 0 && errno == EINTR) {
    }
    thread_.join();
  }
  fd_poller(const fd_poller&) = delete;
  fd_poller& operator=(const fd_poller&) = delete;

  std::atomic<std::uint32_t>& fired() noexcept { return fired_; }

 private:
  void run() noexcept {
    // Any outcome but EINTR ends it: a ready descriptor, the stop, or a failure of poll,
    // which the caller's own poll then meets and reports.
    while (::ppoll(fds_.data(), fds_.size(), nullptr, nullptr) < 0 && errno == EINTR) {
    }
    fired_.store(1, std::memory_order_release);
    futex_wake(fired_, INT_MAX);
  }

  unique_fd stop_;
  std::vector<pollfd> fds_;
  std::atomic<std::uint32_t> fired_{0};
  std::thread thread_;
};

enum class slept { woken, timed_out, ready };

class multi_wait {
 public:
  explicit multi_wait(std::span<const waitable> objects) {
    for (std::size_t i = 0; i < objects.size(); ++i) {
      const wait_probe& p = objects[i].probe();
      if (p.fd >= 0) {
        fds_.push_back(pollfd{p.fd, POLLIN, 0});
        fd_owner_.push_back(i);
      } else if (p.ready != nullptr && (p.announced != nullptr || (p.word != nullptr && p.arm != nullptr))) {
        futexes_.push_back(&p);
        futex_owner_.push_back(i);
      } else {
        throw error(std::string(who) + ": object " + std::to_string(i) + " cannot be waited on");
      }
    }
  }

  // The indices of the objects ready now, ascending.
  std::vector<std::size_t> look() {
    std::vector<std::size_t> ready;
    if (!fds_.empty()) {
      poll_until(fds_, deadline::no_wait());
      for (std::size_t i = 0; i < fds_.size(); ++i) {
        if (fds_[i].revents != 0) ready.push_back(fd_owner_[i]);  // POLLIN, POLLHUP, POLLERR, POLLNVAL
      }
    }
    for (std::size_t i = 0; i < futexes_.size(); ++i) {
      if (futexes_[i]->ready(futexes_[i]->object)) ready.push_back(futex_owner_[i]);
    }
    std::sort(ready.begin(), ready.end());
    return ready;
  }

  // After look() found none: sleeps until one may be ready, or `until` passes.
  slept sleep(deadline until) {
    if (futexes_.empty()) {
      poll_until(fds_, until);
      return slept::woken;
    }
    const auto start = std::chrono::steady_clock::now();
    for (unsigned i = 1; std::chrono::steady_clock::now() - start < spin_time; ++i) {
      if (i < 64) {
        cpu_relax();
      } else {
        yield_cpu();
      }
      if (any_futex_ready()) return slept::ready;
    }
    if (!fds_.empty() && (!poller_ || poller_->fired().load(std::memory_order_acquire) != 0)) {
      poller_.reset();  // fired, yet nothing was ready: another reader took it
      poller_ = std::make_unique<fd_poller>(fds_);
    }
    return sleep_counted(until);
  }

  // After a sleep that a wake ended: wakes that meant one sleeper of a queue may have woken
  // this wait instead of a get() asleep beside it, so each ready one passes a wake on.
  void pass_wakes_on(const std::vector<std::size_t>& ready) const noexcept {
    for (std::size_t i = 0; i < futexes_.size(); ++i) {
      const wait_probe& p = *futexes_[i];
      if (p.wakes_one && std::binary_search(ready.begin(), ready.end(), futex_owner_[i])) p.announced->announce(1);
    }
  }

 private:
  bool any_futex_ready() const noexcept {
    return std::any_of(futexes_.begin(), futexes_.end(), [](const wait_probe* p) { return p->ready(p->object); });
  }

  // Counted among the sleepers of every announced wakeup, as wait_for_condition counts
  // itself: a first slice of first_slice, then one of up to recheck_period.
  slept sleep_counted(deadline until) {
    const auto now = std::chrono::steady_clock::now();
    const auto pass_end = now + first_slice + recheck_period;
    const std::int64_t awake_by =
        std::chrono::duration_cast<std::chrono::nanoseconds>(pass_end.time_since_epoch()).count() + 2'000'000;
    struct counted {
      std::vector<wakeup*> wakeups;
      ~counted() {
        for (wakeup* w : wakeups) {
          w->sleepers.fetch_sub(1, std::memory_order_seq_cst);
          w->sleeper_returned();
        }
      }
    } count;
    count.wakeups.reserve(futexes_.size());
    for (const wait_probe* p : futexes_) {
      if (p->announced == nullptr) continue;
      p->announced->will_wake_by(awake_by);
      p->announced->sleepers.fetch_add(1, std::memory_order_seq_cst);
      count.wakeups.push_back(p->announced);
    }
    for (const deadline::clock::time_point slice_end : {now + first_slice, pass_end}) {
      deadline slice(slice_end);
      if (futexes_.size() > max_slept_futexes || futex_waitv_missing.load(std::memory_order_relaxed)) {
        slice = std::min(slice, deadline(std::chrono::steady_clock::now() + recheck_slice));
      }
      const bool final_slice = until <= slice;
      if (!arm()) return slept::ready;
      const slept got = sleep_on_words(final_slice ? until : slice);
      if (got == slept::woken || (got == slept::timed_out && final_slice)) return got;
    }
    return slept::woken;  // a pass ended: look again
  }

  // Reads each word's value to sleep on, then checks readiness: false when one is ready.
  bool arm() {
    words_.clear();
    for (const wait_probe* p : futexes_) {
      if (words_.size() == max_slept_futexes) break;
      std::uint32_t expected = 0;
      std::atomic<std::uint32_t>* word = p->word;
      if (p->announced != nullptr) {
        word = &p->announced->event;
        expected = word->load(std::memory_order_seq_cst);
      } else if (!p->arm(p->object, expected)) {
        return false;
      }
      words_.push_back(futex_waitv{expected, reinterpret_cast<std::uintptr_t>(word), FUTEX_32, 0});
    }
    if (any_futex_ready()) return false;
    if (poller_) {
      if (poller_->fired().load(std::memory_order_acquire) != 0) return false;
      words_.push_back(futex_waitv{0, reinterpret_cast<std::uintptr_t>(&poller_->fired()), FUTEX_32, 0});
    }
    return true;
  }

  slept sleep_on_words(deadline until) {
    if (!futex_waitv_missing.load(std::memory_order_relaxed)) {
      timespec ts{};
      timespec* tsp = nullptr;
      if (!until.is_never()) {
        ts = to_timespec(until.when().time_since_epoch());
        tsp = &ts;
      }
      const long r = ::syscall(SYS_futex_waitv, words_.data(), words_.size(), 0, tsp, CLOCK_MONOTONIC);
      if (r >= 0) return slept::woken;
      switch (errno) {
        case EAGAIN:  // a word changed before the sleep: look again
        case EINTR:
          return slept::woken;
        case ETIMEDOUT:
          return slept::timed_out;
        case ENOSYS:
          futex_waitv_missing.store(true, std::memory_order_relaxed);
          break;
        default:
          throw_system_error(last_error(), std::string(who) + ": futex_waitv");
      }
    }
    // One word at a time, in slices of recheck_slice: the poller's if there is one (so a
    // descriptor still ends the sleep at once), else the first object's.
    const futex_waitv& w = words_.back();
    const deadline slice = std::min(until, deadline(std::chrono::steady_clock::now() + recheck_slice));
    auto* word = reinterpret_cast<std::atomic<std::uint32_t>*>(static_cast<std::uintptr_t>(w.uaddr));
    if (futex_wait(*word, static_cast<std::uint32_t>(w.val), slice)) return slept::woken;
    return slice == until ? slept::timed_out : slept::woken;
  }

  std::vector<pollfd> fds_;
  std::vector<std::size_t> fd_owner_;
  std::vector<const wait_probe*> futexes_;
  std::vector<std::size_t> futex_owner_;
  std::vector<futex_waitv> words_;
  std::unique_ptr<fd_poller> poller_;
};

}  // namespace

std::vector<std::size_t> wait_ready_until(std::span<const waitable> objects, deadline until) {
  if (objects.empty() && until.is_never()) {
    throw error(std::string(who) + ": no objects to wait on and no timeout: it would wait forever");
  }
  multi_wait wait(objects);
  for (;;) {
    std::vector<std::size_t> ready = wait.look();
    if (!ready.empty() || until.passed()) return ready;
    const slept how = wait.sleep(until);
    if (how == slept::woken) {
      ready = wait.look();
      if (!ready.empty()) {
        wait.pass_wakes_on(ready);
        return ready;
      }
    }
  }
}

}  // namespace mproc::detail
