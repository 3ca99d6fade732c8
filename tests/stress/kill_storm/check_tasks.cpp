// Check: every pool task ended exactly once, completed rightly or failed with worker_lost
// (exit code -SIGKILL) or timeout_error; none vanished, ran twice, or was reported lost
// while it ran in another worker than the one that died; worker_lost <= workers killed.
#include "kill_storm/storm.hpp"

namespace kill_storm {

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
                         (killed_workers_.count(ld(ran_by_[id])) != 0 ? ", which the chaos killed)"
                                                                      : ", never killed by the chaos)");
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

}  // namespace kill_storm
