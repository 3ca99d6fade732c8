// Role: pool worker. The tasks the pool's workers run, each recording in shared memory that
// it started (note_run), so that check_tasks.cpp can tell a task that ran twice, or that
// was reported lost yet ran in another worker.
#include <unistd.h>

#include "kill_storm/storm.hpp"

namespace kill_storm {

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

}  // namespace kill_storm
