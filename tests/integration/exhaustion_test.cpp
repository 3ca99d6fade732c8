// Resource exhaustion, with real processes: each limit gives a clear exception or
// worker_lost, never a crash or a hang, leaks nothing, and mproc works again once the limit
// is lifted.
// - RLIMIT_NOFILE while making queues, locks, pipes, processes, and receiving handles;
// - RLIMIT_FSIZE on a queue's memfd (a put that would grow it past the limit);
// - RLIMIT_AS reached by a pool task;
// - RLIMIT_NPROC while a pool replaces a worker.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "mproc/error.hpp"
#include "mproc/pipe.hpp"
#include "mproc/pool.hpp"
#include "mproc/process.hpp"
#include "mproc/queue.hpp"
#include "mproc/shared.hpp"
#include "mproc/sync.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;

bool is_emfile(const std::system_error& e) { return e.code() == std::errc::too_many_files_open; }

// UBSan's vptr check probes memory through a pipe: with no descriptor free it takes every
// object it checks for invalid, and stops the test (a false positive of the sanitizer's
// runtime, not of mproc). The tests that use up every descriptor skip themselves under it.
extern "C" __attribute__((weak)) void __ubsan_handle_dynamic_type_cache_miss(void*, void*, void*);
bool ubsan_needs_descriptors() { return &__ubsan_handle_dynamic_type_cache_miss != nullptr; }
#define MPROC_SKIP_UNDER_UBSAN_VPTR() \
  if (ubsan_needs_descriptors()) GTEST_SKIP() << "UBSan's vptr check needs free descriptors"

// --- RLIMIT_NOFILE ------------------------------------------------------------------------

int highest_open_fd() {
  int highest = 2;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (const dirent* e = ::readdir(dir)) highest = std::max(highest, std::atoi(e->d_name));
    ::closedir(dir);
  }
  return highest;
}

// Lowers RLIMIT_NOFILE (to keep the fillers few) and takes every free descriptor, then
// hands back exactly `n`: the next creation finds n descriptors free and no more. Usable
// in a child process: it uses no gtest assertion.
class fd_exhaustion {
 public:
  fd_exhaustion() {
    ::getrlimit(RLIMIT_NOFILE, &saved_);
    source_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    rlimit low = saved_;
    low.rlim_cur = std::min<rlim_t>(saved_.rlim_cur, static_cast<rlim_t>(highest_open_fd()) + 1 + 64);
    ::setrlimit(RLIMIT_NOFILE, &low);
  }
  ~fd_exhaustion() {
    lift();
    ::close(source_);
  }
  fd_exhaustion(const fd_exhaustion&) = delete;
  fd_exhaustion& operator=(const fd_exhaustion&) = delete;

  void leave_free(int n) {
    for (;;) {
      const int fd = ::fcntl(source_, F_DUPFD_CLOEXEC, 0);
      if (fd < 0) break;
      fillers_.push_back(fd);
    }
    for (int i = 0; i < n && !fillers_.empty(); ++i) {
      ::close(fillers_.back());
      fillers_.pop_back();
    }
  }
  // How many descriptors could be opened now (probes, and gives them back).
  int free_slots() const {
    std::vector<int> probes;
    for (;;) {
      const int fd = ::fcntl(source_, F_DUPFD_CLOEXEC, 0);
      if (fd < 0) break;
      probes.push_back(fd);
    }
    for (int fd : probes) ::close(fd);
    return static_cast<int>(probes.size());
  }
  void lift() {
    for (int fd : fillers_) ::close(fd);
    fillers_.clear();
    ::setrlimit(RLIMIT_NOFILE, &saved_);
  }

 private:
  rlimit saved_{};
  int source_ = -1;
  std::vector<int> fillers_;
};

// With fewer than `needed` descriptors free, `make` throws std::system_error (EMFILE) and
// leaks none; with `needed` it works; with the limit lifted it works again.
template <class Make>
void expect_emfile_then_recovery(const char* what, int needed, Make make) {
  SCOPED_TRACE(what);
  fd_exhaustion fds;
  for (int n = 0; n < needed; ++n) {
    fds.leave_free(n);
    try {
      make();
      ADD_FAILURE() << what << " was made with only " << n << " descriptor(s) free";
    } catch (const std::system_error& e) {
      EXPECT_TRUE(is_emfile(e)) << "with " << n << " free: " << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "with " << n << " free, not a std::system_error: " << e.what();
    }
    EXPECT_EQ(fds.free_slots(), n) << "the failed creation leaked a descriptor";
  }
  fds.leave_free(needed);
  EXPECT_NO_THROW(make()) << "with exactly " << needed << " free";
  EXPECT_EQ(fds.free_slots(), needed) << "the object did not give its descriptors back";
  fds.lift();
  EXPECT_NO_THROW(make()) << "after the limit was lifted";
}

// Queues made under RLIMIT_NOFILE throw EMFILE, leak no descriptor, and work again once
// descriptors are free.
TEST(Exhaustion, QueuesUnderRlimitNofileThrowEmfileAndRecover) {
  MPROC_SKIP_UNDER_UBSAN_VPTR();
  expect_emfile_then_recovery("queue", 1, [] {
    mproc::queue<int> q;
    q.put(1);
    if (q.get() != 1) throw std::logic_error("queue lost its value");
  });
  expect_emfile_then_recovery("joinable_queue", 1, [] {
    mproc::joinable_queue<std::string> q(4);
    q.put("x");
    (void)q.get();
    q.task_done();
    q.join();
  });
  expect_emfile_then_recovery("simple_queue", 1, [] {
    mproc::simple_queue<int> q;
    q.put(2);
    if (q.get() != 2) throw std::logic_error("simple_queue lost its value");
  });
}

// Locks and the other synchronisation objects made under RLIMIT_NOFILE throw EMFILE, leak
// no descriptor, and work again once descriptors are free.
TEST(Exhaustion, LocksUnderRlimitNofileThrowEmfileAndRecover) {
  MPROC_SKIP_UNDER_UBSAN_VPTR();
  expect_emfile_then_recovery("lock", 1, [] {
    mproc::lock l;
    std::lock_guard guard(l);
  });
  expect_emfile_then_recovery("rlock", 1, [] {
    mproc::rlock l;
    std::lock_guard guard(l);
  });
  expect_emfile_then_recovery("semaphore", 1, [] {
    mproc::semaphore s(1);
    s.acquire();
    s.release();
  });
  expect_emfile_then_recovery("event", 1, [] {
    mproc::event e;
    e.set();
  });
  expect_emfile_then_recovery("condition", 1, [] {
    mproc::condition c;
    std::lock_guard guard(c);
    c.notify_all();
  });
  const mproc::lock made_before;  // the condition below is the only new object
  expect_emfile_then_recovery("condition over a lock", 1, [made_before] { mproc::condition c(made_before); });
  expect_emfile_then_recovery("barrier", 1, [] {
    mproc::barrier b(1);
    (void)b.wait();
  });
  expect_emfile_then_recovery("shared_value", 1, [] { mproc::shared_value<int> v(3); });
  expect_emfile_then_recovery("shared_array", 1, [] { mproc::shared_array<double> a(100); });
}

// Pipes made under RLIMIT_NOFILE throw EMFILE, leak no descriptor, and work again once
// descriptors are free.
TEST(Exhaustion, PipesUnderRlimitNofileThrowEmfileAndRecover) {
  MPROC_SKIP_UNDER_UBSAN_VPTR();
  expect_emfile_then_recovery("pipe", 2, [] {
    auto [a, b] = mproc::pipe();
    a.send(5);
    if (b.recv<int>() != 5) throw std::logic_error("pipe lost its value");
  });
  expect_emfile_then_recovery("one-way pipe", 2, [] { auto ends = mproc::pipe(false); });
}

// start() under RLIMIT_NOFILE throws EMFILE and leaves no child behind.
// A process needs a descriptor in the parent (its pidfd; two, a pipe, on the fallback for
// systems without pidfds). Short of them, start() throws EMFILE: the child that fork made
// is killed and reaped at once (no zombie, not listed, nothing leaked), and the same
// object starts once descriptors are free.
TEST(Exhaustion, ProcessStartUnderRlimitNofileLeavesNoChild) {
  MPROC_SKIP_UNDER_UBSAN_VPTR();
  fd_exhaustion fds;
  mproc::process p([] { std::exit(5); });
  int n = 0;
  for (;; ++n) {
    ASSERT_LE(n, 4) << "start() still fails with 4 descriptors free";
    fds.leave_free(n);
    try {
      p.start();
      break;
    } catch (const std::system_error& e) {
      EXPECT_TRUE(is_emfile(e)) << "with " << n << " free: " << e.what();
    }
    EXPECT_FALSE(p.pid().has_value());
    EXPECT_FALSE(p.is_alive());
    EXPECT_TRUE(mproc::active_children().empty());
    EXPECT_EQ(mproc_test::count_zombie_children(), 0);
    EXPECT_EQ(fds.free_slots(), n) << "the failed start leaked a descriptor";
  }
  EXPECT_GE(n, 1) << "started without a free descriptor";
  p.join();
  EXPECT_EQ(p.exitcode(), 5);
  fds.lift();
}

// Receiving a handle without free descriptors throws EMFILE.
// Receiving a handle (a queue inside a message) opens descriptors in the receiver: for a
// moment two here (decoding default-constructs a queue, a memfd of its own, then loads the
// handle into it), three in another process (the sender's pidfd too). With fewer free, the
// receiver gets std::system_error (EMFILE) -- its own shortage, not "the sender has
// ended" -- leaks none, and the next handle arrives once descriptors are free.
TEST(Exhaustion, ReceivingAHandleWithoutFreeDescriptorsIsEmfile) {
  MPROC_SKIP_UNDER_UBSAN_VPTR();
  mproc::queue<int> inner;
  inner.put(11);
  mproc::queue<mproc::queue<int>> carrier;
  {
    fd_exhaustion fds;
    for (int n = 0; n < 2; ++n) {
      carrier.put(inner);
      fds.leave_free(n);
      try {
        (void)carrier.get();
        ADD_FAILURE() << "a handle was received with " << n << " descriptor(s) free";
      } catch (const std::system_error& e) {
        EXPECT_TRUE(is_emfile(e)) << e.what();
      } catch (const std::exception& e) {
        ADD_FAILURE() << "with " << n << " free, not a std::system_error (EMFILE): " << e.what();
      }
      EXPECT_EQ(fds.free_slots(), n) << "receiving leaked a descriptor";
    }
    carrier.put(inner);
    fds.leave_free(2);
    auto received = carrier.get();
    EXPECT_EQ(received.get(), 11);
  }

  // From another process the handle comes through the sender's pidfd (or /proc): a
  // descriptor or two more for a moment.
  for (int k = 0; k < 6; ++k) carrier.put(inner);
  inner.put(12);
  mproc::process receiver([carrier]() mutable {
    int result = 0;
    fd_exhaustion fds;
    int n = 0;
    for (;; ++n) {
      if (n > 5) std::exit(result | 1);
      fds.leave_free(n);
      try {
        if (carrier.get().get() != 12) result |= 16;
        break;
      } catch (const std::system_error& e) {
        if (!is_emfile(e)) result |= 2;
      } catch (...) {
        result |= 4;
      }
      if (fds.free_slots() != n) result |= 8;
    }
    if (n < 2) result |= 32;
    fds.lift();
    std::exit(result);
  });
  receiver.start();
  receiver.join();
  EXPECT_EQ(receiver.exitcode(), 0) << "bits: 1 never received, 2 not EMFILE, 4 not std::system_error, 8 leaked "
                                       "a descriptor, 16 wrong queue, 32 received with fewer than 2 free";
}

// A pool made near the descriptor limit either throws or works, but never hangs.
// DISABLED: a pool made while the program is a few descriptors short of its limit can
// hang. The zygote is forked with the parent's descriptor table, so it has as few free
// descriptors as the parent had; when pidfd_open of a new worker fails (EMFILE) in
// zygote_main, the worker is kept with pidfd -1, which poll ignores: its end is never
// noticed. Observed (pool(1), 6 descriptors free in the parent): construction succeeds,
// apply works, and close()+join() (or the destructor) hang forever, because the worker
// that retires is never reported. Fix (src/pool_core.cpp, zygote_main): when pidfd_open of
// a worker fails, kill and reap it and report the spawn as failed (as when fork fails), or
// have the pool reserve the zygote's descriptors up front.
TEST(Exhaustion, PoolCreationNearTheFdLimitNeverHangs) {
  MPROC_SKIP_UNDER_UBSAN_VPTR();
  for (int n = 0; n <= 16; ++n) {
    SCOPED_TRACE("free descriptors: " + std::to_string(n));
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      fd_exhaustion fds;
      fds.leave_free(n);
      try {
        mproc::pool pool(1);
        if (pool.apply_async([] { return 3; }).get(5s) != 3) ::_exit(2);
        pool.close();
        pool.join();
      } catch (const std::system_error& e) {
        ::_exit(is_emfile(e) && fds.free_slots() == n ? 0 : 3);
      } catch (...) {
        ::_exit(4);
      }
      ::_exit(fds.free_slots() == n ? 0 : 5);
    }
    int status = 0;
    const bool ended = mproc_test::eventually([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 10s);
    EXPECT_TRUE(ended) << "the pool hung";
    if (!ended) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      continue;
    }
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  }
}

// --- RLIMIT_FSIZE: a queue's memfd that cannot grow ---------------------------------------

std::uint64_t checksum(const std::vector<std::uint8_t>& data) {
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (const std::uint8_t b : data) h = (h ^ b) * 1099511628211ULL;
  return h;
}

// A message that carries its own checksum, so that a torn message is detected.
struct checked_message {
  std::uint64_t id = 0;
  std::uint64_t sum = 0;
  std::vector<std::uint8_t> payload;

  static checked_message make(std::uint64_t id, std::size_t size) {
    checked_message m;
    m.id = id;
    m.payload.resize(size);
    std::mt19937_64 rng(id);
    for (auto& b : m.payload) b = static_cast<std::uint8_t>(rng());
    m.sum = checksum(m.payload);
    return m;
  }
  bool verifies() const { return checksum(payload) == sum; }

  template <class Archive>
  void serialize(Archive& archive) {
    archive(id, sum, payload);
  }
};

// Sets the soft RLIMIT_FSIZE of this process, and puts it back.
class fsize_limit {
 public:
  explicit fsize_limit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &saved_);
    rlimit low = saved_;
    low.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &low);
  }
  ~fsize_limit() { lift(); }
  fsize_limit(const fsize_limit&) = delete;
  fsize_limit& operator=(const fsize_limit&) = delete;
  void lift() { ::setrlimit(RLIMIT_FSIZE, &saved_); }

 private:
  rlimit saved_{};
};

bool sigxfsz_is_default() {
  struct sigaction current {};
  ::sigaction(SIGXFSZ, nullptr, &current);
  return current.sa_handler == SIG_DFL;
}

bool sigxfsz_pending() {
  sigset_t pending;
  ::sigpending(&pending);
  return sigismember(&pending, SIGXFSZ) == 1;
}

constexpr rlim_t one_mib = 1 << 20;

bool is_efbig(const std::system_error& e) { return e.code() == std::errc::file_too_large; }

// A put past RLIMIT_FSIZE throws EFBIG, and the queue stays usable.
// Growing the memfd past RLIMIT_FSIZE fails with EFBIG and raises SIGXFSZ, whose default
// action ends the process (Python ignores SIGXFSZ for this reason). mproc leaves the
// program's disposition alone and keeps the signal its own call raised from being
// delivered: the put throws std::system_error (EFBIG), and nothing else happens.
TEST(Exhaustion, QueuePutPastRlimitFsizeThrowsEfbig) {
  ASSERT_TRUE(sigxfsz_is_default()) << "the test needs SIGXFSZ at its default action (end the process)";
  mproc::queue<checked_message> q;
  fsize_limit limit(one_mib);
  for (std::uint64_t id = 0; id < 10; ++id) q.put(checked_message::make(id, 3000));
  try {
    q.put(checked_message::make(999, 4 * one_mib));
    ADD_FAILURE() << "a 4 MiB message was put into a queue limited to 1 MiB";
  } catch (const std::system_error& e) {
    EXPECT_TRUE(is_efbig(e)) << e.what();
  }
  EXPECT_FALSE(sigxfsz_pending()) << "mproc left its SIGXFSZ pending";
  EXPECT_TRUE(sigxfsz_is_default()) << "mproc changed the program's SIGXFSZ disposition";
  EXPECT_EQ(q.qsize(), 10U) << "the failed put published something";

  // Smaller messages still pass, in order and whole, and more of them than the limit
  // holds at once: the consumer frees blocks that the producer reuses.
  std::uint64_t next_put = 10;
  std::uint64_t next_get = 0;
  for (int round = 0; round < 20; ++round) {
    for (int k = 0; k < 20; ++k) q.put(checked_message::make(next_put++, 3000));
    while (q.qsize() > 0) {
      const checked_message m = q.get();
      EXPECT_EQ(m.id, next_get++);
      EXPECT_TRUE(m.verifies()) << "message " << m.id << " is torn";
    }
  }
  // A large message that fits under the limit passes too.
  q.put(checked_message::make(5000, one_mib / 2));
  const checked_message half = q.get();
  EXPECT_EQ(half.id, 5000U);
  EXPECT_TRUE(half.verifies());

  // Lifted: the big message goes through.
  limit.lift();
  q.put(checked_message::make(999, 4 * one_mib));
  const checked_message big = q.get();
  EXPECT_EQ(big.id, 999U);
  EXPECT_TRUE(big.verifies());
  EXPECT_TRUE(q.empty());
}

// A producer past RLIMIT_FSIZE survives, and what it put arrives whole.
// The same with the producer in another process (the limit is its own) and the consumer
// here: the producer survives its failed put, and everything it put arrives whole.
TEST(Exhaustion, ProducerPastRlimitFsizeSurvivesAndLosesNothing) {
  ASSERT_TRUE(sigxfsz_is_default());
  mproc::queue<checked_message> q(8);
  mproc::process producer([q]() mutable {
    fsize_limit limit(one_mib);
    int result = 0;
    for (std::uint64_t id = 0; id < 100; ++id) {
      if (id == 50) {
        try {
          q.put(checked_message::make(999, 4 * one_mib));
          result |= 1;
        } catch (const std::system_error& e) {
          if (!is_efbig(e)) result |= 2;
        }
      }
      q.put(checked_message::make(id, 5000));
    }
    std::exit(result);
  });
  producer.start();
  for (std::uint64_t id = 0; id < 100; ++id) {
    const auto m = q.try_get_for(10s);
    ASSERT_TRUE(m.has_value()) << "message " << id << " never came";
    EXPECT_EQ(m->id, id);
    EXPECT_TRUE(m->verifies()) << "message " << id << " is torn";
  }
  producer.join();
  EXPECT_EQ(producer.exitcode(), 0) << "1: the big put passed; 2: not EFBIG; -25: killed by SIGXFSZ";
  EXPECT_TRUE(q.empty());
}

// Making a queue past RLIMIT_FSIZE throws EFBIG and leaks nothing.
// A queue's memfd starts at 68 KiB: under a smaller limit, making one throws EFBIG and
// leaves no descriptor behind.
TEST(Exhaustion, QueueCreationPastRlimitFsizeThrowsEfbig) {
  ASSERT_TRUE(sigxfsz_is_default());
  const int fds_before = mproc_test::count_open_fds();
  {
    fsize_limit limit(8 * 1024);
    try {
      mproc::queue<int> q;
      ADD_FAILURE() << "a queue was made under an 8 KiB RLIMIT_FSIZE";
    } catch (const std::system_error& e) {
      EXPECT_TRUE(is_efbig(e)) << e.what();
    }
  }
  EXPECT_EQ(mproc_test::count_open_fds(), fds_before);
  EXPECT_FALSE(sigxfsz_pending());
  mproc::queue<int> q;
  q.put(4);
  EXPECT_EQ(q.get(), 4);
}

// --- RLIMIT_AS: a pool task that allocates until refused ---------------------------------

#if defined(__SANITIZE_ADDRESS__)
constexpr bool under_asan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool under_asan = true;
#else
constexpr bool under_asan = false;
#endif
#else
constexpr bool under_asan = false;
#endif

std::size_t vm_size() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmSize:", 0) == 0) return std::stoull(line.substr(7)) * 1024;
  }
  return 0;
}

// Lets this process map `headroom` more than it has mapped now. (The limit counts the
// address space mproc reserves for its queues: a worker already holds gigabytes of it,
// so an absolute limit would refuse the first allocation instead of the thousandth.)
void limit_address_space(std::size_t headroom) {
  rlimit limit{};
  ::getrlimit(RLIMIT_AS, &limit);
  limit.rlim_cur = vm_size() + headroom;
  ::setrlimit(RLIMIT_AS, &limit);
}

constexpr std::size_t headroom = std::size_t{256} << 20;
constexpr std::size_t chunk_mib = 8;

// Allocates 8 MiB chunks until an allocation throws; `progress` tells how far it got.
std::int64_t allocate_until_refused(mproc::shared_value<std::int64_t> progress) {
  std::vector<std::unique_ptr<char[]>> chunks;
  chunks.reserve(4096);  // the bookkeeping must not be what fails
  for (;;) {
    chunks.emplace_back(new char[chunk_mib << 20]);
    chunks.back()[0] = 1;  // used: the allocation is kept
    progress.value() += static_cast<std::int64_t>(chunk_mib);
  }
}

std::int64_t limit_then_allocate(mproc::shared_value<std::int64_t> progress) {
  limit_address_space(headroom);
  return allocate_until_refused(progress);
}

// The allocation fails where nothing may throw: std::terminate, and the worker dies.
std::int64_t limit_then_allocate_noexcept(mproc::shared_value<std::int64_t> progress) {
  const rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  limit_address_space(headroom);
  [&]() noexcept { allocate_until_refused(progress); }();
  return 0;
}

int square(int x) { return x * x; }

// get() rethrows std::bad_alloc, or worker_lost if the worker died of it; either way the
// allocation really ran into the limit, and the pool serves the next task.
void expect_refused_then_pool_serves(mproc::pool& pool, std::int64_t (*task)(mproc::shared_value<std::int64_t>),
                                     bool may_lose_worker) {
  mproc::shared_value<std::int64_t> progress(0);
  try {
    (void)pool.apply_async(task, progress).get(30s);
    ADD_FAILURE() << "the allocation never failed";
  } catch (const std::bad_alloc&) {
  } catch (const mproc::worker_lost& e) {
    EXPECT_TRUE(may_lose_worker) << "the worker died: " << e.what();
  }
  EXPECT_GE(progress.get(), 64) << "refused after only " << progress.get() << " MiB: the limit was not what stopped it";
  EXPECT_LE(progress.get(), static_cast<std::int64_t>(headroom >> 20) + 64);
  EXPECT_EQ(pool.apply_async(square, 9).get(10s), 81);
}

// A task that allocates past an RLIMIT_AS set in the pool's initializer gets bad_alloc.
TEST(Exhaustion, PoolTaskPastRlimitAsFromInitializerGetsBadAlloc) {
  if (under_asan) GTEST_SKIP() << "AddressSanitizer's allocator does not return null under RLIMIT_AS";
  mproc::pool pool({.processes = 1, .initializer = [] { limit_address_space(headroom); }});
  const int worker = pool.apply(::getpid);
  for (int round = 0; round < 3; ++round) expect_refused_then_pool_serves(pool, allocate_until_refused, false);
  EXPECT_EQ(pool.apply(::getpid), worker) << "the worker was replaced: it should have survived bad_alloc";
  pool.close();
  pool.join();
}

TEST(Exhaustion, PoolTaskSettingRlimitAsItselfGetsBadAlloc) {
  if (under_asan) GTEST_SKIP() << "AddressSanitizer's allocator does not return null under RLIMIT_AS";
  mproc::pool pool(1);
  expect_refused_then_pool_serves(pool, limit_then_allocate, false);
  pool.close();
  pool.join();
}

std::size_t size_of(const std::vector<char>& v) { return v.size(); }

// A task whose arguments do not fit in the worker gets bad_alloc.
// A task whose arguments do not fit in the worker's memory fails with bad_alloc; it must
// not vanish (its caller would wait forever) nor jam the task channel for the tasks behind.
// (It did both: the worker's get() threw while gathering the message, left it queued, and
// retried at once, forever.)
TEST(Exhaustion, PoolTaskWhoseArgumentsDoNotFitGetsBadAlloc) {
  if (under_asan) GTEST_SKIP() << "AddressSanitizer's allocator does not return null under RLIMIT_AS";
  mproc::pool pool({.processes = 1, .initializer = [] { limit_address_space(std::size_t{64} << 20); }});
  const int worker = pool.apply(::getpid);
  auto too_big = pool.apply_async(size_of, std::vector<char>(std::size_t{160} << 20, 'x'));
  auto behind = pool.apply_async(square, 6);
  EXPECT_THROW((void)too_big.get(20s), std::bad_alloc);
  EXPECT_EQ(behind.get(10s), 36);
  EXPECT_EQ(pool.apply(::getpid), worker) << "the worker was replaced: it should have survived bad_alloc";
  pool.close();
  pool.join();
}

// A worker killed by its allocation failure is lost (its task fails with worker_lost) and
// is replaced.
TEST(Exhaustion, PoolWorkerKilledByItsAllocationFailureIsReplaced) {
  mproc::pool pool(1);
  mproc::shared_value<std::int64_t> progress(0);
  try {
    (void)pool.apply_async(limit_then_allocate_noexcept, progress).get(30s);
    ADD_FAILURE() << "the worker survived an exception escaping a noexcept function";
  } catch (const mproc::worker_lost& e) {
    // AddressSanitizer's allocator ends the process itself (exit code 1) before any throw.
    if (!under_asan) {
      EXPECT_EQ(e.exitcode(), -SIGABRT) << e.what();
    }
  }
  EXPECT_EQ(pool.apply_async(square, 7).get(10s), 49);
  pool.close();
  pool.join();
}

// --- RLIMIT_NPROC while a pool replaces a worker ------------------------------------------

// Root ignores RLIMIT_NPROC: the scenarios below run in a forked child that becomes nobody.
bool become_nobody() {
  if (::geteuid() != 0) return true;
  if (::setgid(65534) != 0 || ::setuid(65534) != 0) return false;
  ::prctl(PR_SET_DUMPABLE, 1);  // keep our /proc entries ours
  return true;
}

std::vector<pid_t> live_children_of(pid_t parent) {
  std::vector<pid_t> out;
  if (DIR* dir = ::opendir("/proc")) {
    while (const dirent* e = ::readdir(dir)) {
      char* end = nullptr;
      const long pid = std::strtol(e->d_name, &end, 10);
      if (end == e->d_name || *end != '\0') continue;
      const auto st = mproc_test::read_proc_stat(static_cast<pid_t>(pid));
      if (st && st->ppid == parent && st->state != 'Z') out.push_back(static_cast<pid_t>(pid));
    }
    ::closedir(dir);
  }
  return out;
}

int exit_with(int code) { ::_exit(code); }
std::size_t meet(mproc::barrier b) { return b.wait(5s); }

// Runs `scenario` in a forked child and returns its exit code; a child that does not end
// within `limit` is killed (its pool goes with it) and counts as 255.
template <class Scenario>
int run_forked(Scenario scenario, std::chrono::seconds limit) {
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int code = 255;
    try {
      code = scenario();
    } catch (...) {
      code = 254;
    }
    ::_exit(code);
  }
  int status = 0;
  if (!mproc_test::eventually([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, limit)) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return 255;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The zygote is the pool's only process that forks; its RLIMIT_NPROC is set from outside
// (prlimit) once the pool is up. A worker that dies then cannot be replaced.
int nproc_respawn_scenario() {
  if (!become_nobody()) return 128;
  int broken = 0;
  mproc::pool pool(2);
  if (pool.apply_async(square, 3).get(5s) != 9) broken |= 1;
  const auto zygotes = live_children_of(::getpid());
  if (zygotes.size() != 1) return 129;
  const pid_t zygote = zygotes[0];
  if (!mproc_test::eventually([&] { return live_children_of(zygote).size() == 2; })) return 130;
  rlimit saved{};
  if (::prlimit(zygote, RLIMIT_NPROC, nullptr, &saved) != 0) return 131;
  const rlimit zero{0, saved.rlim_max};
  if (::prlimit(zygote, RLIMIT_NPROC, &zero, nullptr) != 0) return 131;

  // A worker dies mid-task: that task fails with worker_lost.
  try {
    (void)pool.apply_async(exit_with, 3).get(5s);
    broken |= 2;
  } catch (const mproc::worker_lost& e) {
    if (e.exitcode() != 3) broken |= 2;
  } catch (...) {
    broken |= 2;
  }
  // The other worker goes on serving.
  for (int i = 0; i < 5; ++i) {
    try {
      if (pool.apply_async(square, i).get(5s) != i * i) broken |= 4;
    } catch (...) {
      broken |= 4;
    }
  }
  // No replacement while the zygote cannot fork.
  const auto watch_until = std::chrono::steady_clock::now() + 500ms;
  while (std::chrono::steady_clock::now() < watch_until) {
    if (live_children_of(zygote).size() > 1) broken |= 8;
    std::this_thread::sleep_for(20ms);
  }
  // Lifted: the pool is back to two workers, both serving (two tasks that meet at a
  // barrier of two can only finish on two workers at once).
  if (::prlimit(zygote, RLIMIT_NPROC, &saved, nullptr) != 0) return 132;
  if (!mproc_test::eventually([&] { return live_children_of(zygote).size() == 2; }, 3s)) broken |= 16;
  try {
    mproc::barrier both(2);
    auto a = pool.apply_async(meet, both);
    auto b = pool.apply_async(meet, both);
    if (a.get(10s) + b.get(10s) != 1) broken |= 32;
  } catch (...) {
    broken |= 32;
  }
  pool.close();
  pool.join();
  return broken;
}

// A pool under RLIMIT_NPROC loses the task, keeps serving, and recovers when the limit is
// lifted.
TEST(Exhaustion, PoolUnderRlimitNprocKeepsServingAndRecovers) {
  const int code = run_forked(nproc_respawn_scenario, 30s);
  EXPECT_EQ(code, 0) << "bits: 1 pool not up, 2 no worker_lost, 4 survivor did not serve, 8 replaced under the "
                        "limit, 16 not replaced after lifting, 32 not two workers after; 128+ setup; 255 hang";
}

// DISABLED: with RLIMIT_NPROC exhausted for the zygote and no worker left, the pool cannot
// run anything; it must not hang. Observed: the dead worker's task fails with worker_lost
// (good); then the zygote's fork fails (EAGAIN), it reports the slot's worker as exited
// after a 100 ms pause, and the parent asks it to spawn again, forever (every 100 ms). A
// task submitted meanwhile waits (get(timeout) times out; it runs as soon as the limit is
// lifted, so the pool does recover). But close()+join() hang for as long as the limit
// holds: join waits for every worker to retire, and a slot that cannot be filled never
// retires. Wanted (pool_core, not done here): after close(), a slot whose spawn failed
// counts as retired, and tasks that no worker can run fail (e.g. with the fork's
// std::system_error, EAGAIN) instead of waiting forever.
int nproc_no_worker_scenario() {
  if (!become_nobody()) return 128;
  mproc::pool pool(1);
  if (pool.apply_async(square, 3).get(5s) != 9) return 129;
  const auto zygotes = live_children_of(::getpid());
  if (zygotes.size() != 1) return 130;
  rlimit saved{};
  if (::prlimit(zygotes[0], RLIMIT_NPROC, nullptr, &saved) != 0) return 131;
  const rlimit zero{0, saved.rlim_max};
  if (::prlimit(zygotes[0], RLIMIT_NPROC, &zero, nullptr) != 0) return 131;
  int broken = 0;
  try {
    (void)pool.apply_async(exit_with, 3).get(5s);
    broken |= 1;
  } catch (const mproc::worker_lost&) {
  } catch (...) {
    broken |= 1;
  }
  auto stranded = pool.apply_async(square, 4);
  pool.close();
  pool.join();  // must return while the limit holds
  try {
    (void)stranded.get(1s);  // settled either way: a value, or a clear exception
  } catch (const mproc::timeout_error&) {
    broken |= 2;
  } catch (...) {
  }
  return broken;
}

// A pool left with no worker under RLIMIT_NPROC closes and joins without hanging.
TEST(Exhaustion, PoolWithNoWorkerUnderRlimitNprocStillJoins) {
  const int code = run_forked(nproc_no_worker_scenario, 10s);
  EXPECT_EQ(code, 0) << "bits: 1 no worker_lost, 2 a task left unsettled; 128+ setup; 255 hang";
}

}  // namespace
