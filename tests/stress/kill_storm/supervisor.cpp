// The supervisor's bookkeeping of the roles' lives: starting a child for a role (spawn),
// booking its end (retire), replacing children that ended by themselves, stuck after their
// fork or (under ASan) hung in the sanitizer's allocator, and the shutdown: producers stop,
// lockers and dict updaters stop, the queues drain, one pill per consumer.
#include <signal.h>

#include "kill_storm/storm.hpp"

namespace kill_storm {

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
    case role_kind::dict_updater: {
      if (next_dict_updater_ >= max_incarnations) return;
      rec = next_dict_updater_++;
      st(dict_recs_[rec].state, role_starting);
      body = [this, rec] {
        st(dict_recs_[rec].state, role_running);
        dict_updater_main(rec);
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

namespace {

u32* state_of(role& r, mproc::shared_array<producer_rec>& p, mproc::shared_array<consumer_rec>& c,
              mproc::shared_array<locker_rec>& l, mproc::shared_array<dict_rec>& d) {
  switch (r.kind) {
    case role_kind::producer:
      return &p[r.rec].state;
    case role_kind::consumer:
      return &c[r.rec].state;
    case role_kind::locker:
      return &l[r.rec].state;
    case role_kind::dict_updater:
      return &d[r.rec].state;
  }
  return nullptr;
}

}  // namespace

// The child has ended (joined): book it.
void storm::retire(role& r, bool by_chaos) {
  const int code = r.proc->exitcode().value_or(-1000);
  u32* state = state_of(r, producers_, consumers_, lockers_, dict_recs_);
  const char* names[] = {"producer", "consumer", "locker", "dict updater"};
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
  if (ld(*state_of(r, producers_, consumers_, lockers_, dict_recs_)) != role_starting ||
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
    out += r.proc
               ? describe_process(r.proc->pid().value_or(0)) + ", phase " + std::to_string(ld(consumers_[r.rec].phase))
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
           std::to_string(r.group) + ") still running " + std::to_string(limit.count()) +
           " s after it was told to stop: " + describe_process(r.proc->pid().value_or(0)) +
           (kind == role_kind::producer ? describe_queue(r.group) : std::string()));
      r.proc->kill();
      r.proc->join();
      st(*state_of(r, producers_, consumers_, lockers_, dict_recs_), role_failed);
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

  watchdog_->phase("dict updaters stopping");
  st(ctl.dict_stop, 1);
  join_all(role_kind::dict_updater, 30s, "dict updater");

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

}  // namespace kill_storm
