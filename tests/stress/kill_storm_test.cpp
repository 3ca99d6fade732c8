// Kill storm: a pool, three queues and two locks under load while a chaos thread SIGKILLs
// random pool workers, queue producers, queue consumers and lock holders for a fixed time;
// then every task, message and increment is accounted for.
//
// Duration: MPROC_STRESS_SECONDS seconds of chaos (environment; default from CMake, 20).
// MPROC_STRESS_SEED fixes the chaos's random choices (timing still varies run to run).
//
// Who does what:
// - The main thread submits pool tasks (a window of 32 in flight), then closes and joins.
// - The supervisor thread starts every producer, consumer and locker (daemon processes,
//   so it lives until it has joined them all), kills one victim every few milliseconds
//   (SIGKILL through the child's pidfd; pool workers through a pidfd of their own, found
//   as the children of the pool's zygote), starts a replacement, and at the end runs the
//   shutdown: producers stop, lockers stop, the queues drain, one pill per consumer.
// - A watchdog aborts with a diagnosis if the whole thing does not end in time.
//
// The books, all in shared memory so that they survive the SIGKILL of whoever writes them:
//
// Pool. Each task records that it started (task_runs[id]; latest_task[pid of its worker]);
// its callback records its outcome. Every task must end exactly once: completed with the
// right value (or, for the throwing kind, the right exception), or failed with worker_lost
// (exit code -SIGKILL) or timeout_error. A "hang" task must never complete. worker_lost <=
// pool workers killed. No task starts twice, and a task that failed with worker_lost but
// started must have been the latest task of a worker that was killed (else it ran in
// another worker than the one whose death failed it).
//
// Queues. Producer incarnation p owns message ids [base, base + limit); its seq s is id
// base + s - 1. Before each put it stores attempt_end (the last seq of that put, > 1 for
// put_many); after the put returns, last_returned. Consumers mark received_by[id] with a
// compare-and-swap (a second mark is a duplicate). A message carries a checksum of its id
// and payload (1 B to 256 KiB: many span the 64 KiB blocks of a channel), verified while
// it is decoded.
//
// The consumer's window. A consumer cannot record a message in the same instant as the
// queue hands it over, so it keeps a phase word and the list of ids of the get in progress:
//   in_get    before calling get/get_many; the list is empty.
//   decoding  set by the message's load(), inside get, after appending the id to the list.
//   decoded   set by load() once the payload is read and checked, still inside get.
//   returned  set after get returned, before the messages are marked.
//   idle      after they are marked.
// The channel commits a get only after every message of it was decoded, so:
//   killed in `decoding`: nothing was committed: each listed message MUST be delivered
//     again, to another consumer (the library's promise for a consumer killed inside get);
//   killed in `decoded`: the commit may or may not have happened: each listed message is
//     delivered once elsewhere, or lost (attributed to this kill);
//   killed in `returned`: committed: each listed message is marked by this consumer, or
//     lost (attributed); marked by anyone else is a duplicate delivery.
//
// Rule checked for each producer incarnation p, with L = last_returned, A = attempt_end:
//   seq <= L     received exactly once, or attributed to a consumer killed in decoded/returned;
//   L < seq <= A only when p was killed inside that put: received at most once, and the
//                ones delivered form a prefix (put_many publishes a prefix or nothing);
//   seq > A      never received.
// Nothing else may be lost, duplicated, corrupted, reordered (per producer, as one consumer
// sees them) or delivered to the wrong queue.
//
// Locks. Each critical section increments a shared counter and its locker's own count,
// under a journal (old counter, locker, old count). Whoever takes the lock and finds the
// journal valid knows the holder died inside, checks that owner_deaths() grew, and rolls
// the journal back. At the end: counter == sum of the lockers' counts, for both locks.
//
// Afterwards: no child, no zombie, no orphan (the test is a subreaper, so orphaned
// grandchildren would come back to it), the open descriptors and /dev/shm as before.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <optional>
#include <semaphore>
#include <span>
#include <stdexcept>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "mproc/mproc.hpp"
#include "test_support.hpp"

#ifndef MPROC_STRESS_DEFAULT_SECONDS
#define MPROC_STRESS_DEFAULT_SECONDS 20
#endif

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using u8 = std::uint8_t;
using u32 = std::uint32_t;
using u64 = std::uint64_t;

// --- the storm's shape ---------------------------------------------------------------------

constexpr unsigned pool_workers = 3;
constexpr auto task_timeout = 300ms;
constexpr std::size_t task_window = 32;
constexpr u64 max_tasks = u64{1} << 20;

constexpr u32 queue_count = 3;  // 0: unbounded, mixed sizes; 1: maxsize 4, mixed; 2: maxsize 64, small, batches
constexpr std::size_t queue_maxsize[queue_count] = {0, 4, 64};
constexpr u32 producers_per_queue = 2;
constexpr u32 consumers_per_queue = 2;
constexpr u32 lock_count = 2;  // 0: mproc::mutex; 1: a shared_value's recursive lock, taken twice
constexpr u32 lockers_per_lock[lock_count] = {3, 2};

constexpr std::size_t max_batch = 16;
constexpr u32 max_incarnations = 4096;  // of each role
// Message ids, handed out to producer incarnations in blocks of messages_per_producer (a
// killed producer wastes the rest of its block): a storm uses ~115 k a second, so a long
// run sized for 20 s would run out and spend its end with no producer.
u64 message_capacity_for(double seconds) {
  return std::max<u64>(u64{1} << 23, static_cast<u64>(seconds * (1 << 18)));
}
constexpr u32 messages_per_producer = 16384;
constexpr u64 pill_id = (u64{1} << 40) - 1;
constexpr u64 unbounded_backlog = 64;  // producers of queue 0 wait while it holds more

// A child forked from this multi-threaded test inherits every lock another thread held at
// the fork. glibc's malloc and mproc take theirs around fork(); the allocator of GCC 12's
// AddressSanitizer does not (LLVM added its fork handlers later), so under ASan a child can
// block for good in its first malloc (4 forks in 138 did so in an experiment with three
// threads allocating). Under ASan such a child is replaced and counted; elsewhere it fails.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool asan_allocator_forks_unsafely = true;
#else
constexpr bool asan_allocator_forks_unsafely = false;
#endif
constexpr auto start_limit = 5s;  // a role whose body has not begun by then is stuck
// Such a lock need not bite at once: the child's allocator cache serves it until a refill
// takes the lock, so a child can hang later, in the middle of a get (holding the queue's
// consumer lock, so that the whole queue stalls). Under ASan a role found waiting inside
// the sanitizer's runtime this long is killed and replaced, as the chaos would.
constexpr auto sanitizer_wait_limit = 2s;

// --- atomics on plain shared memory ----------------------------------------------------------
// The records are plain structs (shared_array wants trivially copyable types); every access
// goes through std::atomic_ref, so a kill between two stores leaves them in program order.

template <class T>
T ld(T& x) {
  return std::atomic_ref<T>(x).load();
}
template <class T, class U>
void st(T& x, U v) {
  std::atomic_ref<T>(x).store(static_cast<T>(v));
}
template <class T>
T inc(T& x, T by = 1) {
  return std::atomic_ref<T>(x).fetch_add(by);
}

u64 mix(u64 x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

u64 now_ns() {
  return static_cast<u64>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch()).count());
}

void cpu_relax(unsigned n) {
  for (unsigned i = 0; i < n; ++i) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
  }
}

// --- messages -------------------------------------------------------------------------------

std::size_t payload_size(u32 queue, u64 id) {
  const u64 r = mix(id ^ 0x5eed);
  if (queue == 2) return 1 + r % 160;
  const u64 pick = r % 100;
  const u64 more = r >> 8;
  if (pick < 55) return 1 + more % 256;
  if (pick < 90) return 257 + more % (16 << 10);
  return (64 << 10) + 1 + more % (192 << 10);  // spans two to five blocks
}

u64 checksum(u64 id, const u8* data, std::size_t n) {
  u64 h = mix(id ^ (n << 20));
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    u64 w;
    std::memcpy(&w, data + i, 8);
    h = (h ^ w) * 0x100000001b3ULL;
    h ^= h >> 29;
  }
  for (; i < n; ++i) h = (h ^ data[i]) * 0x100000001b3ULL;
  return mix(h);
}

void fill_payload(u64 id, std::vector<u8>& out, std::size_t n) {
  out.resize(n);
  u64 s = mix(id);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    const u64 w = s ^ (s >> 29);
    std::memcpy(out.data() + i, &w, 8);
  }
  for (; i < n; ++i) out[i] = static_cast<u8>(mix(s + i));
}

enum phase_value : u64 { phase_idle = 0, phase_in_get, phase_decoding, phase_decoded, phase_returned };
const char* const phase_names[] = {"idle", "in_get", "decoding", "decoded", "returned"};

struct consumer_rec {
  u32 queue;
  u32 state;  // role_state
  u64 phase;
  u64 nids;
  u64 ids[max_batch];
  u64 received;
  u64 duplicates;
  u64 corrupt;
  u64 disorder;
  u64 misrouted;
  u64 problem_id;  // the first id behind a problem, for the report
};

// The consumer record of this process (set in each consumer, and in the parent while it
// drains leftovers); messages decoded elsewhere (none) are not tracked.
consumer_rec* this_consumer = nullptr;

struct storm_message {
  u64 id = 0;
  u32 producer = 0;
  u32 seq = 0;
  u64 sum = 0;
  std::vector<u8> payload;
  bool verified = false;  // local: the checksum held when it was decoded

  template <class Archive>
  void save(Archive& archive) const {
    archive(id, producer, seq, sum, payload);
  }
  template <class Archive>
  void load(Archive& archive) {
    archive(id, producer, seq, sum);
    if (consumer_rec* c = this_consumer) {  // inside get, before the channel commits it
      const u64 n = ld(c->nids);
      if (n < max_batch) {
        st(c->ids[n], id);
        st(c->nids, n + 1);
      }
      st(c->phase, phase_decoding);
    }
    archive(payload);
    verified = checksum(id, payload.data(), payload.size()) == sum;
    if (consumer_rec* c = this_consumer) st(c->phase, phase_decoded);
  }
};

storm_message pill() {
  storm_message m;
  m.id = pill_id;
  m.sum = checksum(pill_id, nullptr, 0);
  return m;
}

// --- the other records ------------------------------------------------------------------

// role_starting: forked, its body not yet begun (see stuck_after_fork).
enum role_state : u32 { role_unused = 0, role_starting, role_running, role_exited, role_killed, role_failed };

struct producer_rec {
  u64 base;   // id of seq 1
  u32 limit;  // seqs 1..limit
  u32 queue;
  u32 last_returned;  // the last seq whose put returned
  u32 attempt_end;    // the last seq of the put in progress; == last_returned between puts
  u32 state;
};

struct locker_rec {
  u32 lock;
  u32 state;
  u64 done;  // critical sections completed (rolled back by the journal when cut short)
  u64 in_cs;
  u64 lock_timeouts;
};

struct guarded {  // the data a lock protects
  u64 counter;
  u64 deaths_seen;  // owner_deaths() when the lock was last taken
  u64 repairs;
  u64 unreported;  // journal found valid while owner_deaths() had not grown: a bug
  u64 j_valid;
  u64 j_counter;
  u64 j_locker;
  u64 j_done;
};

struct control {
  u64 producers_stop;
  u64 lockers_stop;
  u64 hard_deadline_ns;  // children give up by then whatever happens
};

// --- pool tasks -------------------------------------------------------------------------
// Workers inherit this pointer (and the mapping) from the parent through the zygote.

u32* task_runs = nullptr;    // [task id]: how many times it started
u32* task_ran_by = nullptr;  // [task id]: the pid of the worker that last started it
u32* latest_task = nullptr;  // [worker pid]: 1 + the id of the last task it started
std::size_t latest_task_size = 0;

void note_run(u64 id) {
  if (task_runs != nullptr && id < max_tasks) {
    const auto pid = static_cast<u32>(::getpid());
    // The worker's latest task first: a worker killed between these stores must count as
    // having died in this task, since the check of lost tasks reads latest_task. Counted
    // the other way round, a kill in between made a task lost with its own worker look like
    // one that ran elsewhere (about 1 storm in 20 of 75 s failed so; a sleep between the
    // two stores made 34 tasks in 20 s fail).
    if (pid < latest_task_size) st(latest_task[pid], static_cast<u32>(id + 1));
    st(task_ran_by[id], pid);
    inc(task_runs[id], u32{1});
  }
}

std::size_t pid_limit() {
  std::size_t n = 32768;
  std::ifstream("/proc/sys/kernel/pid_max") >> n;
  return std::min<std::size_t>(n, std::size_t{1} << 22) + 1;
}

u64 compute_value(u64 id, u32 rounds) {
  u64 h = mix(id);
  for (u32 r = 0; r < rounds; ++r) h = mix(h + r);
  return h;
}

u64 task_compute(u64 id, u32 rounds) {
  note_run(id);
  return compute_value(id, rounds);
}

std::vector<u8> task_echo(u64 id, std::vector<u8> data) {
  note_run(id);
  for (u8& b : data) b ^= 0x5a;
  return data;
}

u64 task_throw(u64 id) {
  note_run(id);
  throw std::runtime_error("storm task " + std::to_string(id));
}

u64 task_hang(u64 id) {
  note_run(id);
  std::this_thread::sleep_for(20s);  // far past task_timeout: completing is a failure
  return id;
}

u64 task_item(u64 x) { return mix(x); }

int task_parent_pid() { return static_cast<int>(::getppid()); }

enum task_kind : u8 { kind_compute, kind_echo, kind_throw, kind_map, kind_hang, kind_count };
const char* const task_kind_names[] = {"compute", "echo", "throw", "map", "hang"};
enum task_outcome : u8 { outcome_none = 0, outcome_ok, outcome_lost, outcome_timeout, outcome_wrong };

// --- /proc helpers ----------------------------------------------------------------------

std::vector<pid_t> children_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  for (pid_t p; in >> p;) out.push_back(p);
  return out;
}

// The syscall `pid` is blocked in, from /proc/PID/syscall: its number, 6 arguments, the
// stack pointer and the program counter ("running" alone when it is not blocked).
std::vector<std::string> blocked_syscall(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/syscall");
  std::vector<std::string> fields;
  for (std::string f; in >> f;) fields.push_back(f);
  return fields;
}

// The line of /proc/PID/maps whose range holds `address`, and the address's offset in
// what is mapped there; nullopt when none does.
struct mapped_at {
  std::string name;
  std::uintptr_t offset;
};
std::optional<mapped_at> mapping_of(pid_t pid, std::uintptr_t address) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  for (std::string line; std::getline(maps, line);) {
    std::uintptr_t begin = 0, end = 0, offset = 0;
    char name[512] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %*s %lx %*s %*s %511[^\n]", &begin, &end, &offset, name) < 3) continue;
    if (address >= begin && address < end) return mapped_at{name, address - begin + offset};
  }
  return std::nullopt;
}

// Where a blocked process waits: its syscall and, for a futex, the mapping and offset of
// the word (e.g. "/memfd:mproc-queue (deleted)+0xc0", a channel's consumers' lock).
std::string blocked_on(pid_t pid) {
  const std::vector<std::string> fields = blocked_syscall(pid);
  std::string out = "syscall " + (fields.empty() ? std::string() : fields[0]);
  if (fields.size() < 2 || fields[0] != "202") return out;  // x86-64 futex
  const auto at = mapping_of(pid, std::strtoull(fields[1].c_str(), nullptr, 16));
  if (!at) return out + " (futex) at " + fields[1];
  char where[64];
  std::snprintf(where, sizeof where, "+0x%lx", static_cast<unsigned long>(at->offset));
  return out + " (futex) on " + at->name + where;
}

// Whether `pid` sleeps in a futex or yields from code of libasan (a role child is single-
// threaded: such a wait can only be on a lock another thread of its parent held at the fork).
bool waits_inside_sanitizer(pid_t pid) {
  const std::vector<std::string> fields = blocked_syscall(pid);
  if (fields.size() < 9 || (fields[0] != "202" && fields[0] != "24")) return false;  // futex, sched_yield
  const auto at = mapping_of(pid, std::strtoull(fields.back().c_str(), nullptr, 16));
  return at && at->name.find("libasan") != std::string::npos;
}

std::string describe_process(pid_t pid) {
  std::string comm, wchan;
  std::ifstream("/proc/" + std::to_string(pid) + "/comm") >> comm;
  std::ifstream("/proc/" + std::to_string(pid) + "/wchan") >> wchan;
  const auto st = mproc_test::read_proc_stat(pid);
  return std::to_string(pid) + " " + comm + " state " + (st ? std::string(1, st->state) : "?") + " wchan " + wchan +
         ", " + blocked_on(pid);
}

// Total size of this process's queue memfds (the pool's two channels included).
std::string queue_memory_report() {
  std::string out;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return out;
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    char target[256] = {};
    const std::string link = std::string("/proc/self/fd/") + e->d_name;
    const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    if (n <= 0 || std::strstr(target, "mproc-queue") == nullptr) continue;
    struct stat s {};
    if (::stat(link.c_str(), &s) == 0) {
      out += " " + std::to_string(s.st_size >> 10) + "K(" + std::to_string(s.st_blocks * 512 >> 10) + "K used)";
    }
  }
  ::closedir(dir);
  return out;
}

double storm_seconds() {
  if (const char* s = std::getenv("MPROC_STRESS_SECONDS")) {
    const double v = std::atof(s);
    if (v > 0) return v;
  }
  return MPROC_STRESS_DEFAULT_SECONDS;
}

u64 storm_seed() {
  if (const char* s = std::getenv("MPROC_STRESS_SEED")) return std::strtoull(s, nullptr, 0);
  return now_ns();
}

// Prints and aborts if `limit` passes before stop(): a hang must fail with a diagnosis,
// not stall until ctest's timeout.
class watchdog {
 public:
  // `describe()` says what went wrong so far; it is printed if the watchdog fires.
  watchdog(std::chrono::seconds limit, std::function<std::string()> describe)
      : describe_(std::move(describe)), thread_([this, limit] { watch(limit); }) {}
  ~watchdog() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void phase(const char* what) {
    std::lock_guard lock(mutex_);
    phase_ = what;
  }

 private:
  void watch(std::chrono::seconds limit) {
    std::unique_lock lock(mutex_);
    if (cv_.wait_for(lock, limit, [&] { return done_; })) return;
    std::fprintf(stderr, "\nKILL STORM HUNG: phase \"%s\" still running after %llds. Processes:\n", phase_,
                 static_cast<long long>(limit.count()));
    for (const auto& [pid, state] : mproc_test::children_of_self()) {
      std::fprintf(stderr, "  %s\n", describe_process(pid).c_str());
      for (pid_t g : children_of(pid)) std::fprintf(stderr, "    %s\n", describe_process(g).c_str());
    }
    std::fprintf(stderr, "Failures so far:%s\n", describe_().c_str());
    std::fflush(stderr);
    std::abort();
  }

  std::function<std::string()> describe_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  const char* phase_ = "start";
  std::thread thread_;
};

// --- the storm -----------------------------------------------------------------------------

enum class role_kind { producer, consumer, locker };

struct role {
  role_kind kind;
  u32 group;  // queue, or lock
  u32 rec = 0;
  std::unique_ptr<mproc::process> proc;
  clock_type::time_point forked_at{};
  clock_type::time_point in_sanitizer_since{};  // zero: not seen waiting inside ASan
};

struct kill_figures {
  u64 workers = 0, worker_attempts_missed = 0;
  std::vector<u32> worker_last_tasks;  // 1 + the id of the last task each killed worker started
  u64 producers = 0, producers_in_put = 0;
  u64 consumers = 0, consumers_by_phase[5] = {};
  u64 lockers = 0, lockers_in_cs = 0;
  u64 lockers_by_lock[lock_count] = {};
  u64 targeted = 0;
  u64 total() const { return workers + producers + consumers + lockers; }
};

class storm {
 public:
  explicit storm(double seconds, u64 seed)
      : seconds_(seconds),
        seed_(seed),
        producers_(max_incarnations),
        consumers_(max_incarnations + 1),  // the last one: the parent, draining leftovers
        lockers_(max_incarnations),
        received_by_(message_capacity_),
        runs_(max_tasks),
        ran_by_(max_tasks),
        latest_(pid_limit()) {
    for (u32 q = 0; q < queue_count; ++q) queues_.emplace_back(queue_maxsize[q]);
    task_runs = runs_.data();
    task_ran_by = ran_by_.data();
    latest_task = latest_.data();
    latest_task_size = latest_.size();
    outcome_ = std::make_unique<std::atomic<u8>[]>(max_tasks);
    kind_ = std::make_unique<u8[]>(max_tasks);
  }
  ~storm() {
    task_runs = nullptr;
    task_ran_by = nullptr;
    latest_task = nullptr;
    latest_task_size = 0;
  }

  void run();

  // --- results, for the test body ---
  std::vector<std::string> failures;  // invariant violations, each with details
  std::string report;

 private:
  // children
  void producer_main(u32 p);
  void consumer_main(u32 c);
  void locker_main(u32 i);
  void mark(consumer_rec& r, u32 me, u32 queue, const storm_message& m, std::vector<u32>& last_seq);
  void critical_section(guarded& g, u64 deaths, u32 i, std::mt19937_64& rng);
  void repair(guarded& g, u64 deaths);
  bool past_hard_deadline() { return now_ns() > ld(ctl_.value().hard_deadline_ns); }

  // supervisor
  void supervise();
  void spawn(role& r);
  void retire(role& r, bool by_chaos);
  bool kill_role(role& r, bool targeted);
  bool kill_pool_worker();
  void service_exits();
  void shutdown_roles();
  std::string describe_queue(u32 q);
  bool kill_and_join(role& r);
  bool stuck_after_fork(role& r);
  bool hung_in_sanitizer(role& r);
  void replace_sanitizer_hangs();
  bool join_all(role_kind kind, std::chrono::seconds limit, const char* what);

  // pool
  void submit_tasks(mproc::pool& pool);
  void settle(u64 id, task_outcome outcome, const std::string& detail);
  task_outcome classify(std::exception_ptr e, u64 id, std::string& detail);

  // checks
  void check_tasks();
  void check_messages();
  void check_locks();
  void fail(std::string what) {
    std::lock_guard lock(failures_mutex_);
    failures.push_back(std::move(what));
  }

  double seconds_;
  u64 seed_;
  u64 message_capacity_ = message_capacity_for(seconds_);
  clock_type::time_point storm_end_{};

  std::vector<mproc::queue<storm_message>> queues_;
  mproc::shared_array<producer_rec> producers_;
  mproc::shared_array<consumer_rec> consumers_;
  mproc::shared_array<locker_rec> lockers_;
  mproc::shared_array<u32> received_by_;
  mproc::shared_array<u32> runs_;
  mproc::shared_array<u32> ran_by_;
  mproc::shared_array<u32> latest_;
  std::set<u32> killed_workers_;  // pids the chaos killed
  mproc::shared_value<control> ctl_;
  mproc::mutex lock0_;
  mproc::shared_value<guarded> guarded0_;  // under lock0_
  mproc::shared_value<guarded> guarded1_;  // under its own get_lock(), a recursive_mutex

  std::mutex failures_mutex_;
  std::unique_ptr<watchdog> watchdog_;

  // supervisor state (its thread only, read by the checks after it ended)
  std::vector<role> roles_;
  u32 next_producer_ = 0, next_consumer_ = 0, next_locker_ = 0;
  u64 next_id_ = 0;
  u64 spawned_[3] = {};
  u64 asan_fork_hangs_ = 0;  // children replaced because a lock held at their fork hung them (ASan)
  clock_type::time_point last_sanitizer_sweep_{};
  kill_figures kills_;
  pid_t zygote_ = 0;
  std::mt19937_64 chaos_rng_;

  // pool state
  std::unique_ptr<std::atomic<u8>[]> outcome_;
  std::unique_ptr<u8[]> kind_;
  u64 submitted_ = 0;
  std::counting_semaphore<task_window> window_{task_window};
  std::atomic<u64> settled_{0}, ok_{0}, lost_{0}, timeouts_{0}, wrong_{0}, settled_twice_{0}, lost_bad_code_{0};
  std::atomic<u64> by_kind_[kind_count][5] = {};
  std::mutex detail_mutex_;
  std::vector<std::string> task_details_;
};

// --- producers ----------------------------------------------------------------------------

void storm::producer_main(u32 p) {
  producer_rec& r = producers_[p];
  const u32 q = r.queue;
  auto& queue = queues_[q];
  control& ctl = ctl_.value();
  std::mt19937_64 rng(seed_ ^ mix(0x1000 + p));
  std::vector<storm_message> batch;
  u32 seq = 0;
  while (seq < r.limit && ld(ctl.producers_stop) == 0 && !past_hard_deadline()) {
    if (q == 0) {
      while (queue.qsize() > unbounded_backlog && ld(ctl.producers_stop) == 0) std::this_thread::sleep_for(200us);
    }
    const u32 k = std::min<u32>(q == 2 ? 1 + static_cast<u32>(rng() % max_batch) : 1, r.limit - seq);
    batch.resize(k);
    for (u32 j = 0; j < k; ++j) {
      storm_message& m = batch[j];
      m.seq = seq + 1 + j;
      m.id = r.base + m.seq - 1;
      m.producer = p;
      fill_payload(m.id, m.payload, payload_size(q, m.id));
      m.sum = checksum(m.id, m.payload.data(), m.payload.size());
    }
    st(r.attempt_end, seq + k);
    bool put = true;
    if (q == 2) {
      queue.put_many(std::span<const storm_message>(batch));
    } else if (q == 1 && rng() % 2 == 0) {
      put = queue.try_put_for(batch[0], 20ms);
    } else {
      queue.put(batch[0]);
    }
    if (!put) {
      st(r.attempt_end, seq);  // nothing was put: try again
      continue;
    }
    seq += k;
    st(r.last_returned, seq);
  }
}

// --- consumers ----------------------------------------------------------------------------

void storm::consumer_main(u32 c) {
  consumer_rec& r = consumers_[c];
  this_consumer = &r;
  const u32 q = r.queue;
  auto& queue = queues_[q];
  const u32 me = c + 1;
  std::mt19937_64 rng(seed_ ^ mix(0x2000 + c));
  std::vector<u32> last_seq(max_incarnations, 0);
  std::vector<storm_message> got;
  for (;;) {
    st(r.nids, 0);
    st(r.phase, phase_in_get);
    got.clear();
    try {
      const u64 mode = rng() % 4;
      const auto wait = std::chrono::milliseconds(1 + rng() % 20);
      if (q == 2) {
        const std::size_t most = 1 + rng() % max_batch;
        got = mode < 2 ? queue.get_many(most) : queue.get_many(most, wait);
      } else if (mode < 2) {
        got.push_back(queue.get());
      } else if (mode == 2) {
        if (auto m = queue.try_get_for(wait)) got.push_back(std::move(*m));
      } else {
        got.push_back(queue.get(wait));
      }
    } catch (const mproc::queue_empty&) {
    } catch (const mproc::serialization_error&) {
      inc(r.corrupt);  // the message was consumed undecodable: it counts as lost too
      st(r.problem_id, ld(r.nids) != 0 ? ld(r.ids[0]) : ~u64{0});
    }
    st(r.phase, phase_returned);
    unsigned pills = 0;
    for (const storm_message& m : got) {
      if (m.id == pill_id) {
        ++pills;
      } else {
        mark(r, me, q, m, last_seq);
      }
    }
    st(r.phase, phase_idle);
    if (pills > 0) {
      for (unsigned k = 1; k < pills; ++k) queue.put(pill());  // a batch took another's pill
      return;
    }
    if (past_hard_deadline()) throw std::runtime_error("consumer gave up: hard deadline passed");
  }
}

void storm::mark(consumer_rec& r, u32 me, u32 queue, const storm_message& m, std::vector<u32>& last_seq) {
  inc(r.received);
  if (!m.verified || m.payload.size() != payload_size(queue, m.id)) {
    if (inc(r.corrupt) == 0) st(r.problem_id, m.id);
    return;
  }
  if (m.id >= message_capacity_ || m.producer >= max_incarnations) {
    if (inc(r.misrouted) == 0) st(r.problem_id, m.id);
    return;
  }
  producer_rec& p = producers_[m.producer];
  if (ld(p.queue) != queue || m.seq == 0 || m.seq > ld(p.limit) || m.id != ld(p.base) + m.seq - 1) {
    if (inc(r.misrouted) == 0) st(r.problem_id, m.id);
    return;
  }
  u32 none = 0;
  if (!std::atomic_ref<u32>(received_by_[m.id]).compare_exchange_strong(none, me)) {
    if (inc(r.duplicates) == 0) st(r.problem_id, m.id);
  }
  if (m.seq <= last_seq[m.producer]) {
    if (inc(r.disorder) == 0) st(r.problem_id, m.id);
  }
  last_seq[m.producer] = m.seq;
}

// --- lockers ------------------------------------------------------------------------------

void storm::locker_main(u32 i) {
  locker_rec& r = lockers_[i];
  const u32 which = r.lock;
  control& ctl = ctl_.value();
  std::mt19937_64 rng(seed_ ^ mix(0x3000 + i));
  while (ld(ctl.lockers_stop) == 0 && !past_hard_deadline()) {
    if (which == 0) {
      if (!lock0_.try_lock_for(20s)) {
        inc(r.lock_timeouts);
        continue;
      }
      critical_section(guarded0_.value(), lock0_.owner_deaths(), i, rng);
      lock0_.unlock();
    } else {
      mproc::recursive_mutex& lock = guarded1_.get_lock();
      if (!lock.try_lock_for(20s)) {
        inc(r.lock_timeouts);
        continue;
      }
      lock.lock();  // a second level: a holder killed here holds it twice
      critical_section(guarded1_.value(), guarded1_.owner_deaths(), i, rng);
      lock.unlock();
      lock.unlock();
    }
    if (rng() % 4 == 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 400));
    } else {
      cpu_relax(static_cast<unsigned>(rng() % 500));
    }
  }
}

// The holder died inside its critical section if the journal is valid: roll it back.
void storm::repair(guarded& g, u64 deaths) {
  if (ld(g.j_valid) != 0) {
    if (deaths == ld(g.deaths_seen)) inc(g.unreported);
    const u64 who = ld(g.j_locker);
    st(g.counter, ld(g.j_counter));
    if (who < max_incarnations) st(lockers_[who].done, ld(g.j_done));
    inc(g.repairs);
    st(g.j_valid, 0);
  }
  st(g.deaths_seen, deaths);
}

void storm::critical_section(guarded& g, u64 deaths, u32 i, std::mt19937_64& rng) {
  locker_rec& r = lockers_[i];
  st(r.in_cs, 1);
  repair(g, deaths);
  const u64 c = ld(g.counter);
  const u64 d = ld(r.done);
  st(g.j_counter, c);
  st(g.j_locker, i);
  st(g.j_done, d);
  st(g.j_valid, 1);
  cpu_relax(static_cast<unsigned>(rng() % 3000));  // the work the lock protects
  st(g.counter, c + 1);
  cpu_relax(static_cast<unsigned>(rng() % 200));
  st(r.done, d + 1);
  st(g.j_valid, 0);
  st(r.in_cs, 0);
}

// --- the supervisor -------------------------------------------------------------------------

void storm::spawn(role& r) {
  r.proc.reset();
  u32 rec = 0;
  std::function<void()> body;
  switch (r.kind) {
    case role_kind::producer: {
      if (next_producer_ >= max_incarnations || next_id_ >= message_capacity_) return;
      rec = next_producer_++;
      producer_rec& p = producers_[rec];
      p.base = next_id_;
      p.limit = static_cast<u32>(std::min<u64>(messages_per_producer, message_capacity_ - next_id_));
      next_id_ += p.limit;
      p.queue = r.group;
      st(p.state, role_starting);
      body = [this, rec] {
        st(producers_[rec].state, role_running);
        producer_main(rec);
      };
      break;
    }
    case role_kind::consumer: {
      if (next_consumer_ >= max_incarnations) return;
      rec = next_consumer_++;
      consumers_[rec].queue = r.group;
      st(consumers_[rec].state, role_starting);
      body = [this, rec] {
        st(consumers_[rec].state, role_running);
        consumer_main(rec);
      };
      break;
    }
    case role_kind::locker: {
      if (next_locker_ >= max_incarnations) return;
      rec = next_locker_++;
      lockers_[rec].lock = r.group;
      st(lockers_[rec].state, role_starting);
      body = [this, rec] {
        st(lockers_[rec].state, role_running);
        locker_main(rec);
      };
      break;
    }
  }
  r.rec = rec;
  auto proc = std::make_unique<mproc::process>(std::move(body));
  proc->set_daemon(true);  // dies with us if the test itself dies
  r.forked_at = clock_type::now();
  try {
    proc->start();
  } catch (const std::exception& e) {  // out of processes: say so, and try again later
    fail(std::string("could not start a child: ") + e.what());
    return;
  }
  ++spawned_[static_cast<int>(r.kind)];
  r.proc = std::move(proc);
}

u32* state_of(role& r, mproc::shared_array<producer_rec>& p, mproc::shared_array<consumer_rec>& c,
              mproc::shared_array<locker_rec>& l) {
  switch (r.kind) {
    case role_kind::producer:
      return &p[r.rec].state;
    case role_kind::consumer:
      return &c[r.rec].state;
    case role_kind::locker:
      return &l[r.rec].state;
  }
  return nullptr;
}

// The child has ended (joined): book it.
void storm::retire(role& r, bool by_chaos) {
  const int code = r.proc->exitcode().value_or(-1000);
  u32* state = state_of(r, producers_, consumers_, lockers_);
  const char* names[] = {"producer", "consumer", "locker"};
  const std::string who = std::string(names[static_cast<int>(r.kind)]) + " " + std::to_string(r.rec);
  if (code == -SIGKILL && by_chaos) {
    st(*state, role_killed);
  } else if (code == 0 && (r.kind == role_kind::producer || !by_chaos)) {
    st(*state, role_exited);  // a producer that used up its ids, or a child that was told to stop
  } else {
    st(*state, role_failed);
    fail(who + " ended with exit code " + std::to_string(code) + (by_chaos ? " (a SIGKILL was sent)" : ""));
  }
  r.proc.reset();
}

bool storm::kill_role(role& r, bool targeted) {
  if (!r.proc) return false;
  if (targeted) {
    // Wait (briefly) for the victim to be inside the window that matters.
    const auto until = clock_type::now() + 20ms;
    while (clock_type::now() < until) {
      bool inside = false;
      switch (r.kind) {
        case role_kind::producer:
          inside = ld(producers_[r.rec].attempt_end) > ld(producers_[r.rec].last_returned);
          break;
        case role_kind::consumer:
          inside = ld(consumers_[r.rec].phase) == phase_decoding;
          break;
        case role_kind::locker:
          inside = ld(lockers_[r.rec].in_cs) != 0;
          break;
      }
      if (inside) break;
      std::this_thread::sleep_for(20us);
    }
  }
  if (!kill_and_join(r)) return false;
  if (r.proc->exitcode() != -SIGKILL) {  // it ended on its own first (a producer out of ids)
    retire(r, false);
    spawn(r);
    return false;
  }
  switch (r.kind) {
    case role_kind::producer:
      ++kills_.producers;
      kills_.producers_in_put += ld(producers_[r.rec].attempt_end) > ld(producers_[r.rec].last_returned);
      break;
    case role_kind::consumer: {
      ++kills_.consumers;
      const u64 phase = ld(consumers_[r.rec].phase);
      ++kills_.consumers_by_phase[phase < 5 ? phase : 0];
      break;
    }
    case role_kind::locker:
      ++kills_.lockers;
      ++kills_.lockers_by_lock[r.group];
      kills_.lockers_in_cs += ld(lockers_[r.rec].in_cs) != 0;
      break;
  }
  kills_.targeted += targeted;
  retire(r, true);
  spawn(r);
  return true;
}

bool storm::kill_pool_worker() {
  const std::vector<pid_t> workers = children_of(zygote_);
  if (workers.empty()) return false;
  const pid_t pid = workers[chaos_rng_() % workers.size()];
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return false;
  // The pidfd names this process for good; if it is (still) the zygote's child now, it is
  // a worker, and the signal cannot reach a recycled pid.
  const auto stat = mproc_test::read_proc_stat(pid);
  bool sent = false;
  if (stat && stat->ppid == zygote_ && stat->state != 'Z') {
    sent = ::syscall(SYS_pidfd_send_signal, fd, SIGKILL, nullptr, 0) == 0;
  }
  // Once it is dead (its pidfd readable), the last task it started is final.
  if (sent && !mproc_test::fd_readable(fd, 10'000)) fail("a SIGKILLed pool worker did not end within 10 s");
  ::close(fd);
  if (sent) {
    ++kills_.workers;
    killed_workers_.insert(static_cast<u32>(pid));
    if (static_cast<std::size_t>(pid) < latest_.size())
      kills_.worker_last_tasks.push_back(ld(latest_[static_cast<std::size_t>(pid)]));
  } else {
    ++kills_.worker_attempts_missed;
  }
  return sent;
}

// Children that ended by themselves (producers out of ids) or failed.
void storm::service_exits() {
  for (role& r : roles_) {
    if (!r.proc) {
      spawn(r);  // a start that failed earlier
    } else if (!r.proc->is_alive()) {
      retire(r, false);
      spawn(r);
    } else if (stuck_after_fork(r)) {
      spawn(r);
    }
  }
  replace_sanitizer_hangs();
}

// SIGKILLs the role's child and waits for its end; false (a failure) if it did not end.
bool storm::kill_and_join(role& r) {
  r.proc->kill();
  if (r.proc->join(10s)) return true;
  fail("a SIGKILLed child did not end within 10 s: " + describe_process(r.proc->pid().value_or(0)));
  return false;
}

// Under ASan: a role seen waiting inside the sanitizer's runtime for sanitizer_wait_limit
// (see asan_allocator_forks_unsafely) is killed, booked as the chaos books a kill, and
// replaced. Returns whether it was.
bool storm::hung_in_sanitizer(role& r) {
  if (!asan_allocator_forks_unsafely || !r.proc) return false;
  const pid_t pid = r.proc->pid().value_or(0);
  if (!waits_inside_sanitizer(pid)) {
    r.in_sanitizer_since = {};
    return false;
  }
  const auto now = clock_type::now();
  if (r.in_sanitizer_since == clock_type::time_point{}) r.in_sanitizer_since = now;
  if (now - r.in_sanitizer_since < sanitizer_wait_limit) return false;
  ++asan_fork_hangs_;
  std::fprintf(stderr, "kill storm: a child waits inside ASan's allocator (a lock held at its fork): %s\n",
               describe_process(pid).c_str());
  r.in_sanitizer_since = {};
  if (kill_and_join(r)) retire(r, true);
  spawn(r);
  return true;
}

// Looks at every role, at most every 250 ms.
void storm::replace_sanitizer_hangs() {
  if (!asan_allocator_forks_unsafely || clock_type::now() - last_sanitizer_sweep_ < 250ms) return;
  last_sanitizer_sweep_ = clock_type::now();
  for (role& r : roles_) (void)hung_in_sanitizer(r);
}

// A child that has not begun its body start_limit after its fork: killed and booked as
// killed (it put, took and locked nothing); a failure unless this is the known ASan case
// (see asan_allocator_forks_unsafely). Returns whether it was.
bool storm::stuck_after_fork(role& r) {
  if (ld(*state_of(r, producers_, consumers_, lockers_)) != role_starting ||
      clock_type::now() - r.forked_at < start_limit) {
    return false;
  }
  const std::string how = describe_process(r.proc->pid().value_or(0));
  if (asan_allocator_forks_unsafely) {
    ++asan_fork_hangs_;
    std::fprintf(stderr, "kill storm: a child stuck after fork (ASan's allocator): %s\n", how.c_str());
  } else {
    fail("a child has not begun its role " + std::to_string(start_limit.count()) + " s after fork: " + how);
  }
  if (kill_and_join(r)) retire(r, true);
  return true;
}

// What a producer stalled on queue `q` waits for: the queue's fill and its consumers.
std::string storm::describe_queue(u32 q) {
  std::string out = "; queue " + std::to_string(q) + " holds " + std::to_string(queues_[q].qsize()) + " (maxsize " +
                    std::to_string(queue_maxsize[q]) + "), its consumers:";
  for (role& r : roles_) {
    if (r.kind != role_kind::consumer || r.group != q) continue;
    out += " [" + std::to_string(r.rec) + ": ";
    out += r.proc ? describe_process(r.proc->pid().value_or(0)) + ", phase " +
                        std::to_string(ld(consumers_[r.rec].phase))
                  : std::string("not running");
    out += "]";
  }
  return out;
}

bool storm::join_all(role_kind kind, std::chrono::seconds limit, const char* what) {
  const auto deadline = clock_type::now() + limit;
  bool all = true;
  for (role& r : roles_) {
    if (r.kind != kind || !r.proc) continue;
    // In steps, so that a child stuck after its fork is seen start_limit after it, not at
    // the deadline, and one hung inside ASan (this role or another it waits for) replaced.
    bool joined = false;
    while (r.proc && !(joined = r.proc->join(100ms)) && clock_type::now() < deadline) {
      if (stuck_after_fork(r)) break;
      replace_sanitizer_hangs();
    }
    if (!r.proc) continue;
    if (!joined) {
      all = false;
      fail(std::string("deadlock: ") + what + " " + std::to_string(r.rec) + " (of queue or lock " +
           std::to_string(r.group) + ") still running " +
           std::to_string(limit.count()) +
           " s after it was told to stop: " + describe_process(r.proc->pid().value_or(0)) +
           (kind == role_kind::producer ? describe_queue(r.group) : std::string()));
      r.proc->kill();
      r.proc->join();
      st(*state_of(r, producers_, consumers_, lockers_), role_failed);
      r.proc.reset();
      continue;
    }
    retire(r, false);
  }
  return all;
}

void storm::shutdown_roles() {
  control& ctl = ctl_.value();
  watchdog_->phase("producers stopping");
  st(ctl.producers_stop, 1);
  join_all(role_kind::producer, 30s, "producer");

  watchdog_->phase("lockers stopping");
  st(ctl.lockers_stop, 1);
  join_all(role_kind::locker, 30s, "locker");

  // Every message put must be taken by the consumers, who are now mostly blocked in get.
  watchdog_->phase("queues draining");
  const auto drained = [&] {
    for (auto& q : queues_) {
      if (q.qsize() != 0) return false;
    }
    return true;
  };
  if (!mproc_test::eventually([&] { return (replace_sanitizer_hangs(), drained()); }, 30s)) {
    std::string sizes;
    for (auto& q : queues_) sizes += " " + std::to_string(q.qsize());
    fail("deadlock: the queues still hold messages 30 s after the producers stopped (sizes" + sizes +
         "): consumers stalled");
  }
  watchdog_->phase("consumers stopping");
  for (u32 q = 0; q < queue_count; ++q) {
    for (u32 k = 0; k < consumers_per_queue; ++k) {
      if (!queues_[q].try_put_for(pill(), 10s)) fail("deadlock: queue " + std::to_string(q) + " took no pill in 10 s");
    }
  }
  join_all(role_kind::consumer, 30s, "consumer");
}

void storm::supervise() {
  try {
    for (u32 q = 0; q < queue_count; ++q) {
      for (u32 k = 0; k < producers_per_queue; ++k) roles_.push_back({role_kind::producer, q, 0, nullptr});
      for (u32 k = 0; k < consumers_per_queue; ++k) roles_.push_back({role_kind::consumer, q, 0, nullptr});
    }
    for (u32 l = 0; l < lock_count; ++l) {
      for (u32 k = 0; k < lockers_per_lock[l]; ++k) roles_.push_back({role_kind::locker, l, 0, nullptr});
    }
    for (role& r : roles_) spawn(r);

    while (clock_type::now() < storm_end_) {
      std::this_thread::sleep_for(std::chrono::microseconds(2000 + chaos_rng_() % 23000));
      service_exits();
      const u64 pick = chaos_rng_() % 100;
      role_kind kind;
      if (pick < 12) {
        kill_pool_worker();
        continue;
      } else if (pick < 34) {
        kind = role_kind::producer;
      } else if (pick < 70) {
        kind = role_kind::consumer;
      } else {
        kind = role_kind::locker;
      }
      std::vector<role*> candidates;
      for (role& r : roles_) {
        if (r.kind == kind && r.proc) candidates.push_back(&r);
      }
      if (candidates.empty()) continue;
      kill_role(*candidates[chaos_rng_() % candidates.size()], chaos_rng_() % 2 == 0);
    }
    service_exits();
    shutdown_roles();
  } catch (const std::exception& e) {
    fail(std::string("the supervisor failed: ") + e.what());
    for (role& r : roles_) {
      if (r.proc) {
        r.proc->kill();
        r.proc->join();
        r.proc.reset();
      }
    }
  }
}

// --- the pool -------------------------------------------------------------------------------

void storm::settle(u64 id, task_outcome outcome, const std::string& detail) {
  u8 none = outcome_none;
  if (!outcome_[id].compare_exchange_strong(none, outcome)) {
    ++settled_twice_;
  } else {
    ++settled_;
    (outcome == outcome_ok ? ok_ : outcome == outcome_lost ? lost_ : outcome == outcome_timeout ? timeouts_ : wrong_)++;
    ++by_kind_[kind_[id]][outcome];
  }
  if (outcome == outcome_wrong) {
    std::lock_guard lock(detail_mutex_);
    if (task_details_.size() < 20) {
      task_details_.push_back("task " + std::to_string(id) + " (" + task_kind_names[kind_[id]] + "): " + detail);
    }
  }
  window_.release();
}

task_outcome storm::classify(std::exception_ptr e, u64 id, std::string& detail) {
  const u8 kind = kind_[id];
  try {
    std::rethrow_exception(e);
  } catch (const mproc::worker_lost& w) {
    if (w.exitcode() != -SIGKILL) {
      ++lost_bad_code_;
      detail = std::string("worker_lost with exit code ") + std::to_string(w.exitcode()) + ": " + w.what();
      return outcome_wrong;
    }
    return outcome_lost;
  } catch (const mproc::timeout_error&) {
    return outcome_timeout;
  } catch (const mproc::error& x) {
    detail = std::string("unexpected mproc error: ") + x.what();
    return outcome_wrong;
  } catch (const std::runtime_error& x) {
    if (kind == kind_throw && x.what() == "storm task " + std::to_string(id)) return outcome_ok;
    detail = std::string("unexpected runtime_error: ") + x.what();
    return outcome_wrong;
  } catch (const std::exception& x) {
    detail = std::string("unexpected exception: ") + x.what();
    return outcome_wrong;
  } catch (...) {
    detail = "unknown exception";
    return outcome_wrong;
  }
}

void storm::submit_tasks(mproc::pool& pool) {
  std::mt19937_64 rng(seed_ ^ 0x4000);
  auto last_hang = clock_type::now();
  u64 hang_id = ~u64{0};
  while (clock_type::now() < storm_end_ && submitted_ < max_tasks) {
    if (!window_.try_acquire_for(60s)) {
      fail("pool: no task of the 32 in flight ended within 60 s (tasks hung or vanished)");
      return;
    }
    const u64 id = submitted_++;
    const auto on_error = [this, id](std::exception_ptr e) {
      std::string detail;
      const task_outcome o = classify(e, id, detail);
      settle(id, o, detail);
    };
    u8 kind;
    const bool hang_idle = hang_id == ~u64{0} || outcome_[hang_id].load() != outcome_none;
    if (hang_idle && clock_type::now() - last_hang > 1s) {
      kind = kind_hang;
      hang_id = id;
      last_hang = clock_type::now();
    } else {
      const u64 pick = rng() % 100;
      kind = pick < 70 ? kind_compute : pick < 80 ? kind_echo : pick < 88 ? kind_throw : kind_map;
    }
    kind_[id] = kind;
    try {
      switch (kind) {
        case kind_compute: {
          const u32 rounds = static_cast<u32>(rng() % 50000);
          const u64 expect = compute_value(id, rounds);
          pool.apply_async(task_compute, id, rounds)
              .then(
                  [this, id, expect](const u64& v) {
                    settle(id, v == expect ? outcome_ok : outcome_wrong, "wrong value " + std::to_string(v));
                  },
                  on_error);
          break;
        }
        case kind_echo: {
          std::vector<u8> data;
          fill_payload(id, data, 1 + rng() % (160 << 10));
          for (u8& b : data) b ^= 0x5a;
          const u64 expect = checksum(id, data.data(), data.size());
          for (u8& b : data) b ^= 0x5a;
          pool.apply_async(task_echo, id, std::move(data))
              .then(
                  [this, id, expect](const std::vector<u8>& v) {
                    const bool right = checksum(id, v.data(), v.size()) == expect;
                    settle(id, right ? outcome_ok : outcome_wrong, "wrong bytes echoed");
                  },
                  on_error);
          break;
        }
        case kind_throw:
          pool.apply_async(task_throw, id)
              .then([this, id](const u64&) { settle(id, outcome_wrong, "returned instead of throwing"); }, on_error);
          break;
        case kind_map: {
          // Up to 48 chunks: past the map's window (4 per worker), so that chunks are fed
          // from the result thread while workers die.
          std::vector<u64> items(1 + rng() % 48);
          for (std::size_t k = 0; k < items.size(); ++k) items[k] = id * 64 + k;
          pool.map_async(task_item, items, 1 + rng() % 2)
              .then(
                  [this, id, items](const std::vector<u64>& v) {
                    bool right = v.size() == items.size();
                    for (std::size_t k = 0; right && k < v.size(); ++k) right = v[k] == mix(items[k]);
                    settle(id, right ? outcome_ok : outcome_wrong, "wrong map result");
                  },
                  on_error);
          break;
        }
        case kind_hang:
          pool.apply_async(task_hang, id)
              .then([this, id](const u64&) { settle(id, outcome_wrong, "completed past task_timeout"); }, on_error);
          break;
      }
    } catch (const std::exception& e) {
      fail(std::string("pool: submitting a task threw ") + e.what());
      settle(id, outcome_wrong, "submission threw");
      return;
    }
  }
}

// --- checks ---------------------------------------------------------------------------------

void storm::check_tasks() {
  u64 vanished = 0, never_ran = 0, reran = 0, reran_ok = 0, lost_yet_ran = 0;
  std::string examples, lost_examples;
  std::vector<u32> died_in = kills_.worker_last_tasks;  // 1 + task id
  std::sort(died_in.begin(), died_in.end());
  for (u64 id = 0; id < submitted_; ++id) {
    const u8 o = outcome_[id].load();
    const u32 runs = ld(runs_[id]);
    if (o == outcome_none) ++vanished;
    // worker_lost says the worker running the task died. If the task started, the worker
    // that started it must have died with it as its latest task; otherwise the task ran
    // (and ended) in a worker other than the one that died.
    if (o == outcome_lost && runs != 0 && kind_[id] != kind_map &&
        !std::binary_search(died_in.begin(), died_in.end(), static_cast<u32>(id + 1))) {
      ++lost_yet_ran;
      if (lost_examples.size() < 200)
        lost_examples += " " + std::to_string(id) + "(" + task_kind_names[kind_[id]] + ", started by pid " +
                         std::to_string(ld(ran_by_[id])) +
                         (killed_workers_.count(ld(ran_by_[id])) != 0 ? ", which the chaos killed)" : ", never killed by the chaos)");
    }
    if (o == outcome_ok && kind_[id] != kind_map && runs == 0) ++never_ran;
    if (runs > 1) {
      ++reran;
      reran_ok += o == outcome_ok;
      if (examples.size() < 200) {
        examples += " " + std::to_string(id) + "(" + task_kind_names[kind_[id]] + ", ran " + std::to_string(runs) +
                    "x, outcome " + std::to_string(o) + ")";
      }
    }
  }
  if (vanished != 0) fail("pool: " + std::to_string(vanished) + " tasks never ended (no result, no error)");
  if (wrong_ != 0) {
    std::string all;
    for (const auto& d : task_details_) all += "\n    " + d;
    fail("pool: " + std::to_string(wrong_.load()) + " tasks ended wrongly:" + all);
  }
  if (settled_twice_ != 0) fail("pool: " + std::to_string(settled_twice_.load()) + " tasks ended twice");
  if (never_ran != 0) fail("pool: " + std::to_string(never_ran) + " tasks completed without running");
  if (lost_ > kills_.workers) {
    fail("pool: " + std::to_string(lost_.load()) + " worker_lost for " + std::to_string(kills_.workers) +
         " workers killed");
  }
  // A worker killed after it published the task in its slot but before its take from the
  // task channel committed: the task fails with worker_lost AND stays in the channel, where
  // another worker takes it and runs it (its result dropped). Both checks below catch it:
  // the task was told lost but ran anyway, or ran twice.
  if (lost_yet_ran != 0) {
    fail("pool: " + std::to_string(lost_yet_ran) +
         " tasks failed with worker_lost, yet ran in a worker other than the one that died:" + lost_examples);
  }
  if (reran != 0) {
    fail("pool: " + std::to_string(reran) + " tasks ran more than once (" + std::to_string(reran_ok) +
         " of them completed ok):" + examples);
  }
  char line[512];
  std::snprintf(
      line, sizeof line,
      "  pool:   %llu tasks submitted: %llu completed right, %llu worker_lost, %llu timeout_error, %llu wrong, "
      "%llu vanished; ran twice %llu\n",
      static_cast<unsigned long long>(submitted_), static_cast<unsigned long long>(ok_.load()),
      static_cast<unsigned long long>(lost_.load()), static_cast<unsigned long long>(timeouts_.load()),
      static_cast<unsigned long long>(wrong_.load()), static_cast<unsigned long long>(vanished),
      static_cast<unsigned long long>(reran));
  report += line;
  for (int k = 0; k < kind_count; ++k) {
    std::snprintf(line, sizeof line, "          %-8s ok %llu, lost %llu, timeout %llu, wrong %llu\n",
                  task_kind_names[k], static_cast<unsigned long long>(by_kind_[k][outcome_ok].load()),
                  static_cast<unsigned long long>(by_kind_[k][outcome_lost].load()),
                  static_cast<unsigned long long>(by_kind_[k][outcome_timeout].load()),
                  static_cast<unsigned long long>(by_kind_[k][outcome_wrong].load()));
    report += line;
  }
  ::testing::Test::RecordProperty("tasks_submitted", std::to_string(submitted_));
  ::testing::Test::RecordProperty("tasks_ok", std::to_string(ok_.load()));
  ::testing::Test::RecordProperty("tasks_worker_lost", std::to_string(lost_.load()));
  ::testing::Test::RecordProperty("tasks_timeout", std::to_string(timeouts_.load()));
}

void storm::check_messages() {
  // The parent takes whatever the consumers left (nothing, if all went well).
  consumer_rec& mine = consumers_[max_incarnations];
  this_consumer = &mine;
  u64 leftovers = 0;
  std::vector<u32> last_seq(max_incarnations, 0);
  for (u32 q = 0; q < queue_count; ++q) {
    while (auto m = queues_[q].try_get()) {
      if (m->id == pill_id) continue;
      ++leftovers;
      mark(mine, max_incarnations + 1, q, *m, last_seq);
    }
    if (queues_[q].qsize() != 0) fail("queue " + std::to_string(q) + ": qsize() is not 0 once nothing can be taken");
  }
  this_consumer = nullptr;
  if (leftovers != 0)
    fail("queues: " + std::to_string(leftovers) + " messages left behind by consumers that had stopped");

  // What the killed consumers were doing.
  struct attribution {
    u32 consumer;
    u64 phase;
  };
  std::unordered_map<u64, attribution> window;  // ids listed by a consumer killed in decoding/decoded/returned
  u64 received = 0, duplicates = 0, corrupt = 0, disorder = 0, misrouted = 0;
  std::string problems;
  for (u32 c = 0; c <= max_incarnations; ++c) {
    consumer_rec& r = consumers_[c];
    if (c < next_consumer_ || c == max_incarnations) {
      received += ld(r.received);
      duplicates += ld(r.duplicates);
      corrupt += ld(r.corrupt);
      disorder += ld(r.disorder);
      misrouted += ld(r.misrouted);
      if (ld(r.duplicates) + ld(r.corrupt) + ld(r.disorder) + ld(r.misrouted) != 0 && problems.size() < 300) {
        problems += " consumer " + std::to_string(c) + " first at id " + std::to_string(ld(r.problem_id)) + ";";
      }
    }
    if (c >= next_consumer_ || ld(r.state) != role_killed) continue;
    const u64 phase = ld(r.phase);
    if (phase < phase_decoding) continue;
    const u64 n = std::min<u64>(ld(r.nids), max_batch);
    for (u64 k = 0; k < n; ++k) window[ld(r.ids[k])] = {c + 1, phase};
  }

  u64 put_returned = 0, delivered = 0, lost_to_consumer_kills = 0, unaccounted = 0, phantom = 0;
  u64 unfinished_delivered = 0, unfinished_lost = 0, not_prefix = 0, redelivered = 0, duplicate_deliveries = 0;
  u64 killed_in_decoding_lost = 0;
  std::string examples;
  const auto example = [&](const std::string& what) {
    if (examples.size() < 600) examples += "\n    " + what;
  };
  for (u32 p = 0; p < next_producer_; ++p) {
    producer_rec& r = producers_[p];
    const u32 last = ld(r.last_returned);
    const u32 attempt = std::max(ld(r.attempt_end), last);
    const bool killed = ld(r.state) == role_killed;
    if (!killed && attempt != last) {
      example("producer " + std::to_string(p) + " ended normally in the middle of a put?");
      ++unaccounted;
    }
    put_returned += last;
    bool gap = false;  // in the unfinished put: a message before this one was not delivered
    for (u32 seq = 1; seq <= r.limit; ++seq) {
      const u64 id = r.base + seq - 1;
      const u32 who = ld(received_by_[id]);
      const auto w = window.find(id);
      const bool attributed = w != window.end() && w->second.phase != phase_decoding;
      if (w != window.end() && who != 0 && who != w->second.consumer) {
        if (w->second.phase == phase_returned) {
          ++duplicate_deliveries;
          example("message " + std::to_string(id) + " was taken by consumer " + std::to_string(w->second.consumer - 1) +
                  " (killed after get returned) and delivered again to consumer " + std::to_string(who - 1));
        } else {
          ++redelivered;
        }
      }
      if (seq <= last) {
        if (who != 0) {
          ++delivered;
        } else if (attributed) {
          ++lost_to_consumer_kills;
        } else {
          ++unaccounted;
          if (w != window.end()) ++killed_in_decoding_lost;
          example("message " + std::to_string(id) + " (producer " + std::to_string(p) + " seq " + std::to_string(seq) +
                  ", queue " + std::to_string(r.queue) + ", put returned) was never received" +
                  (w != window.end() ? " (its consumer was killed while decoding it, inside get)" : ""));
        }
      } else if (seq <= attempt) {
        const bool arrived = who != 0 || attributed;
        if (arrived) {
          ++unfinished_delivered;
          if (gap) {
            ++not_prefix;
            example("message " + std::to_string(id) +
                    " of an unfinished put_many arrived after an earlier one did not");
          }
        } else {
          ++unfinished_lost;
          gap = true;
        }
      } else if (who != 0) {
        ++phantom;
        example("message " + std::to_string(id) + " (producer " + std::to_string(p) + " seq " + std::to_string(seq) +
                ") was received though it was never put");
      }
    }
  }
  if (unaccounted != 0)
    fail("queues: " + std::to_string(unaccounted) + " messages lost without a kill to blame:" + examples);
  if (phantom != 0) fail("queues: " + std::to_string(phantom) + " messages received that were never put:" + examples);
  if (not_prefix != 0)
    fail("queues: " + std::to_string(not_prefix) + " partial batches that were not a prefix:" + examples);
  if (duplicates != 0 || duplicate_deliveries != 0) {
    fail("queues: " + std::to_string(duplicates + duplicate_deliveries) + " messages delivered twice:" + problems +
         examples);
  }
  if (corrupt != 0) fail("queues: " + std::to_string(corrupt) + " messages failed their checksum or size:" + problems);
  if (disorder != 0)
    fail("queues: " + std::to_string(disorder) + " messages out of their producer's order:" + problems);
  if (misrouted != 0)
    fail("queues: " + std::to_string(misrouted) + " messages on the wrong queue or with a bad id:" + problems);

  std::string deaths;
  for (auto& q : queues_) deaths += " " + std::to_string(q.owner_deaths());
  char line[640];
  std::snprintf(line, sizeof line,
                "  queues: %llu messages put (put returned), %llu received; %llu lost to consumers killed after the "
                "commit, %llu redelivered after a consumer was killed inside get; unfinished puts of killed producers: "
                "%llu delivered, %llu not; lost unaccounted %llu, duplicates %llu, corrupt %llu, out of order %llu, "
                "phantom %llu\n          owner_deaths per queue:%s; queue memfds at the end:%s\n",
                static_cast<unsigned long long>(put_returned), static_cast<unsigned long long>(received),
                static_cast<unsigned long long>(lost_to_consumer_kills), static_cast<unsigned long long>(redelivered),
                static_cast<unsigned long long>(unfinished_delivered), static_cast<unsigned long long>(unfinished_lost),
                static_cast<unsigned long long>(unaccounted),
                static_cast<unsigned long long>(duplicates + duplicate_deliveries),
                static_cast<unsigned long long>(corrupt), static_cast<unsigned long long>(disorder),
                static_cast<unsigned long long>(phantom), deaths.c_str(), queue_memory_report().c_str());
  report += line;
  ::testing::Test::RecordProperty("messages_put", std::to_string(put_returned));
  ::testing::Test::RecordProperty("messages_received", std::to_string(received));
  ::testing::Test::RecordProperty("messages_lost_to_consumer_kills", std::to_string(lost_to_consumer_kills));
  ::testing::Test::RecordProperty("messages_unfinished_lost", std::to_string(unfinished_lost));
  ::testing::Test::RecordProperty("messages_redelivered", std::to_string(redelivered));
  (void)killed_in_decoding_lost;
}

void storm::check_locks() {
  for (u32 l = 0; l < lock_count; ++l) {
    guarded& g = l == 0 ? guarded0_.value() : guarded1_.value();
    const auto deaths_of = [&] { return l == 0 ? lock0_.owner_deaths() : guarded1_.owner_deaths(); };
    bool locked = l == 0 ? lock0_.try_lock_for(10s) : guarded1_.get_lock().try_lock_for(10s);
    if (!locked) {
      fail("lock " + std::to_string(l) + ": the parent could not take it within 10 s after every locker ended");
      continue;
    }
    const u64 deaths = deaths_of();
    repair(g, deaths);
    u64 sum = 0, timeouts = 0;
    for (u32 i = 0; i < next_locker_; ++i) {
      if (lockers_[i].lock != l) continue;
      sum += ld(lockers_[i].done);
      timeouts += ld(lockers_[i].lock_timeouts);
    }
    const u64 counter = ld(g.counter);
    if (l == 0) {
      lock0_.unlock();
    } else {
      guarded1_.get_lock().unlock();
    }
    const std::string name = l == 0 ? "mutex" : "recursive_mutex";
    if (counter != sum) {
      fail(name + ": the counter says " + std::to_string(counter) + " critical sections, the lockers " +
           std::to_string(sum));
    }
    if (ld(g.unreported) != 0) {
      fail(name + ": " + std::to_string(ld(g.unreported)) +
           " holders died inside the critical section without owner_deaths() growing");
    }
    if (deaths > kills_.lockers_by_lock[l]) {
      fail(name + ": owner_deaths() " + std::to_string(deaths) + " > " + std::to_string(kills_.lockers_by_lock[l]) +
           " lockers killed");
    }
    if (timeouts != 0) fail(name + ": " + std::to_string(timeouts) + " waits for the lock took more than 20 s");
    char line[320];
    std::snprintf(line, sizeof line,
                  "  %-16s %llu critical sections; %llu holders killed, owner_deaths %llu, journal repairs %llu, "
                  "unreported %llu\n",
                  (name + ":").c_str(), static_cast<unsigned long long>(counter),
                  static_cast<unsigned long long>(kills_.lockers_by_lock[l]), static_cast<unsigned long long>(deaths),
                  static_cast<unsigned long long>(ld(g.repairs)), static_cast<unsigned long long>(ld(g.unreported)));
    report += line;
    ::testing::Test::RecordProperty(name + "_owner_deaths", std::to_string(deaths));
  }
}

void storm::run() {
  watchdog_ = std::make_unique<watchdog>(std::chrono::seconds(static_cast<long long>(seconds_) + 150), [this] {
    std::lock_guard lock(failures_mutex_);
    std::string all;
    for (const auto& f : failures) all += "\n  " + f;
    return all;
  });
  chaos_rng_.seed(seed_);
  st(ctl_.value().hard_deadline_ns, now_ns() + static_cast<u64>((seconds_ + 120) * 1e9));
  const auto began = clock_type::now();
  {
    mproc::pool_options options;
    options.processes = pool_workers;
    options.task_timeout = task_timeout;
    mproc::pool pool(options);
    zygote_ = pool.apply(task_parent_pid);
    storm_end_ = clock_type::now() + std::chrono::milliseconds(static_cast<long long>(seconds_ * 1000));

    std::thread supervisor([this] { supervise(); });
    watchdog_->phase("chaos");
    submit_tasks(pool);
    watchdog_->phase("pool: waiting for the tasks in flight");
    for (std::size_t k = 0; k < task_window; ++k) {
      if (!window_.try_acquire_for(60s)) {
        fail("pool: tasks still in flight 60 s after the storm (hung or vanished)");
        break;
      }
    }
    supervisor.join();  // the chaos is over, every role joined
    // The pool has recovered: all its workers are there again.
    if (!mproc_test::eventually([&] { return children_of(zygote_).size() == pool_workers; }, 10s)) {
      fail("pool: " + std::to_string(children_of(zygote_).size()) + " workers 10 s after the storm, not " +
           std::to_string(pool_workers));
    }
    watchdog_->phase("pool: close and join");
    pool.close();
    pool.join();
    watchdog_->phase("checks");
  }
  const double took = std::chrono::duration<double>(clock_type::now() - began).count();

  char line[512];
  std::snprintf(line, sizeof line, "Kill storm: %.0f s of chaos (seed %llu), %.1f s in all; %llu SIGKILLs\n", seconds_,
                static_cast<unsigned long long>(seed_), took, static_cast<unsigned long long>(kills_.total()));
  report += line;
  std::snprintf(
      line, sizeof line,
      "  kills:  %llu pool workers (%llu missed), %llu producers (%llu inside put), %llu consumers "
      "(idle %llu, in get %llu, decoding %llu, decoded %llu, returned %llu), %llu lock holders (%llu inside "
      "the critical section); %llu targeted\n",
      static_cast<unsigned long long>(kills_.workers), static_cast<unsigned long long>(kills_.worker_attempts_missed),
      static_cast<unsigned long long>(kills_.producers), static_cast<unsigned long long>(kills_.producers_in_put),
      static_cast<unsigned long long>(kills_.consumers), static_cast<unsigned long long>(kills_.consumers_by_phase[0]),
      static_cast<unsigned long long>(kills_.consumers_by_phase[1]),
      static_cast<unsigned long long>(kills_.consumers_by_phase[2]),
      static_cast<unsigned long long>(kills_.consumers_by_phase[3]),
      static_cast<unsigned long long>(kills_.consumers_by_phase[4]), static_cast<unsigned long long>(kills_.lockers),
      static_cast<unsigned long long>(kills_.lockers_in_cs), static_cast<unsigned long long>(kills_.targeted));
  report += line;
  std::snprintf(line, sizeof line,
                "  spawned: %llu producers, %llu consumers, %llu lockers (%llu hung after fork by ASan, replaced); "
                "message ids used %llu of %llu\n",
                static_cast<unsigned long long>(spawned_[0]), static_cast<unsigned long long>(spawned_[1]),
                static_cast<unsigned long long>(spawned_[2]), static_cast<unsigned long long>(asan_fork_hangs_),
                static_cast<unsigned long long>(next_id_),
                static_cast<unsigned long long>(message_capacity_));
  report += line;
  ::testing::Test::RecordProperty("kills_pool_workers", std::to_string(kills_.workers));
  ::testing::Test::RecordProperty("kills_producers", std::to_string(kills_.producers));
  ::testing::Test::RecordProperty("kills_consumers", std::to_string(kills_.consumers));
  ::testing::Test::RecordProperty("kills_lock_holders", std::to_string(kills_.lockers));

  check_tasks();
  check_messages();
  check_locks();

  // The storm must have stormed (unless asked for a token duration).
  if (seconds_ >= 5) {
    if (kills_.workers == 0 || kills_.producers == 0 || kills_.consumers == 0 || kills_.lockers == 0) {
      fail("the chaos missed a kind of victim: see the kill figures");
    }
    if (ok_ == 0 || next_id_ == 0) fail("no task completed or no message was put: the storm did not run");
  }
  watchdog_.reset();
}

TEST(KillStorm, PoolQueuesAndLocksSurviveRandomSigkills) {
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);  // orphans come back to us, to be counted
  {
    // Warm up what mproc makes once per process, so that the baseline counts it.
    mproc::process warm([] {});
    warm.start();
    warm.join();
    mproc::pool p(1);
    EXPECT_EQ(p.apply(task_item, u64{1}), mix(1));
  }
  ASSERT_TRUE(mproc_test::eventually([] { return mproc_test::children_of_self().empty(); }));
  const auto shm_before = mproc_test::dev_shm_entries();
  const int fds_before = mproc_test::count_open_fds();

  const double seconds = storm_seconds();
  const u64 seed = storm_seed();
  std::vector<std::string> failures;
  std::string report;
  {
    auto s = std::make_unique<storm>(seconds, seed);
    s->run();
    failures = s->failures;
    report = s->report;
  }

  // Nothing left behind: every child ended and was reaped, no orphan came back to us.
  const bool no_children = mproc_test::eventually([] { return mproc_test::children_of_self().empty(); }, 10s);
  std::string left;
  for (const auto& [pid, state] : mproc_test::children_of_self()) {
    left += "\n    " + describe_process(pid);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  if (!no_children) failures.push_back("processes left behind:" + left);
  const bool fds_back = mproc_test::eventually([&] { return mproc_test::count_open_fds() == fds_before; }, 5s);
  const int fds_after = mproc_test::count_open_fds();
  if (!fds_back) {
    failures.push_back("open descriptors: " + std::to_string(fds_before) + " before, " + std::to_string(fds_after) +
                       " after");
  }
  const auto shm_after = mproc_test::dev_shm_entries();
  if (shm_after != shm_before) {
    std::string changed;
    for (const auto& e : shm_after) changed += shm_before.count(e) != 0 ? "" : " +" + e;
    for (const auto& e : shm_before) changed += shm_after.count(e) != 0 ? "" : " -" + e;
    failures.push_back("/dev/shm entries changed:" + changed);
  }
  char line[256];
  std::snprintf(line, sizeof line,
                "  after:  %zu children, %d zombies; open fds %d before, %d after; /dev/shm %zu before, %zu after\n",
                mproc_test::children_of_self().size(), mproc_test::count_zombie_children(), fds_before, fds_after,
                shm_before.size(), shm_after.size());
  report += line;

  std::printf("%s", report.c_str());
  std::fflush(stdout);
  for (const auto& f : failures) ADD_FAILURE() << f;
  EXPECT_TRUE(failures.empty()) << failures.size() << " invariants failed (reproduce with MPROC_STRESS_SEED=" << seed
                                << ")";
}

}  // namespace
