// Kill storm: a pool, three queues, two locks and a shared dict under load while a chaos
// thread SIGKILLs random pool workers, queue producers, queue consumers, lock holders and
// dict updaters for a fixed time; then every task, message, increment and update is
// accounted for.
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
// Dict. Each updater incarnation loops: attempts += 1, then update(counter, +1), then
// update(its own list, append its length), now and then a set or erase of a scratch key
// with a value of up to 160 KB (n copies of n), then done += 1. At the end, read by the
// parent (a bounded wait: a dict left locked fails the check, it does not hang): the
// counter lies within [sum of done, sum of attempts], each list is 0, 1, 2, ... with its
// length within [done, attempts] of its incarnation, every scratch value is whole, and
// size() agrees with items().
//
// Afterwards: no child, no zombie, no orphan (the test is a subreaper, so orphaned
// grandchildren would come back to it), the open descriptors and /dev/shm as before.
//
// The files of this folder, one per role and per check (storm.hpp holds the harness they
// share: the storm's shape, the books, the messages, the storm class):
//   kill_storm_test.cpp     the TEST: baseline, the storm, the checks, the figures printed
//   storm.cpp               the run: the pool, the supervisor thread, the figures of kills
//   chaos.cpp               the kill schedule: which victim, when, how it is killed
//   supervisor.cpp          the roles' lives: spawn, book an end, replace the stuck, shut down
//   producer.cpp            role: queue producer
//   consumer.cpp            role: queue consumer, and the marking of each message it takes
//   locker.cpp              role: lock holder, its critical section and the journal's repair
//   dict_updater.cpp        role: shared dict updater
//   pool_tasks.cpp          role: pool worker (the tasks the workers run)
//   pool_submitter.cpp      role: the main thread, submitting tasks and settling outcomes
//   check_tasks.cpp         check: every task ended exactly once, and rightly
//   check_messages.cpp      check: every message delivered once, or its loss attributed
//   check_locks.cpp         check: every critical section counted, every death reported
//   check_dict.cpp          check: every dict update whole or absent, the dict readable
//   check_nothing_left.cpp  check: no child, zombie, descriptor or /dev/shm entry left
//   messages.cpp            message payloads and checksums
//   proc.hpp, proc.cpp      /proc readings for diagnoses
//   watchdog.hpp            aborts with a diagnosis when the storm hangs
#pragma once

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
#include <optional>
#include <random>
#include <semaphore>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "kill_storm/proc.hpp"
#include "kill_storm/watchdog.hpp"
#include "mproc/mproc.hpp"
#include "test_support.hpp"

#ifndef MPROC_STRESS_DEFAULT_SECONDS
#define MPROC_STRESS_DEFAULT_SECONDS 20
#endif

namespace kill_storm {

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

constexpr u32 dict_updaters = 2;

constexpr std::size_t max_batch = 16;
constexpr u32 max_incarnations = 4096;  // of each role
// Message ids, handed out to producer incarnations in blocks of messages_per_producer (a
// killed producer wastes the rest of its block): a storm uses ~115 k a second, so a long
// run sized for 20 s would run out and spend its end with no producer.
inline u64 message_capacity_for(double seconds) {
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

inline u64 mix(u64 x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

inline u64 now_ns() {
  return static_cast<u64>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch()).count());
}

inline void cpu_relax(unsigned n) {
  for (unsigned i = 0; i < n; ++i) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
  }
}

// --- messages (messages.cpp) ------------------------------------------------------------------

// The size of message `id`'s payload on `queue`: 1 B to 256 KiB (queue 2: up to 160 B).
std::size_t payload_size(u32 queue, u64 id);
u64 checksum(u64 id, const u8* data, std::size_t n);
// Fills `out` with the `n` bytes of message `id`'s payload.
void fill_payload(u64 id, std::vector<u8>& out, std::size_t n);

enum phase_value : u64 { phase_idle = 0, phase_in_get, phase_decoding, phase_decoded, phase_returned };
inline constexpr const char* phase_names[] = {"idle", "in_get", "decoding", "decoded", "returned"};

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
inline consumer_rec* this_consumer = nullptr;

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

inline storm_message pill() {
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

struct dict_rec {
  u32 state;
  u32 in_update;  // 1 from before its first update to after its last, each iteration
  u64 attempts;   // iterations begun
  u64 done;       // iterations whose updates all returned
};

// The dict's keys: the counter, each incarnation's list (its record number), scratch keys.
constexpr u64 dict_counter_key = ~u64{0};
constexpr u64 dict_scratch_base = u64{1} << 40;
constexpr u64 dict_scratch_keys = 8;

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
  u64 dict_stop;
  u64 hard_deadline_ns;  // children give up by then whatever happens
};

// --- pool tasks (pool_tasks.cpp) -----------------------------------------------------------
// Workers inherit this pointer (and the mapping) from the parent through the zygote.

inline u32* task_runs = nullptr;    // [task id]: how many times it started
inline u32* task_ran_by = nullptr;  // [task id]: the pid of the worker that last started it
inline u32* latest_task = nullptr;  // [worker pid]: 1 + the id of the last task it started
inline std::size_t latest_task_size = 0;

// Records, in the books above, that task `id` started in this worker.
void note_run(u64 id);
u64 compute_value(u64 id, u32 rounds);
u64 task_compute(u64 id, u32 rounds);
std::vector<u8> task_echo(u64 id, std::vector<u8> data);
u64 task_throw(u64 id);
u64 task_hang(u64 id);
u64 task_item(u64 x);
int task_parent_pid();

enum task_kind : u8 { kind_compute, kind_echo, kind_throw, kind_map, kind_hang, kind_count };
inline constexpr const char* task_kind_names[] = {"compute", "echo", "throw", "map", "hang"};
enum task_outcome : u8 { outcome_none = 0, outcome_ok, outcome_lost, outcome_timeout, outcome_wrong };

// --- the run's settings (storm.cpp) -----------------------------------------------------------

// MPROC_STRESS_SECONDS from the environment, else the default CMake baked in.
double storm_seconds();
// MPROC_STRESS_SEED from the environment, else the clock.
u64 storm_seed();

// After the storm (check_nothing_left.cpp): every child ended and was reaped, no orphan
// came back to the test (a subreaper), the open descriptors and /dev/shm are as they were
// before. Adds what is not to `failures`, and the figures to `report`.
void check_nothing_left(const std::set<std::string>& shm_before, int fds_before, std::vector<std::string>& failures,
                        std::string& report);

// --- the storm -----------------------------------------------------------------------------

enum class role_kind { producer, consumer, locker, dict_updater };

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
  u64 dict_updaters = 0, dict_in_update = 0;
  u64 targeted = 0;
  u64 total() const { return workers + producers + consumers + lockers + dict_updaters; }
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
        latest_(pid_limit()),
        dict_recs_(max_incarnations) {
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
  // the roles in child processes (producer.cpp, consumer.cpp, locker.cpp)
  void producer_main(u32 p);
  void consumer_main(u32 c);
  void locker_main(u32 i);
  void dict_updater_main(u32 i);
  void mark(consumer_rec& r, u32 me, u32 queue, const storm_message& m, std::vector<u32>& last_seq);
  void critical_section(guarded& g, u64 deaths, u32 i, std::mt19937_64& rng);
  void repair(guarded& g, u64 deaths);
  bool past_hard_deadline() { return now_ns() > ld(ctl_.value().hard_deadline_ns); }

  // supervisor (the kill schedule in chaos.cpp, the roles' lives in supervisor.cpp)
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

  // pool (pool_submitter.cpp)
  void submit_tasks(mproc::pool& pool);
  void settle(u64 id, task_outcome outcome, const std::string& detail);
  task_outcome classify(std::exception_ptr e, u64 id, std::string& detail);

  // checks (check_tasks.cpp, check_messages.cpp, check_locks.cpp)
  void check_tasks();
  void check_messages();
  void check_locks();
  void check_dict();
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
  mproc::shared_dict<u64, std::vector<u64>> dict_;
  mproc::shared_array<dict_rec> dict_recs_;

  std::mutex failures_mutex_;
  std::unique_ptr<watchdog> watchdog_;

  // supervisor state (its thread only, read by the checks after it ended)
  std::vector<role> roles_;
  u32 next_producer_ = 0, next_consumer_ = 0, next_locker_ = 0, next_dict_updater_ = 0;
  u64 next_id_ = 0;
  u64 spawned_[4] = {};
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

}  // namespace kill_storm
