// The kill schedule: every 2 to 25 ms the supervisor kills one victim, a pool worker (12%),
// a producer (20%), a consumer (32%), a lock holder (26%) or a dict updater (10%); half the
// kills of the latter four wait briefly for the victim to be inside the window that matters
// (a put, a decoding get, a critical section, an update). Each child killed is booked and
// replaced.
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kill_storm/storm.hpp"

namespace kill_storm {

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
        case role_kind::dict_updater:
          inside = ld(dict_recs_[r.rec].in_update) != 0;
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
    case role_kind::dict_updater:
      ++kills_.dict_updaters;
      kills_.dict_in_update += ld(dict_recs_[r.rec].in_update) != 0;
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

void storm::supervise() {
  try {
    for (u32 q = 0; q < queue_count; ++q) {
      for (u32 k = 0; k < producers_per_queue; ++k) roles_.push_back({role_kind::producer, q, 0, nullptr});
      for (u32 k = 0; k < consumers_per_queue; ++k) roles_.push_back({role_kind::consumer, q, 0, nullptr});
    }
    for (u32 l = 0; l < lock_count; ++l) {
      for (u32 k = 0; k < lockers_per_lock[l]; ++k) roles_.push_back({role_kind::locker, l, 0, nullptr});
    }
    for (u32 k = 0; k < dict_updaters; ++k) roles_.push_back({role_kind::dict_updater, 0, 0, nullptr});
    for (role& r : roles_) spawn(r);

    while (clock_type::now() < storm_end_) {
      std::this_thread::sleep_for(std::chrono::microseconds(2000 + chaos_rng_() % 23000));
      service_exits();
      const u64 pick = chaos_rng_() % 100;
      role_kind kind;
      if (pick < 12) {
        kill_pool_worker();
        continue;
      } else if (pick < 32) {
        kind = role_kind::producer;
      } else if (pick < 64) {
        kind = role_kind::consumer;
      } else if (pick < 90) {
        kind = role_kind::locker;
      } else {
        kind = role_kind::dict_updater;
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

}  // namespace kill_storm
