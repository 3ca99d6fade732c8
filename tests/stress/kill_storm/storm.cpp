// The run: the pool and its submitter (this thread), the supervisor thread with its chaos,
// the wait for every task in flight, the pool's recovery, then the figures of kills and the
// checks. Also the run's settings from the environment.
#include "kill_storm/storm.hpp"

namespace kill_storm {

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
      "the critical section), %llu dict updaters (%llu inside an update); %llu targeted\n",
      static_cast<unsigned long long>(kills_.workers), static_cast<unsigned long long>(kills_.worker_attempts_missed),
      static_cast<unsigned long long>(kills_.producers), static_cast<unsigned long long>(kills_.producers_in_put),
      static_cast<unsigned long long>(kills_.consumers), static_cast<unsigned long long>(kills_.consumers_by_phase[0]),
      static_cast<unsigned long long>(kills_.consumers_by_phase[1]),
      static_cast<unsigned long long>(kills_.consumers_by_phase[2]),
      static_cast<unsigned long long>(kills_.consumers_by_phase[3]),
      static_cast<unsigned long long>(kills_.consumers_by_phase[4]), static_cast<unsigned long long>(kills_.lockers),
      static_cast<unsigned long long>(kills_.lockers_in_cs), static_cast<unsigned long long>(kills_.dict_updaters),
      static_cast<unsigned long long>(kills_.dict_in_update), static_cast<unsigned long long>(kills_.targeted));
  report += line;
  std::snprintf(line, sizeof line,
                "  spawned: %llu producers, %llu consumers, %llu lockers, %llu dict updaters (%llu hung after fork "
                "by ASan, replaced); message ids used %llu of %llu\n",
                static_cast<unsigned long long>(spawned_[0]), static_cast<unsigned long long>(spawned_[1]),
                static_cast<unsigned long long>(spawned_[2]), static_cast<unsigned long long>(spawned_[3]),
                static_cast<unsigned long long>(asan_fork_hangs_), static_cast<unsigned long long>(next_id_),
                static_cast<unsigned long long>(message_capacity_));
  report += line;
  ::testing::Test::RecordProperty("kills_pool_workers", std::to_string(kills_.workers));
  ::testing::Test::RecordProperty("kills_producers", std::to_string(kills_.producers));
  ::testing::Test::RecordProperty("kills_consumers", std::to_string(kills_.consumers));
  ::testing::Test::RecordProperty("kills_lock_holders", std::to_string(kills_.lockers));
  ::testing::Test::RecordProperty("kills_dict_updaters", std::to_string(kills_.dict_updaters));

  check_tasks();
  check_messages();
  check_locks();
  check_dict();

  // The storm must have stormed (unless asked for a token duration).
  if (seconds_ >= 5) {
    if (kills_.workers == 0 || kills_.producers == 0 || kills_.consumers == 0 || kills_.lockers == 0 ||
        kills_.dict_updaters == 0) {
      fail("the chaos missed a kind of victim: see the kill figures");
    }
    if (ok_ == 0 || next_id_ == 0) fail("no task completed or no message was put: the storm did not run");
  }
  watchdog_.reset();
}

}  // namespace kill_storm
